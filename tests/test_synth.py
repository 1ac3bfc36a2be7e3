"""l4diag synth: determinism, layouts, truth labels, realism invariants, excerpt scenarios, CLI."""

from __future__ import annotations

import gzip
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from l4diag.cli import cli
from l4diag.model import CATEGORIES, STAGES
from l4diag.rules import load_rules
from l4diag.synth import FAULTS, FRAMEWORKS, LAYOUTS, RunSpec, build_run, write_run
from l4diag.synth.excerpts import find_excerpts
from l4diag.synth.layouts import combined_lines, render
from l4diag.synth.suite import plan_suite, write_excerpt_scenarios

MEGATRON_ITER = re.compile(r"\biteration\s+\d+\s*/\s*\d+\s*\|")
TRUTH_KEYS = {"verdict", "category", "subcategory", "node", "stage", "iteration", "log_interval", "framework",
              "layout", "source", "excerpt", "evidence", "nodes", "seed"}


def write(tmp_path: Path, name: str, **kw) -> tuple[Path, dict]:
    spec = RunSpec(**{"fault": "software", "nodes": 4, "framework": "megatron", "layout": "file-per-node", "seed": 1, **kw})
    sim, truth = build_run(spec)
    out = tmp_path / name
    write_run(sim, truth, out)
    return out, json.loads((out / "truth.json").read_text())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["file-per-node-gz", "tar.gz", "zip", "combined-host", "torchrun"])
def test_same_seed_same_bytes(tmp_path: Path, layout: str) -> None:
    a, _ = write(tmp_path, "a", fault="oom", layout=layout, seed=7)
    b, _ = write(tmp_path, "b", fault="oom", layout=layout, seed=7)
    c, _ = write(tmp_path, "c", fault="oom", layout=layout, seed=8)
    assert tree_bytes(a) == tree_bytes(b)
    assert tree_bytes(a) != tree_bytes(c)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_files(tmp_path: Path, layout: str) -> None:
    out, truth = write(tmp_path, "run", fault="hardware", layout=layout, nodes=4)
    logs = out / "logs"
    ids = truth["node_ids"]
    if layout == "dir-per-node":
        for node in ids:
            assert (logs / node / "stdout.log").is_file() and (logs / node / "stderr.log").is_file()
    elif layout == "file-per-node":
        assert sorted(p.name for p in logs.iterdir()) == sorted(f"{n}.log" for n in ids)
    elif layout.startswith("file-per-node-"):
        ext = layout.rsplit("-", 1)[1]
        assert sorted(p.name for p in logs.iterdir()) == sorted(f"{n}.log.{ext}" for n in ids)
    elif layout == "torchrun":
        for node in ids:
            assert list((logs / node).glob("*/attempt_0/0/stdout.log")), node
    elif layout == "combined-host":
        (f,) = list(logs.iterdir())
        prefixes = {ln.split(": ", 1)[0] for ln in f.read_text().splitlines()}
        assert prefixes == set(ids)
    elif layout == "combined-rank":
        assert ids == [f"rank{i}" for i in range(4)]
        (f,) = list(logs.iterdir())
        assert all(re.match(r"^(\[rank\d+\]|\d+): ", ln) for ln in f.read_text().splitlines())
    elif layout == "tar.gz":
        (f,) = list(logs.iterdir())
        with tarfile.open(f) as tf:
            assert sorted(Path(m).name for m in tf.getnames()) == sorted(f"{n}.log" for n in ids)
    elif layout == "zip":
        (f,) = list(logs.iterdir())
        with zipfile.ZipFile(f) as zf:
            assert sorted(Path(m).name for m in zf.namelist()) == sorted(f"{n}.log" for n in ids)


@pytest.mark.parametrize("fault", list(FAULTS) + ["healthy"])
def test_truth_fields(tmp_path: Path, fault: str) -> None:
    _, truth = write(tmp_path, "run", fault=fault, framework="deepspeed", seed=3)
    assert TRUTH_KEYS <= set(truth)
    assert truth["source"] == "synthetic" and truth["excerpt"] is None
    if fault == "healthy":
        assert truth["verdict"] == "healthy" and truth["node"] is None and truth["evidence"] == []
        return
    assert truth["verdict"] == "failure"
    assert truth["category"] == fault and truth["category"] in CATEGORIES
    assert truth["stage"] in STAGES
    assert truth["node"] in truth["node_ids"]
    assert truth["iteration"] is None or isinstance(truth["iteration"], int)
    if truth["stage"] in ("init", "checkpoint_load"):
        assert truth["iteration"] is None
    assert (truth["evidence"] == []) == (fault == "hang")


