"""l4diag diagnose: read a run's logs and report the failure."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import regex

from ..pipeline import RunOptions, run_diagnosis
from ..report import preload, render
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, error_handler

FAIL_ON = ("failure", "inconclusive", "never")


@dataclass
class DiagnoseArgs:
    paths: list
    fmt: str = "text"
    output: str | None = None
    fail_on: str = "failure"
    jobs: int = 0
    node_regex: str | None = None
    baseline: str | None = None
    rule_files: list = field(default_factory=list)
    max_line_bytes: int = 1 << 20
    top: int = 20
    explain: bool = False
    quiet: bool = False
    color: bool | None = None
    max_decompressed_bytes: int | None = 4 << 30
    max_total_decompressed_bytes: int | None = 20 << 30
    follow_symlinks: bool = False


def exit_code_for(verdict: str, fail_on: str) -> int:
    """0 when nothing at or above --fail-on was found, else 1."""
    if fail_on == "never":
        return EXIT_OK
    if verdict == "failure":
        return EXIT_FAILURE
    if verdict == "inconclusive" and fail_on == "inconclusive":
        return EXIT_FAILURE
    return EXIT_OK


def _validate(args: DiagnoseArgs) -> None:
    if not args.paths:
        raise UsageError("no input: give one or more paths, or - for stdin")
    if args.node_regex:
        try:
            regex.compile(args.node_regex)
        except regex.error as exc:
            raise UsageError(f"--node-regex is not a valid regular expression: {exc}") from exc
    if args.max_line_bytes < 64:
        raise UsageError("--max-line-bytes must be at least 64")


def run(args: DiagnoseArgs) -> int:
    codes: list = []
    with error_handler(codes):
        _validate(args)
        progress = None if args.quiet or not sys.stderr.isatty() else _make_progress()
        options = RunOptions(
            jobs=args.jobs, node_regex=args.node_regex, max_line_bytes=args.max_line_bytes,
            rule_files=list(args.rule_files), baseline=args.baseline, top=args.top,
            max_decompressed_bytes=args.max_decompressed_bytes,
            max_total_decompressed_bytes=args.max_total_decompressed_bytes,
            follow_symlinks=args.follow_symlinks,
            progress=progress.update if progress else None,
        )
        try:
            diagnosis = run_diagnosis(list(args.paths), options, while_mapping=lambda: preload(args.fmt))
        finally:
            if progress:
                progress.close()
        color = args.color if args.color is not None else (args.output is None and sys.stdout.isatty())
        text = render(diagnosis, args.fmt, explain=args.explain, color=bool(color and args.fmt == "text"))
        _write(text, args.output)
        codes.append(exit_code_for(diagnosis.verdict, args.fail_on))
    return codes[0] if codes else EXIT_USAGE


def _write(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc


class _make_progress:
    """A rich progress bar on stderr, shown only on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(),
                                  console=Console(stderr=True), transient=True)
        self._task = None
        self._progress.start()

    def update(self, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("streams", total=total)
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()


__all__ = ["DiagnoseArgs", "EXIT_USAGE", "run", "exit_code_for"]
