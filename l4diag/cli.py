"""The click layer: each command parses its options and calls a plain function returning an exit code."""

from __future__ import annotations

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


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="l4diag")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