def test_stage_option_and_bad_stage() -> None:
    _, truth = build_run(RunSpec("storage", 4, "hf", "file-per-node", 2, stage="checkpoint_save"))
    assert truth.stage == "checkpoint_save"
    with pytest.raises(ValueError):
        build_run(RunSpec("divergence", 4, "hf", "file-per-node", 2, stage="init"))


@pytest.mark.parametrize("seed", range(4))
def test_megatron_iterations_only_on_last_node(seed: int) -> None:
    sim, _ = build_run(RunSpec("healthy", 5, "megatron", "file-per-node", seed))
    printing = [n.index for n in sim.nodes if any(MEGATRON_ITER.search(ln.text) for ln in n.lines)]
    assert printing == [4]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "hang"])
def test_evidence_is_in_culprit_log(framework: str, fault: str) -> None:
    sim, truth = build_run(RunSpec(fault, 4, framework, "dir-per-node", 11))
    culprit = next(n for n in sim.nodes if n.name == truth.node)
    written = {render(sim, culprit, ln) for ln in culprit.lines}
    assert truth.evidence and all(e in written for e in truth.evidence)
    others = {render(sim, n, ln) for n in sim.nodes if n is not culprit for ln in n.lines}
    assert not any(e in others for e in truth.evidence)


def test_evidence_in_combined_file_with_prefix(tmp_path: Path) -> None:
    out, truth = write(tmp_path, "run", fault="network", layout="combined-host", seed=5)
    text = next((out / "logs").iterdir()).read_text().splitlines()
    for ev in truth["evidence"]:
        assert f"{truth['node']}: {ev}" in text


def test_iteration_truth_is_last_logged_before_fault() -> None:
    sim, truth = build_run(RunSpec("software", 4, "megatron", "file-per-node", 4, stage="train"))
    logged = sorted({ln.iteration for ln in sim.printer.lines if ln.iteration is not None})
    assert truth.iteration in logged
    assert truth.iteration == max(logged)  # the job stops making progress at the fault


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("seed", range(3))
def test_healthy_runs_have_no_fault_lines(framework: str, seed: int) -> None:
    sim, truth = build_run(RunSpec("healthy", 4, framework, "file-per-node", seed))
    from l4diag.scoring.patterns import classify_text

    rules = load_rules()
    markers = re.compile(r"Xid|OutOfMemory|out of memory|Watchdog caught|ChildFailedError|Traceback|exitcode|NCCL WARN|Errno|\bnan\b(?! iterations)")
    for node in sim.nodes:
        for ln in node.lines:
            assert not ln.fault and not ln.evidence
            assert not markers.search(ln.text), ln.text
            hit = classify_text(ln.text, rules)
            assert not hit.is_fault, (ln.text, hit.explain())


def test_iteration_markers_fire_for_every_framework() -> None:
    iteration_rules = load_rules().iterations
    for framework in FRAMEWORKS:
        sim, _ = build_run(RunSpec("healthy", 4, framework, "file-per-node", 1))
        marked = [ln for ln in sim.printer.lines if ln.iteration is not None]
        assert marked
        assert all(any(r.search(ln.text) for r in iteration_rules) for ln in marked), framework


def make_excerpts(root: Path) -> Path:
    (root / "network").mkdir(parents=True)
    (root / "normal").mkdir()
    (root / "other").mkdir()
    (root / "network" / "tiny-conn-reset.log").write_text(
        "host-a:11:22 [3] misc/socket.cc:538 NCCL WARN Net : Call to recv from 10.0.0.2<4242> failed : Connection reset by peer\n"
        "host-a:11:22 [3] NCCL INFO misc/socket.cc:549 -> 6\n"
        "RuntimeError: NCCL communicator was aborted on rank 3.\n")
    (root / "normal" / "healthy.log").write_text("step: 1  loss:  2.0\n")
    (root / "other" / "ctrl-c.log").write_text("KeyboardInterrupt\n")
    return root


