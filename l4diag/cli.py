"""The click layer: each command parses its options and calls a plain function returning an exit code."""

from __future__ import annotations

import gc
import sys

import click

from . import __version__
from .report import FORMATS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="l4diag")
def cli() -> None:
    """Diagnose failed distributed training runs from their logs.

    Reads every node's logs and says what kind of fault, on which node, in which
    stage, at which iteration, and which lines prove it.
    """


class ByteSize(click.ParamType):
    """A byte count: ``1048576``, ``512K``, ``64M``, ``20G``, ``1T`` (powers of 1024); ``0`` means no cap."""

    name = "SIZE"
    UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        number, unit = text, ""
        if text and text[-1] in self.UNITS:
            number, unit = text[:-1], text[-1]
        try:
            size = int(float(number) * self.UNITS[unit])
        except (ValueError, OverflowError):
            self.fail(f"{value!r} is not a size (e.g. 1048576, 512K, 64M, 20G)", param, ctx)
        if size < 0:
            self.fail("a size cannot be negative", param, ctx)
        return size


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report to FILE.")
@click.option("--fail-on", type=click.Choice(["failure", "inconclusive", "never"]), default="failure",
              show_default=True, help="Exit 1 when the verdict is at or above this level.")
@click.option("--baseline", type=click.Path(dir_okay=False), help="Baseline of healthy runs (from `l4diag learn`).")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes for reading (0: all cores).")
@click.option("--node-regex", help="Regex naming the node of each stream: matched on the path; group 'node' or 1.")
@click.option("--rules", "rule_files", multiple=True, type=click.Path(dir_okay=False),
              help="Extra rule file (TOML, named <kind>.toml); may be repeated.")
@click.option("--max-line-bytes", type=int, default=1 << 20, show_default=True,
              help="Truncate longer lines (counted in the report).")
@click.option("--max-decompressed-bytes", type=ByteSize(), default="4G", show_default=True,
              help="Stop reading a compressed file or archive member past this many decompressed bytes "
                   "(decompression-bomb guard; warned and counted; 0: no cap).")
@click.option("--max-total-decompressed-bytes", type=ByteSize(), default="20G", show_default=True,
              help="Stop reading an archive past this many decompressed bytes in all (0: no cap).")
@click.option("--follow-symlinks", is_flag=True,
              help="Follow symlinks that lead outside an input directory (default: skipped and counted).")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Templates to report.")
@click.option("--explain", is_flag=True, help="Show which scorers contributed what.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--color/--no-color", default=None, help="Force colour on or off (default: on a terminal).")
def diagnose(paths, fmt, output, fail_on, baseline, jobs, node_regex, rule_files, max_line_bytes,
             max_decompressed_bytes, max_total_decompressed_bytes, follow_symlinks, top, explain, quiet,
             color) -> None:
    """Diagnose a run: PATHS are run directories, log files, compressed files, archives, globs or - (stdin).

    Exit codes: 0 nothing at or above --fail-on, 1 failure diagnosed, 2 usage or input error, 130 interrupted.
    """
    from .commands.diagnose import DiagnoseArgs, run

    sys.exit(run(DiagnoseArgs(list(paths), fmt, output, fail_on, jobs, node_regex, baseline, list(rule_files),
                              max_line_bytes, top, explain, quiet, color,
                              max_decompressed_bytes=max_decompressed_bytes or None,
                              max_total_decompressed_bytes=max_total_decompressed_bytes or None,
                              follow_symlinks=follow_symlinks)))


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Baseline file to write.")
@click.option("--update", is_flag=True, help="Add the runs to an existing baseline file instead of replacing it.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True, help="Worker processes.")
@click.option("--node-regex", help="Regex naming the node of each stream (as for diagnose).")
@click.option("--rules", "rule_files", multiple=True, type=click.Path(dir_okay=False), help="Extra rule file.")
def learn(runs, output, update, jobs, node_regex, rule_files) -> None:
    """Learn a baseline of templates from healthy RUNS (one path per run) for `diagnose --baseline`."""
    from .commands.learn import LearnArgs, run

    sys.exit(run(LearnArgs(list(runs), output, update, jobs, node_regex, list(rule_files))))


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
    try:
        cli(prog_name="l4diag")
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # The process ends now. Frozen objects are left out of the collection at exit, which
        # otherwise frees every module's objects one by one (~0.1 s of CPU with numpy and pyarrow
        # loaded); files are closed and streams flushed by then, the OS reclaims the rest.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
