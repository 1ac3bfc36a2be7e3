"""l4diag learn: build or update a baseline from healthy runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .. import baseline as baseline_mod
from ..pipeline import RunOptions, learn_baseline
from .errors import EXIT_OK, EXIT_USAGE, UsageError, error_handler


@dataclass
class LearnArgs:
    runs: list
    output: str
    update: bool = False
    jobs: int = 0
    node_regex: str | None = None
    rule_files: list = field(default_factory=list)


def run(args: LearnArgs) -> int:
    codes: list = []
    with error_handler(codes):
        if not args.runs:
            raise UsageError("give at least one healthy run")
        options = RunOptions(jobs=args.jobs, node_regex=args.node_regex, rule_files=list(args.rule_files))
        existing = args.output if args.update else None
        base = learn_baseline(list(args.runs), options, existing)
        try:
            baseline_mod.save(base, args.output)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"baseline {args.output}: {base.runs} runs, {len(base.keys)} keys, {len(base.templates)} templates",
              file=sys.stderr)
        codes.append(EXIT_OK)
    return codes[0] if codes else EXIT_USAGE
