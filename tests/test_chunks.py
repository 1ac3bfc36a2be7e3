"""A large file folded as chunks in parallel gives exactly the Partial of one sequential fold."""

from __future__ import annotations

import gzip
import random
from datetime import datetime, timedelta

import pytest
from test_mask import PATHS, canon, use_path

from l4diag import chunks
from l4diag.mask import MapOptions, map_stream
from l4diag.pipeline import RunOptions, run_diagnosis
from l4diag.report.json import to_dict
from l4diag.rules import load_rules
from l4diag.sources import discover

RULES = load_rules()
START = datetime(2024, 12, 31, 23, 50, 0)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def _glog(t: datetime) -> str:
    return t.strftime("I%m%d %H:%M:%S.") + f"{t.microsecond:06d} 4242 socket.cpp:697]"


def node_log(rng: random.Random, n: int, host: str = "gpu-node-3", start: datetime = START) -> list:
    """Lines that exercise what crosses a chunk boundary: iteration and stage markers (a restart
    goes back in iterations), untimed runs shorter and longer than CARRY_TIME_LINES, yearless
    glog times after full dates (across a new year), metrics without a step, ids."""
    t = start
    it = 0
    out = []
    while len(out) < n:
        t += timedelta(milliseconds=rng.randint(1, 4000))
        r = rng.random()
        if r < 0.2:
            it += rng.choice([1, 1, 10, 20])
            out.append(f"{_iso(t)} iteration {it:8d}/ 100000 | lm loss: {rng.uniform(1, 8):.4E} | "
                       f"loss scale: 65536.0 | grad norm: {rng.uniform(0, 3):.3f} | number of skipped iterations: "
                       f"{rng.choice([0, 0, 0, 1])} |")
        elif r < 0.25:
            out.append(f"{_iso(t)} saving checkpoint at iteration {it:8d} to /ckpt")
        elif r < 0.28:
            it = max(0, it - rng.randint(1, 50))  # a restart from a checkpoint
            out.append(f"{_iso(t)} loading checkpoint from /ckpt at iteration {it}")
        elif r < 0.31:
            out.append(f"{_iso(t)} training ...")
        elif r < 0.34:
            out.append(f"{{'loss': {rng.uniform(1, 3):.4f}, 'learning_rate': 1e-05, 'epoch': 0.5}}")
        elif r < 0.36:  # an iteration line with no time of its own: it takes the one before
            it += 1
            out.append(f" {it % 100:2d}%|#####     | {it}/100000 [00:01<00:17,  0.46it/s]")
        elif r < 0.45:
            out.extend(f"{host}:4242:{4242 + d} [{d}] NCCL INFO comm 0x{rng.getrandbits(40):x} rank {d} - Init COMPLETE"
                       for d in range(rng.choice([1, 3, 25])))
        elif r < 0.55:
            out.append(f"{_glog(t)} [c10d] The client socket has failed to connect to [{host}]:29500")
        elif r < 0.57:
            out.append(f"{_iso(t)} RuntimeError: CUDA error: an illegal memory access was encountered")
        else:
            out.append(f"{_iso(t)} INFO step time {rng.uniform(0.5, 2):.3f}s tokens/s {rng.randint(1000, 9000)}")
    return out[:n]


