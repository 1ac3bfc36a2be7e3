"""Independent scorers, each a small module with one job and a one-sentence explanation per score."""
