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


@cli.command("synth")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--fault", help="A fault category (hardware, network, storage, checkpoint_load, oom, software, hang, divergence) or 'healthy'.")
@click.option("--nodes", type=int, default=8, show_default=True, help="Number of nodes (ranks for --layout combined-rank).")
@click.option("--framework", type=click.Choice(["megatron", "deepspeed", "hf", "torchtitan"]), default="megatron", show_default=True)
@click.option("--layout", default="dir-per-node", show_default=True,
              help="dir-per-node, file-per-node, torchrun, combined-host, combined-rank, file-per-node-gz|bz2|xz, tar.gz, zip.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--stage", type=click.Choice(["init", "checkpoint_load", "train", "checkpoint_save"]), help="Stage the fault happens in.")
@click.option("--suite", is_flag=True, help="Write a whole labelled set OUTDIR/<run>/{logs,truth.json}.")
@click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True, help="Suite size.")
@click.option("--excerpts", type=click.Path(file_okay=False), help="A real_excerpts directory: add one scenario per excerpt file.")
def synth_command(outdir: str, **options) -> None:
    """Write labelled synthetic training runs for evaluation."""
    from .commands.synth import run_synth

    sys.exit(run_synth(outdir, **options))


@cli.command("eval")
@click.argument("directory", type=click.Path())
@click.option("--baseline", "method_baseline", type=click.Choice(["grep"]), help="Score a baseline instead of l4diag: grep = what engineers do today.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every per-run row and the aggregates to FILE.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs to diagnose in parallel.")
@click.option("--healthy-baseline", type=click.Path(), help="A learned healthy-run baseline to pass to the diagnosis.")
def eval_command(directory: str, method_baseline: str | None, json_out: str | None, jobs: int, healthy_baseline: str | None) -> None:
    """Score the diagnosis on every labelled run (truth.json) under DIRECTORY."""
    from .commands.eval import run_eval

    sys.exit(run_eval(directory, baseline=method_baseline, json_out=json_out, jobs=jobs, healthy_baseline=healthy_baseline))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="l4diag")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