def combined_log(rng: random.Random, n: int) -> list:
    """Four nodes' lines interleaved with ``host: `` prefixes, some continuation lines without
    one, and a node that only starts talking halfway. Not across a new year: each node's clock
    would cross it at another line, and a chunk guesses one year for all (then the stream is
    folded whole, see test_a_chunk_that_guessed_the_wrong_year_is_folded_whole)."""
    start = datetime(2024, 6, 1, 12, 0, 0)
    logs = {f"gpu-node-{i}": iter(node_log(random.Random(rng.random()), n, f"gpu-node-{i}", start)) for i in range(4)}
    out = []
    for k in range(n):
        node = rng.choice(list(logs)[: 3 if k < n // 2 else 4])
        out.append(f"{node}: {next(logs[node])}")
        if rng.random() < 0.05:
            out.append("    continued without a prefix")
    return out


def fold_whole_and_chunked(path, chunk_bytes: int) -> tuple:
    spec = discover([str(path)], None).streams[0]
    whole = map_stream(spec, RULES, MapOptions())
    plan = chunks.plan_chunks(spec, chunk_bytes)
    assert plan is not None and len(plan) > 5
    joined = chunks.join_chunks([chunks.map_chunk(c, RULES, MapOptions()) for c in plan], spec.display,
                                MapOptions().max_line_bytes)
    return whole, joined, plan


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("path", PATHS)
def test_chunks_of_one_node_file_join_into_the_whole_fold(tmp_path, monkeypatch, seed, path):
    use_path(monkeypatch, path)
    log = tmp_path / "gpu-node-3.log"
    log.write_text("\n".join(node_log(random.Random(seed), 1500)) + "\n")
    whole, joined, plan = fold_whole_and_chunked(log, 2000 + 1000 * seed)
    assert joined is not None
    assert canon(joined) == canon(whole)
    assert {c.year for c in plan[1:]} >= {2025}  # the guess follows the new year


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("path", PATHS)
def test_chunks_of_a_combined_file_join_into_the_whole_fold(tmp_path, monkeypatch, seed, path):
    use_path(monkeypatch, path)
    log = tmp_path / "job.log"
    log.write_text("\n".join(combined_log(random.Random(seed), 2000)) + "\n")
    whole, joined, plan = fold_whole_and_chunked(log, 3000)
    assert plan[0].kind == "host"
    assert joined is not None
    assert canon(joined) == canon(whole)


def test_chunks_start_at_a_line_that_names_its_node(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("\n".join(combined_log(random.Random(5), 1500)) + "\n")
    data = log.read_bytes()
    plan = chunks.plan_chunks(discover([str(log)], None).streams[0], 2000)
    for c in plan[1:]:
        assert data[c.start - 1:c.start] == b"\n"
        assert data[c.start:c.start + 9] == b"gpu-node-"
    assert [(a.end, b.start) for a, b in zip(plan, plan[1:])] == [(b.start, b.start) for b in plan[1:]]
    assert plan[-1].end == len(data)


def test_a_node_whose_time_goes_back_is_folded_whole(tmp_path):
    # a carried time could then differ, so the join gives up and the stream is folded again
    log = tmp_path / "gpu-node-3.log"
    lines = node_log(random.Random(1), 600)
    log.write_text("\n".join(lines + lines) + "\n")  # the same hour twice
    whole, joined, _ = fold_whole_and_chunked(log, 2000)
    assert joined is None
    got = run_diagnosis([str(log)], RunOptions(jobs=2, chunk_bytes=2000))
    want = run_diagnosis([str(log)], RunOptions(jobs=1))
    assert _report(got) == _report(want)


@pytest.mark.parametrize("layout", ["one-node", "combined"])
def test_the_report_is_the_same_with_chunks(tmp_path, layout):
    lines = node_log(random.Random(9), 2500) if layout == "one-node" else combined_log(random.Random(9), 2500)
    log = tmp_path / ("gpu-node-3.log" if layout == "one-node" else "job.log")
    log.write_text("\n".join(lines) + "\n")
    chunked = run_diagnosis([str(tmp_path)], RunOptions(jobs=2, chunk_bytes=4000))
    whole = run_diagnosis([str(tmp_path)], RunOptions(jobs=1))
    assert _report(chunked) == _report(whole)


def _report(diagnosis) -> dict:
    out = to_dict(diagnosis)
    out.pop("timings", None)
    return out


def test_only_large_plain_files_are_cut(tmp_path):
    lines = ("\n".join(node_log(random.Random(2), 400)) + "\n").encode()
    (tmp_path / "a.log").write_bytes(lines)
    (tmp_path / "b.log.gz").write_bytes(gzip.compress(lines))
    specs = {s.display.rsplit("/", 1)[-1]: s for s in discover([str(tmp_path)], None).streams}
    assert chunks.plan_chunks(specs["a.log"], len(lines)) is None  # not two chunks' worth
    assert len(chunks.plan_chunks(specs["a.log"], len(lines) // 4)) >= 3
    assert chunks.plan_chunks(specs["b.log.gz"], 100) is None  # cannot seek into it


def test_a_utf16_file_is_not_cut(tmp_path):
    log = tmp_path / "win.log"
    log.write_bytes("\n".join(node_log(random.Random(3), 300)).encode("utf-16"))
    assert chunks.plan_chunks(discover([str(log)], None).streams[0], 1000) is None


def test_hostile_bytes_inside_chunks_are_counted_once(tmp_path):
    lines = node_log(random.Random(4), 800)
    raw = b""
    for i, line in enumerate(lines):
        raw += line.encode()
        raw += {3: b"\xff\xfe bad utf-8", 7: b"\x00\x00\x00", 11: b"\r"}.get(i % 13, b"") + b"\n"
    log = tmp_path / "gpu-node-3.log"
    log.write_bytes(raw)
    whole, joined, _ = fold_whole_and_chunked(log, 3000)
    assert joined is not None
    assert canon(joined) == canon(whole)
    assert joined.accounting.streams == 1


def test_log_interval_counts_the_steps_between_chunks(tmp_path):
    # one iteration line per chunk or so: every step crosses a boundary
    t = START
    lines = []
    for it in range(10, 400, 10):
        t += timedelta(seconds=30)
        lines.append(f"{_iso(t)} iteration {it:8d}/ 100000 | lm loss: 2.0E+00 |")
        lines.extend(f"{_iso(t)} INFO filler line {k} of a long quiet stretch" for k in range(30))
    log = tmp_path / "gpu-node-3.log"
    log.write_text("\n".join(lines) + "\n")
    whole, joined, _ = fold_whole_and_chunked(log, 1500)
    assert whole.nodes["gpu-node-3"].log_interval == 10
    assert canon(joined) == canon(whole)


def test_a_chunk_that_guessed_the_wrong_year_is_folded_whole(tmp_path):
    # four clocks cross the new year at different lines of one combined file: a chunk guesses the
    # year of the last full date before it, which is some other node's
    logs = [iter(node_log(random.Random(i), 2000, f"gpu-node-{i}")) for i in range(4)]
    rng = random.Random(0)
    lines = [f"gpu-node-{i}: {next(logs[i])}" for i in (rng.randrange(4) for _ in range(2000))]
    log = tmp_path / "job.log"
    log.write_text("\n".join(lines) + "\n")
    _, joined, _ = fold_whole_and_chunked(log, 3000)
    assert joined is None
    got = run_diagnosis([str(log)], RunOptions(jobs=2, chunk_bytes=3000))
    assert _report(got) == _report(run_diagnosis([str(log)], RunOptions(jobs=1)))


def test_a_chunk_that_cannot_be_read_leaves_the_stream_to_the_whole_fold(tmp_path, monkeypatch):
    log = tmp_path / "gpu-node-3.log"
    log.write_text("\n".join(node_log(random.Random(6), 800)) + "\n")
    spec = discover([str(log)], None).streams[0]
    plan = chunks.plan_chunks(spec, 3000)
    log.unlink()  # gone between the cut and the fold
    results = [chunks.map_chunk(c, RULES, MapOptions()) for c in plan]
    assert chunks.join_chunks(results, spec.display, MapOptions().max_line_bytes) is None
    partial = map_stream(spec, RULES, MapOptions())
    assert any("cannot read" in w for w in partial.accounting.warnings)
    assert partial.accounting.inputs_skipped["unreadable"] == 1


def test_a_year_seen_once_carries_to_every_later_chunk(tmp_path):
    # one full date, then only glog times: each cut finds no date back to the cut before it and
    # keeps the guess of that cut
    t = datetime(2024, 6, 1, 12, 0, 0)
    lines = [f"{_iso(t)} INFO starting"]
    for k in range(3000):
        t += timedelta(seconds=1)
        lines.append(f"{_glog(t)} [c10d] heartbeat {k}")
    log = tmp_path / "gpu-node-3.log"
    log.write_text("\n".join(lines) + "\n")
    whole, joined, plan = fold_whole_and_chunked(log, 4000)
    assert {c.year for c in plan[1:]} == {2024}
    assert joined is not None
    assert canon(joined) == canon(whole)


def test_a_large_file_is_cut_in_at_most_max_chunks(tmp_path):
    log = tmp_path / "gpu-node-3.log"
    log.write_text("\n".join(node_log(random.Random(8), 2000)) + "\n")
    spec = discover([str(log)], None).streams[0]
    plan = chunks.plan_chunks(spec, 1000, max_chunks=6)
    assert len(plan) == 6
    assert [c.index for c in plan] == list(range(6))