def test_excerpt_scenarios(tmp_path: Path) -> None:
    exdir = make_excerpts(tmp_path / "ex")
    assert [e.rel for e in find_excerpts(exdir)] == ["network/tiny-conn-reset.log", "other/ctrl-c.log"]
    truths = write_excerpt_scenarios(tmp_path / "out", exdir)
    assert [t["source"] for t in truths] == ["real_excerpt", "real_excerpt"]
    net, other = truths
    assert net["category"] == "network" and net["excerpt"] == "network/tiny-conn-reset.log"
    assert net["evidence"][0].endswith("Connection reset by peer")
    assert "RuntimeError: NCCL communicator was aborted on rank 3." in net["evidence"]
    assert other["verdict"] == "failure" and other["category"] == "unknown"
    run_dir = next((tmp_path / "out").glob("x000-*"))
    from l4diag.evaluation.baseline import read_streams

    lines = read_streams(run_dir / "logs")[net["node"]]
    for ev in net["evidence"]:
        assert ev in lines


def test_suite_plan_covers_categories() -> None:
    items = plan_suite("full")
    kinds = [i.spec.fault for i in items]
    assert len(items) >= 150 and kinds.count("healthy") >= 20
    assert all(kinds.count(f) >= 10 for f in FAULTS)
    assert {i.spec.layout for i in items} == set(LAYOUTS)
    assert {i.spec.framework for i in items} == set(FRAMEWORKS)
    assert len({i.name for i in items}) == len(items)


def test_cli_synth_single_run(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(tmp_path / "r"), "--fault", "oom", "--nodes", "4", "--framework", "hf",
                              "--layout", "file-per-node-gz", "--seed", "3", "--stage", "train"])
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "r" / "truth.json").read_text())
    assert truth["category"] == "oom" and truth["stage"] == "train" and truth["layout"] == "file-per-node-gz"
    gz = tmp_path / "r" / "logs" / f"{truth['node']}.log.gz"
    assert truth["evidence"][0] in gzip.decompress(gz.read_bytes()).decode()


def test_cli_synth_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["synth", str(tmp_path / "a"), "--fault", "gremlins"]).exit_code == 2
    assert runner.invoke(cli, ["synth", str(tmp_path / "b")]).exit_code == 2
    assert runner.invoke(cli, ["synth", str(tmp_path / "c"), "--fault", "hang", "--stage", "init"]).exit_code == 2


def test_cli_synth_small_suite(tmp_path: Path) -> None:
    exdir = make_excerpts(tmp_path / "ex")
    res = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--suite", "--size", "small", "--excerpts", str(exdir)])
    assert res.exit_code == 0, res.output
    truths = [json.loads(p.read_text()) for p in (tmp_path / "s").glob("*/truth.json")]
    assert 20 <= len(truths) <= 30
    assert sum(t["source"] == "real_excerpt" for t in truths) == 2
    assert {t["category"] for t in truths if t["source"] == "synthetic"} >= set(FAULTS)


def test_combined_rank_lines_are_time_ordered() -> None:
    sim, _ = build_run(RunSpec("network", 8, "torchtitan", "combined-rank", 2))
    assert len(combined_lines(sim, "combined-rank")) == sum(len(n.lines) for n in sim.nodes)


def test_excerpt_timestamps_move_onto_the_run_clock_in_their_own_layouts() -> None:
    from datetime import datetime, timezone

    from l4diag.synth.clock import retime

    epoch = datetime(2024, 10, 30, 14, 0, 0, tzinfo=timezone.utc).timestamp()
    lines = ["Aug 26 15:27:32 host kernel: [87430.975714] nvidia-uvm: loaded",
             "[E0826 15:28:16.584296192 ProcessGroupNCCL.cpp:1536] x",
             "no time here",
             "[2022-08-26 15:29:32,663] [INFO] y"]
    out, offsets = retime(lines, epoch)
    assert out[0].startswith("Oct 30 14:00:00 host kernel: [87430.975714]"), "dmesg uptime stamps are not wall clock"
    assert out[1].startswith("[E1030 14:00:44.584296192 ")
    assert out[2] == "no time here"
    assert out[3].startswith("[2024-10-30 14:02:00,663]")
    assert offsets == [0.0, 44.0, 44.0, 120.0]
