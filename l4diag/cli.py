"""The click layer: each command parses its options and calls a plain function returning an exit code."""

from __future__ import annotations

import sys

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="l4diag")
def cli() -> None:
    """Diagnose failed distributed training runs from their logs.

    Reads every node's logs and says what kind of fault, on which node, in which
    stage, at which iteration, and which lines prove it.
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="l4diag")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
