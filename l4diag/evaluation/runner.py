"""Find labelled runs, diagnose each (l4diag or the grep baseline), score, time."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .baseline import grep_report
from .scoring import score_run


class EvalError(ValueError):
    """Eval cannot run with these inputs (usage error)."""


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` holding a truth.json and a logs/ directory, sorted."""
    runs = sorted(p.parent for p in Path(root).rglob("truth.json"))
    return [r for r in runs if (r / "logs").exists()]


def diagnose_run(run: Path, method: str, baseline: str | None = None) -> dict:
    """The report for one run: ``method`` is ``l4diag`` or ``grep``."""
    logs = run / "logs"
    if method == "grep":
        return grep_report(logs)
    from ..api import diagnose_paths  # lazy: the scoring tests must not need the diagnoser

    return diagnose_paths([str(logs)], baseline=baseline, jobs=1)


def evaluate_run(run: Path, method: str, baseline: str | None = None) -> dict:
    """Score one run; a diagnosis that raises is an error row, scored as a wrong answer."""
    truth = json.loads((run / "truth.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    error = None
    try:
        report = diagnose_run(run, method, baseline)
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the evaluation
        report, error = {"verdict": "error", "diagnosis": None, "nodes": []}, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    row = {"run": run.name, **score_run(truth, report), "seconds": seconds}
    if error:
        row["error"] = error
    return row


def evaluate(root: Path, method: str = "l4diag", baseline: str | None = None, jobs: int = 1) -> list[dict]:
    runs = find_runs(root)
    if not runs:
        raise EvalError(f"no truth.json with a logs/ directory under {root}")
    if jobs <= 1:
        return [evaluate_run(r, method, baseline) for r in runs]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(evaluate_run, runs, [method] * len(runs), [baseline] * len(runs), chunksize=4))
