"""l4diag eval: scoring on hand-made reports, aggregates, the grep baseline, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from l4diag.cli import cli
from l4diag.evaluation import aggregate, score_run
from l4diag.evaluation.baseline import categorize, grep_report, read_streams
from l4diag.evaluation.runner import evaluate, find_runs
from l4diag.evaluation.scoring import aggregate_by_source, iteration_ok, line_matches
from l4diag.synth import RunSpec, build_run, write_run

TRUTH = {
    "verdict": "failure", "category": "oom", "subcategory": "cuda_oom", "node": "gpu-node-03", "stage": "train",
    "iteration": 1200, "log_interval": 10, "source": "synthetic",
    "evidence": ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."],
}
HEALTHY = {"verdict": "healthy", "category": None, "node": None, "stage": None, "iteration": None,
           "log_interval": 10, "source": "synthetic", "evidence": []}


def report(node: str = "gpu-node-03", category: str = "oom", stage: str = "train", iteration: int | None = 1195,
           evidence: list[str] | None = None, others: tuple[str, ...] = ("gpu-node-01", "gpu-node-02"),
           verdict: str = "failure") -> dict:
    texts = evidence if evidence is not None else ["gpu-node-03: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."]
    nodes = [{"node": n, "score": 1.0, "role": "normal", "lines": 10, "last_iteration": None} for n in (node, *others)]
    diag = {"category": category, "confidence": 0.9, "summary": "", "node": node, "stage": stage, "iteration": iteration,
            "evidence": [{"node": node, "file": "f", "line": i + 1, "text": t} for i, t in enumerate(texts)]}
    return {"verdict": verdict, "diagnosis": diag if verdict == "failure" else None, "nodes": nodes, "templates": []}


def test_right_answer_counts_everywhere() -> None:
    row = score_run(TRUTH, report())
    for key in ("verdict_ok", "category_ok", "node_top1", "node_top3", "stage_ok", "iteration_ok", "evidence_hit5"):
        assert row[key] is True, key
    assert row["evidence_p5"] == 1.0
    assert (row["event_tp"], row["event_fp"], row["event_fn"]) == (1, 0, 0)


def test_wrong_node_and_category_do_not_count() -> None:
    row = score_run(TRUTH, report(node="gpu-node-01", category="network", others=("gpu-node-03", "gpu-node-02")))
    assert row["category_ok"] is False and row["node_top1"] is False
    assert row["node_top3"] is True  # second in the ranking
    row = score_run(TRUTH, report(node="gpu-node-01", others=("gpu-node-02", "gpu-node-04", "gpu-node-03")))
    assert row["node_top3"] is False


def test_iteration_tolerance_and_nulls() -> None:
    assert iteration_ok(1190, 1200, 10) and not iteration_ok(1189, 1200, 10)
    assert iteration_ok(None, None, 10) and not iteration_ok(None, 5, 10) and not iteration_ok(5, None, 10)
    assert score_run(TRUTH, report(iteration=1250))["iteration_ok"] is False


def test_evidence_matching_by_substring_and_precision() -> None:
    assert line_matches("[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", TRUTH["evidence"][0])
    assert line_matches("  torch.OutOfMemoryError:   CUDA out of memory.", TRUTH["evidence"][0])  # stripped, shorter
    assert not line_matches("OOM", TRUTH["evidence"][0])
    row = score_run(TRUTH, report(evidence=["Watchdog caught collective operation timeout", "Traceback (most recent call last):",
                                            "x", "y", "z", TRUTH["evidence"][0]]))
    assert row["evidence_hit5"] is False and row["evidence_p5"] == 0.0  # the right line is sixth
    assert (row["event_tp"], row["event_fp"], row["event_fn"]) == (1, 5, 0)


def test_healthy_runs_and_false_alarms() -> None:
    ok = score_run(HEALTHY, {"verdict": "healthy", "diagnosis": None, "nodes": []})
    assert ok["verdict_ok"] and not ok["false_alarm"] and ok["category_ok"] is None
    inconclusive = score_run(HEALTHY, {"verdict": "inconclusive", "diagnosis": None, "nodes": []})
    assert inconclusive["verdict_ok"] and not inconclusive["false_alarm"]
    alarm = score_run(HEALTHY, report())
    assert alarm["false_alarm"] and not alarm["verdict_ok"] and alarm["event_fp"] == 1
    missed = score_run(TRUTH, {"verdict": "healthy", "diagnosis": None, "nodes": []})
    assert not missed["verdict_ok"] and missed["node_top1"] is False and missed["event_fn"] == 1


def test_silent_hang_has_no_evidence_score() -> None:
    truth = {**TRUTH, "category": "hang", "evidence": []}
    row = score_run(truth, report(category="hang"))
    assert row["evidence_hit5"] is None and row["evidence_p5"] is None


def test_aggregate() -> None:
    rows = [score_run(TRUTH, report()), score_run(TRUTH, report(node="gpu-node-01", category="network")),
            score_run(HEALTHY, report()), score_run({**HEALTHY, "source": "real_excerpt"}, {"verdict": "healthy", "nodes": []})]
    agg = aggregate(rows)
    assert agg["runs"] == 4 and agg["failed_runs"] == 2 and agg["healthy_runs"] == 2
    assert agg["category_accuracy"] == 0.5 and agg["node_top1"] == 0.5 and agg["false_alarm_rate"] == 0.5
    assert agg["event_tp"] == 2 and agg["event_fp"] == 1 and agg["event_fn"] == 0
    assert agg["event_precision"] == pytest.approx(2 / 3) and agg["event_recall"] == 1.0
    assert agg["event_f1"] == pytest.approx(0.8)
    assert agg["by_category"]["oom"]["runs"] == 2
    assert set(aggregate_by_source(rows)) == {"synthetic", "real_excerpt", "overall"}


def test_categorize_keywords() -> None:
    assert categorize(["NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."]) == "hardware"
    assert categorize(["OSError: [Errno 28] No space left on device"]) == "storage"
    assert categorize(["KeyError: 'input_ids'"]) == "software"
    assert categorize([]) == "unknown"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for i, (fault, layout) in enumerate([("software", "file-per-node"), ("healthy", "combined-host"), ("storage", "zip")]):
        sim, truth = build_run(RunSpec(fault, 4, "megatron", layout, i))
        write_run(sim, truth, root / f"{i:02d}-{fault}")
    return root


def test_grep_baseline_on_tiny_run(tiny_runs: Path) -> None:
    truth = json.loads((tiny_runs / "00-software" / "truth.json").read_text())
    rep = grep_report(tiny_runs / "00-software" / "logs")
    assert rep["verdict"] == "failure"
    assert {n["node"] for n in rep["nodes"]} == set(truth["node_ids"])
    assert 1 <= len(rep["diagnosis"]["evidence"]) <= 5
    assert rep["diagnosis"]["stage"] == "train" and rep["diagnosis"]["iteration"] is None
    assert set(read_streams(tiny_runs / "02-storage" / "logs")) == set(
        json.loads((tiny_runs / "02-storage" / "truth.json").read_text())["node_ids"])


def test_evaluate_grep(tiny_runs: Path) -> None:
    assert [p.name for p in find_runs(tiny_runs)] == ["00-software", "01-healthy", "02-storage"]
    rows = evaluate(tiny_runs, method="grep")
    assert len(rows) == 3 and all("seconds" in r and "error" not in r for r in rows)


def test_cli_eval(tiny_runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["eval", "--help"]).exit_code == 0
    out = tmp_path / "eval.json"
    res = runner.invoke(cli, ["eval", str(tiny_runs), "--baseline", "grep", "--json", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert payload["method"] == "grep" and len(payload["runs"]) == 3
    assert payload["aggregate"]["overall"]["runs"] == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(cli, ["eval", str(empty)]).exit_code == 2
    assert runner.invoke(cli, ["eval", str(tmp_path / "missing")]).exit_code == 2


def test_eval_without_api_is_an_error_row(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A diagnosis that raises is scored as a wrong answer, not a crash."""
    import l4diag.evaluation.runner as runner_mod

    def boom(run: Path, method: str, baseline: str | None = None) -> dict:
        raise RuntimeError("no diagnoser")

    monkeypatch.setattr(runner_mod, "diagnose_run", boom)
    rows = evaluate(tiny_runs, method="l4diag")
    assert all(r["error"].startswith("RuntimeError") for r in rows)
    assert aggregate(rows)["errors"] == 3


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory) -> Path:
    from l4diag.synth.suite import write_suite

    out = tmp_path_factory.mktemp("suite")
    write_suite(out, size="small")
    return out


def test_l4diag_meets_floors_on_the_small_suite_and_beats_grep(small_suite: Path) -> None:
    """Floors below the measured full-suite numbers: a regression in any stage of the pipeline trips one."""
    ours = aggregate(evaluate(small_suite, method="l4diag"))
    grep = aggregate(evaluate(small_suite, method="grep"))
    assert ours["errors"] == 0
    assert ours["false_alarm_rate"] == 0.0
    assert ours["node_top1"] >= 0.95
    assert ours["category_accuracy"] >= 0.95
    assert ours["stage_accuracy"] >= 0.9
    assert ours["iteration_accuracy"] >= 0.9
    assert ours["evidence_hit5"] >= 0.95
    assert ours["node_top1"] > grep["node_top1"] and ours["category_accuracy"] > grep["category_accuracy"]
