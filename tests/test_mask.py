"""The fast map step (fastmap.Folder) must give exactly the Partial of the reference SlowFolder."""

from __future__ import annotations

import random
from pathlib import Path
from dataclasses import asdict

import pytest
from runs import write_layout

import l4diag.fastmap as fastmap
import l4diag.lines as lines_mod
from l4diag import native
from l4diag.fastmap import Folder, _hex_re2, digit_invariant
from l4diag.mask import MapOptions, Masker, SlowFolder
from l4diag.rules import load_rules
from l4diag.sources import discover

RULES = load_rules([])
LAYOUTS = ["dir-per-node", "file-per-node", "combined-host", "combined-rank", "gz", "tar.gz", "zip"]


def canon(partial) -> tuple:
    keys = {
        key: {node: (s.count, asdict(s.first), asdict(s.last), dict(s.stages)) for node, s in per_node.items()}
        for key, per_node in partial.keys.items()
    }
    nodes = {node: asdict(stats) for node, stats in partial.nodes.items()}
    return keys, nodes, asdict(partial.accounting)


def fold_both(path) -> tuple:
    found = discover([str(path)], None)
    out = []
    for cls in (SlowFolder, Folder):
        folder = cls(RULES, MapOptions())
        for spec in found.streams:
            folder.fold_spec(spec)
        out.append(canon(folder.partial))
    return out


# how the fast Folder reads plain blocks: the native scanner, or numpy counting keys per batch of
# at least NUMPY_MIN_LINES lines (dicts below that)
PATHS = ["native", "numpy-512", "numpy-1"]


def use_path(monkeypatch, path: str) -> None:
    if path == "native":
        if native.module() is None:
            pytest.skip("the native scanner is not built")
    else:
        monkeypatch.setenv(native.DISABLE_ENV, "1")
        monkeypatch.setattr(fastmap, "NUMPY_MIN_LINES", int(path.split("-")[1]))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", PATHS)
def test_fast_equals_reference_on_test_runs(tmp_path, monkeypatch, layout, path):
    use_path(monkeypatch, path)
    slow, fast = fold_both(write_layout(tmp_path / layout, layout))
    assert fast == slow


def _hostile(rng: random.Random, n: int, dirty: bool) -> bytes:
    out = []
    for _ in range(n):
        r = rng.random()
        y = rng.choice([2023, 2024, 2025])
        if r < 0.12:  # ISO, sometimes impossible dates
            out.append(f"{y}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d} {rng.randint(0, 25):02d}:"
                       f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d},{rng.randint(0, 999)} INFO x {rng.randint(0, 99)}")
        elif r < 0.22:  # glog behind a [rankN]: prefix: year carried from the last full date
            out.append(f"[rank{rng.randint(0, 3)}]:[E{rng.randint(1, 12):02d}{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:"
                       f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 10**9)} PG.cpp:607] Watchdog caught timeout")
        elif r < 0.28:
            out.append(f"{rng.choice(['Jan', 'Feb', 'Dec'])} {rng.randint(0, 31):2d} {rng.randint(0, 23):02d}:"
                       f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} host kernel: NVRM: Xid 79")
        elif r < 0.32:
            out.append(f"I{rng.randint(1, 12):02d}{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:00:00.{rng.randint(0, 999999)} "
                       f"123 foo.cc:12] step 5x 0x1f")
        elif r < 0.37:
            out.append(f"[{y}-05-01T10:{rng.randint(0, 59):02d}:00.{rng.randint(0, 10**8)}] iteration {rng.randint(1, 999)}/ 1000 | "
                       f"lm loss: {rng.random():.3E} | grad norm: {rng.random():.3f} |")
        elif r < 0.40:
            out.append(f"INFO]:[{y}-05-01 10:00:{rng.randint(0, 59):02d} odd prefix")
        elif r < 0.43:
            out.append(f"é٣ {y}-05-01 10:00:00 unicode ٣٤ digits")
        elif r < 0.45:
            out.append("٢٠٢٤-05-01 10:00:00 arabic year")
        elif r < 0.48:
            out.append(rng.choice([" loading checkpoint from /ckpt at iteration 4000", "training ...",
                                   f"{y}-05-01 10:00:00,123 [Rank 0] step={rng.randint(0, 100)}, skipped=0, lr=[5e-05]"]))
        elif r < 0.52:
            out.append(f"({y}-06-01 00:00:0{rng.randint(0, 9)}) paren {rng.randint(0, 10**6):x} 8x A100 deadbeef12 0xABC")
        elif r < 0.55:
            out.append("gpu-node-01 mentions itself and gpu-node-012 [2024-02-31 12:00:00.5] feb 31 \t\ttabs  ")
        elif r < 0.56:
            out.append("x" * rng.randint(1, 3000))
        elif r < 0.565:  # ids the native scanner masks itself, and near misses
            out.append(f"{y}-05-01 10:00:00 comm 0x{rng.randint(0, 2**48):x} req={rng.randint(0, 2**64):032x} "
                       f"uuid {rng.randint(0, 2**32):08x}-2e1a-8b3c-4d5e-0123456789ab{rng.choice(['', 'g', '-1'])} "
                       f"0x{rng.choice(['', 'g1', 'AB_'])} <HEX> iteration {rng.randint(1, 9)}/ 10 |")
        elif r < 0.57:  # a literal "<NODE>" shares its skeleton with a line that names the node
            out.append(rng.choice(["<NODE>", "gpu-node-01"]) + f" saving checkpoint at iteration {rng.randint(1, 9)}")
        elif dirty and r < 0.62:
            out.append(rng.choice(["", "   ", "\u3000", f"\x1b[31mred {rng.randint(0, 9)}\x1b[0m bar\r 50%\r 100%"]))
        else:
            out.append(f"{y}-{rng.randint(1, 12):02d}-01 {rng.randint(0, 23):02d}:00:00.{rng.randint(0, 9)} generic "
                       f"{rng.random()} 12345678 cafebabe1 ab12cd34ef 3x 10.0.0.{rng.randint(0, 255)}:{rng.randint(1, 65535)}")
    data = "\n".join(out).encode()
    if dirty:
        data += b"\n\xff\xfe broken \x00 bytes\n"
    return data


@pytest.mark.parametrize("seed,dirty", [(1, False), (2, False), (3, True), (4, True)])
@pytest.mark.parametrize("path", PATHS)
def test_fast_equals_reference_on_hostile_lines(tmp_path, monkeypatch, seed, dirty, path):
    # small blocks: many block boundaries, year and context carried across them; key counting
    # both with dicts (small batches) and numpy (every batch)
    monkeypatch.setattr(lines_mod, "READ_BLOCK", 8192)
    use_path(monkeypatch, path)
    path = tmp_path / "gpu-node-01.log"
    path.write_bytes(_hostile(random.Random(seed), 3000, dirty))
    slow, fast = fold_both(path)
    assert fast == slow


def test_native_table_cleared_midway_changes_nothing(tmp_path, monkeypatch):
    # a tiny skeleton table: cleared every few blocks, ids start again within a stream
    use_path(monkeypatch, "native")
    monkeypatch.setattr(lines_mod, "READ_BLOCK", 8192)
    monkeypatch.setattr(fastmap, "MAX_SKELETON_CACHE", 40)
    fastmap._SHARED.clear()
    path = tmp_path / "gpu-node-01.log"
    ascii_lines = [line for line in _hostile(random.Random(5), 3000, False).split(b"\n") if line.isascii()]
    path.write_bytes(b"\n".join(ascii_lines) + b"\n")
    slow, fast = fold_both(path)
    cleared = [shared["native_generation"] for shared in fastmap._SHARED.values()]
    fastmap._SHARED.clear()
    assert fast == slow
    assert max(cleared) > 0


def test_skeletons_allowed_for_builtin_masks():
    assert digit_invariant(RULES) is not None


def test_hex_rewrite_matches_python_rule():
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    py = re.compile(fastmap.HEX_RULE_PY)
    rng = random.Random(5)
    alphabet = "0123456789abcdefABCDEFxg_ -."
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(3000)]
    samples += ["deadbeef", "12345678", "1234567a", "a1234567", "0x1F", "cafebabe12", "abcdefab1", "1abcdefa"]
    got = pc.replace_substring_regex(pa.array(samples), pattern=_hex_re2(), replacement="<HEX>").to_pylist()
    assert got == [py.sub("<HEX>", s) for s in samples]


def test_bulk_masker_matches_masker():
    masker = Masker(RULES)
    bulk = fastmap.BulkMasker(masker)
    rng = random.Random(9)
    texts = [_hostile(rng, 1, False).decode() for _ in range(500)] + ["ünïcode 12 0x1f", "a\u2003b 3"]
    assert bulk.keys(texts) == [masker.key(t, None) for t in texts]


def test_timestamp_cache_does_not_alias_behind_a_prefix():
    from l4diag.lines import TimestampParser

    p = TimestampParser()
    a = p.parse("[rank0]:[2024-05-01 10:00:00,100] x")
    b = p.parse("[rank0]:[2024-05-01 10:05:00,100] x")
    c = p.parse("[rank0]:[E0501 10:07:00.5 pg.cpp:1] y")
    d = p.parse("[rank0]:[E0501 11:07:00.5 pg.cpp:1] y")
    assert b - a == 300 and d - c == 3600


def test_builtin_markers_run_in_re2():
    """The block scan for markers needs RE2 (Arrow); a marker RE2 cannot take falls back to a far slower path."""
    from l4diag.context import Markers, marker_re2
    from l4diag.rules import load_rules

    assert marker_re2(Markers.from_rules(load_rules())) is not None


def _iteration_lines(rng: random.Random, n: int) -> list:
    """Marker lines whose numbers vary (widths, nan/inf, overflow) under few digit-zeroed shapes."""
    def num() -> str:
        return rng.choice([str(rng.randint(0, 10**rng.randint(1, 6))), f"{rng.random() * 10:.3f}", "nan", "inf",
                           f"{rng.random():.6E}", "1e999", "9" * 400])
    shapes = [
        lambda: f"iteration {rng.randint(1, 10**6)}/ 500000 | elapsed time per iteration (ms): {num()} | lm loss: {num()} "
                f"| loss scale: {num()} | grad norm: {num()} | number of skipped iterations: {rng.randint(0, 2)} |",
        lambda: f"{{'loss': {num()}, 'grad_norm': {num()}, 'learning_rate': 1e-05, 'epoch': {num()}}}",
        lambda: f"step {rng.randint(0, 999)} loss: {num()} dt: {num()}ms",
        lambda: f"global_step={num()} train_loss={num()}",
        lambda: f"Saving checkpoint at iteration {rng.randint(0, 99)}",
        lambda: f"successfully loaded checkpoint from /ckpt at iteration {rng.randint(0, 99)}",
        lambda: f"nothing to see {num()}",
    ]
    return [rng.choice(shapes)() for _ in range(n)]


def test_planned_observe_equals_line_by_line():
    from l4diag.context import Context, Markers

    markers = Markers.from_rules(RULES)
    planned = markers.planned()
    assert planned.plans is not None
    rng = random.Random(3)
    slow, fast = Context(), Context()
    for seq, text in enumerate(_iteration_lines(rng, 3000)):
        slow.observe(text, float(seq), seq, markers, ("f", seq))
        fast.observe(text, float(seq), seq, planned, ("f", seq))
    assert repr(asdict(fast)) == repr(asdict(slow))  # repr: nan compares unequal to itself
    assert len(planned.plans) < 1500  # shapes repeat: most lines were observed through a cached plan


def _custom_markers():
    """Digit-blind marker rules whose groups take any text: metric values that are not numbers (or
    empty), an optional ``iter`` group, a stage marker naming an iteration."""
    import regex

    from l4diag.context import Markers
    from l4diag.rules import Rule

    def rule(kind: str, category: str, src: str) -> Rule:
        return Rule(kind, "r", category, regex.compile(src), "", "")

    return Markers(
        iteration_rules=[rule("iterations", "x", r"\bit[ =](?P<iter>\S+)"),
                         rule("iterations", "y", r"\bstep(?: (?P<iter>[-+.\d]+))? \|")],
        stage_rules=[rule("stages", "checkpoint_save", r"saving at (?P<iter>\S+)"), rule("stages", "shutdown", r"\bbye\b")],
        metric_rules=[rule("metrics", "loss", r"\bloss[=:](?P<value>\S*)"), rule("metrics", "loss", r"\blm loss (?P<value>\S+)"),
                      rule("metrics", "grad_norm", r"\bgn=(?P<value>[^ |]*)"), rule("metrics", "loss_scale", r"\bls=(?P<value>\S+)"),
                      rule("metrics", "iter_time", r"\bms=(?P<value>\S+)")],
    )


def _odd_metric_lines(rng: random.Random, n: int) -> list:
    """Lines for ``_custom_markers``: values float() refuses, nan/inf, iterations that are no integer,
    too long for a float, or go backwards, several skip counts, metrics missing."""
    def num() -> str:
        return rng.choice(["1.5", "0", "17", "-2.5e-3", "nan", "inf", "-inf", "NaN", "1e999", "9" * 400, "abc", "1_0",
                           "1__0", "", "0x1f", "1.2.3", "+3", "\u0661\u0662", "5e", ".5", "Infinity", f"{rng.random():.6E}"])

    def it() -> str:
        return rng.choice([str(rng.randint(0, 10**6)), str(rng.randint(0, 99)), "9" * 15, "9" * 16, "9" * 20, "1e5",
                           "1.5", "nan", "abc", "9e999", "007", "-3", "\u0661\u0662", "9" * 400])

    def skip() -> str:
        return f"number of skipped iterations: {rng.randint(0, 3)}"

    shapes = [
        lambda: f"it {it()} | loss={num()} | gn={num()} | ls={num()} | ms={num()} | {skip()} |",
        lambda: f"it={it()} lm loss {num()} loss:{num()} {skip()} {skip()}",
        lambda: f"it {it()} | gn={num()} gn={num()} ms={num()}",
        lambda: f"step | loss={num()} ms={num()}",
        lambda: f"step {it()} | gn={num()}",
        lambda: f"saving at {it()}",
        lambda: "bye now",
        lambda: f"nothing here {num()}",
        lambda: f"it {it()}",
    ]
    return [rng.choice(shapes)() for _ in range(n)]


def _observe_both(markers, lines: list, batch: int):
    """Lines observed one by one without plans (``observe``), and a batch at a time through plans
    (``Context.observe_rows``, as fastmap does): both contexts, and the changes each reported."""
    from l4diag.context import Context

    planned = markers.planned()
    assert planned.plans is not None
    rng = random.Random(len(lines))
    slow, fast = Context(), Context()
    slow_changes, fast_changes = [], []
    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        base_seq = 2 * start
        rows = [2 * i + 1 for i in range(len(chunk))]  # candidates are some of the batch's lines
        linenos = [1000 + base_seq + i for i in range(2 * len(chunk))]
        times = [float("nan") if rng.random() < 0.2 else float(base_seq + r) for r in rows]
        exact = [t == t and rng.random() < 0.8 for t in times]
        plans, bodies = [], []
        for i, (row, text) in enumerate(zip(rows, chunk)):
            before = (slow.iteration, slow.stage)
            t = times[i]
            slow.observe(text, None if t != t else t, base_seq + row + 1, markers, ("f", linenos[row]), exact[i])
            if (slow.iteration, slow.stage) != before:
                slow_changes.append((start, row, (slow.iteration, slow.stage)))
            plan = planned.plan_of(text) if rng.random() < 0.9 else None  # None: a plan the caller does not know
            plans.append(plan)
            bodies.append(None if plan is not None and plan.kind == "none" else text)
        changed, states = fast.observe_rows(rows, bodies, plans, times, exact, base_seq, "f", linenos, planned)
        fast_changes += [(start, row, state) for row, state in zip(changed, states)]
    return slow, fast, slow_changes, fast_changes


@pytest.mark.parametrize("which", ["builtin", "custom"])
def test_batch_observe_through_plans_equals_line_by_line(which):
    from l4diag.context import Markers

    rng = random.Random(11)
    if which == "builtin":
        markers = Markers.from_rules(RULES)
        lines = _iteration_lines(rng, 2000) + [
            "global_step=9e999 train_loss=1.0", "global_step=1e5 train_loss=nan", "global_step=12.75 train_loss=inf",
            f"iteration {'9' * 20}/ 10 | lm loss: 1.0 |", f"iteration {'9' * 16}/ 10 | lm loss: 1.0 |",
            "iteration 5/ 10 | lm loss: 1.0 |", "iteration 3/ 10 | lm loss: 2.0 |"]
    else:
        markers = _custom_markers()
        lines = _odd_metric_lines(rng, 3000)
    for batch in (1, 7, 300):
        slow, fast, slow_changes, fast_changes = _observe_both(markers, lines, batch)
        assert repr(asdict(fast)) == repr(asdict(slow))  # repr: nan compares unequal to itself
        assert fast_changes == slow_changes
        # points built field by field hold their fields as MetricPoint() does, in the same order
        assert [list(vars(p).items()) for p in fast.metrics].__repr__() == [list(vars(p).items()) for p in slow.metrics].__repr__()


def test_float_takes_a_text_as_it_takes_its_digit_zeroed_text():
    """What ``compile_reads`` relies on: whether float() takes a value is decided by its zeroed text."""
    from l4diag.context import ZERO_DIGITS

    rng = random.Random(4)
    alphabet = "0123456789" * 3 + ".eE+-_ nainfINFty\u0661x"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        zeroed = text.encode().translate(ZERO_DIGITS).decode()
        assert _takes_float(text) == _takes_float(zeroed), text


def _takes_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_compiled_plan_points_pickle_as_constructed_ones():
    import pickle

    from l4diag.context import Context, Markers
    from l4diag.model import MetricPoint

    planned = Markers.from_rules(RULES).planned()
    text = "iteration 12/ 100 | elapsed time per iteration (ms): 12.5 | lm loss: 7.5E+00 | loss scale: 1024.0 | grad norm: nan |"
    plan = planned.plan_of(text)
    assert plan.reads is not None
    ctx = Context()
    ctx.observe_rows([0], [text], [plan], [5.0], [True], 0, "f", [7], planned)
    built = MetricPoint(12, 5.0, 1, 7.5, float("nan"), 1024.0, 12.5, False, "f", 7, text)
    assert repr(ctx.metrics) == repr([built])
    assert pickle.dumps(ctx.metrics[0]) == pickle.dumps(built)


def test_a_metric_group_that_took_no_part_is_not_compiled():
    """``float(None)`` raises on such a line in the reference: the plan leaves it to the general way."""
    import regex

    from l4diag.context import Context
    from l4diag.rules import Rule

    markers = _custom_markers()
    markers.metric_rules = [Rule("metrics", "r", "loss_scale", regex.compile(r"\bls(?:=(?P<value>\d+))?\b"), "", "")]
    planned = markers.planned()
    plan = planned.plan_of("it 5 ls")
    assert plan.kind == "iteration" and plan.reads is None
    for observe in (lambda: Context().observe("it 5 ls", 1.0, 1, markers),
                    lambda: Context().observe_rows([0], ["it 5 ls"], [plan], [1.0], [True], 0, "f", [1], planned)):
        with pytest.raises(TypeError):
            observe()


def _iteration_log(rng: random.Random, n: int) -> bytes:
    """A Megatron-like log: iteration lines of many widths (many plans in one batch), nan/inf and
    missing metrics, skipped iterations, an iteration that goes back (a restart), other lines between."""
    out = []
    iteration = 1
    for i in range(n):
        r = rng.random()
        ts = f"2024-05-01 10:{i // 600 % 60:02d}:{i // 10 % 60:02d},{rng.randint(0, 999):03d} " if rng.random() < 0.9 else ""
        if r < 0.6:
            iteration = rng.randint(1, iteration) if rng.random() < 0.03 else iteration + rng.choice([1, 1, 10, 100])
            loss = rng.choice([f"{rng.random() * 10:.6E}", "nan", "inf", "-inf", "NaN", f"{rng.random():.3f}"])
            metrics = [f"elapsed time per iteration (ms): {rng.uniform(1, 99999):.{rng.randint(0, 3)}f}",
                       f"lm loss: {loss}", f"loss scale: {2 ** rng.randint(0, 20)}.0", f"grad norm: {rng.random() * 10:.3f}",
                       f"number of skipped iterations: {rng.choice([0, 0, 0, 1, 12])}"]
            kept = [m for m in metrics if rng.random() < 0.9]
            out.append(f"{ts}[INFO] iteration {iteration:>{rng.randint(1, 9)}}/ {rng.randint(1, 10**6):>8} | "
                       + " | ".join(kept) + " |")
        elif r < 0.65:
            out.append(f"{ts}global_step={rng.choice([str(iteration), f'{iteration}.0', '9e999', '1e5'])} train_loss={rng.random():.4f}")
        elif r < 0.7:
            out.append(f"{ts}saving checkpoint at iteration {iteration} to /ckpt")
        else:
            out.append(f"{ts}INFO some other line {rng.randint(0, 10**6)}")
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("path", PATHS)
def test_fast_equals_reference_on_iteration_lines(tmp_path, monkeypatch, path):
    monkeypatch.setattr(lines_mod, "READ_BLOCK", 16384)  # many batches, the context carried between them
    use_path(monkeypatch, path)
    log = tmp_path / "gpu-node-01.log"
    log.write_bytes(_iteration_log(random.Random(7), 4000))
    slow, fast = fold_both(log)
    assert _nan_named(fast) == _nan_named(slow)


def _nan_named(value):
    """``value`` with every nan float (unequal to itself, also in a list or dict) replaced by "nan"."""
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, dict):
        return {k: _nan_named(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_named(v) for v in value]
    return value


def test_digit_blind_refuses_rules_that_tell_digits_apart():
    import regex

    from l4diag.context import digit_blind
    from l4diag.rules import Rule

    def rule(src: str) -> Rule:
        return Rule("metrics", "r", "loss", regex.compile(src), "", "")

    assert digit_blind([rule(r"\bloss:\s*(?P<value>[-+]?\d+\.?[0-9]*(?:e\d{1,3})?)\b")])
    for src in [r"skipped:\s*[1-9]", r"rank 0\b", r"(?P<a>\d)(?P=a)", r"(\d)\1", r"\x31", r"(?:abc){e<=1}", r"\N{DIGIT ONE}"]:
        assert not digit_blind([rule(src)]), src
    # one such rule and every marker line is observed line by line again
    from l4diag.context import Markers

    markers = Markers.from_rules(RULES)
    markers.metric_rules = [*markers.metric_rules, Rule("metrics", "r", "loss", regex.compile(r"loss=(?P<value>[1-9])"), "", "")]
    assert markers.planned() is markers and markers.plans is None


def test_loosen_bounds_only_widens_repeats():
    from l4diag.context import loosen_bounds

    assert loosen_bounds(r"a[^}]{0,400}b.{0,200}?c\d{1,3}") == r"a[^}]{0,}b.{0,}?c\d{1,}"
    # not repeats: escaped braces, braces in a class, {n}, and RE2's literal {,n}
    for src in [r"\{0,4}", r"[{0,4}]", r"[]{1,2}]", r"[^]{1,2}]", r"x{3}", r"x{,9}"]:
        assert loosen_bounds(src) == src


def test_bulk_times_equal_the_parser_on_odd_dates():
    from l4diag.lines import TimestampParser

    texts = ["1969-12-31 23:59:59 a", "2300-01-01 00:00:00 b", "0001-01-01 00:00:00 c", "2024-02-31 10:00:00 d",
             "2024-01-01 10:99:99.123456789 e", "[2024-01-01T10:00:00,5] f", "2024-01-01 10:00:00.000123 g",
             "2024-01-01 10:00:00. h", "x]:[2024-01-01 10:00:00 i", "(2024-13-01 10:00:00) j"]
    parser = TimestampParser()
    expected = [parser.parse(t) for t in texts]
    got = fastmap.BulkTimes().compute(texts, TimestampParser())
    assert [None if v != v else float(v) for v in got] == expected


def test_joined_masking_keeps_each_line_apart():
    """Masking many lines joined by newlines must give each line's own key (anchors, word edges,
    empty and blank lines, matches that would run into the next line)."""
    masker = Masker(RULES)
    bulk = fastmap.BulkMasker(masker)
    assert bulk.joined
    rng = random.Random(1)
    pieces = ["a:1:2 [3] x", "0x1f", "deadbeef12", " ", "\t", "12.5e-3", "1.2.3.4:80", "2024-01-01 10:00:00,5",
              "I0101 10:00:00.1", "", "  lead", "trail  ", "abc-def", "1234-5678", "<NODE>", "ff",
              "12345678-1234-1234-1234-123456789abc"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
    assert bulk.keys(texts) == [masker.key(t, None) for t in texts]


def test_line_local_refuses_patterns_that_can_see_a_line_end():
    for src in [r"\s+", r"[^a]", r"(?s).", r"(?<=x)y", r"x(?=\d)", r"a\nb", r"[\t-\r]", r"[[:space:]]", r"\x0a",
                r"\Ax", r"a\Z", r"\p{Cc}", r"\W", r"\D"]:
        assert not fastmap.line_local(src, ""), src
    assert fastmap.line_local(r"^(?:\S+?):\d+ \[\d+\]\b", "<X>")
    assert not fastmap.line_local(r"\d", "a\nb")


def test_encode_lines_equals_split_and_fromkeys():
    lines = ["a 0", "ü 00", "a 0", "", "b", "ü 00", "b"]
    for block in ("\n".join(lines) + "\n", "\n".join(lines)):  # the last line may lack its newline
        distinct, ids = fastmap._encode_lines(block.encode(), len(lines))
        assert distinct == list(dict.fromkeys(lines))
        assert [distinct[i] for i in ids] == lines
    assert fastmap._encode_lines(b"a\nb\n", 3) is None


def test_a_rule_that_gives_up_on_a_line_is_reported_not_silent(tmp_path, monkeypatch):
    from l4diag import rules as rules_mod
    from l4diag.mask import MapOptions, map_stream
    from l4diag.model import StreamSpec

    log = tmp_path / "n0.log"
    log.write_text("iteration 10/100 | lm loss: 2.0 |\nsaving checkpoint at iteration 10 to /ckpt\n")
    rules = rules_mod.load_rules()
    monkeypatch.setattr(rules_mod, "REGEX_TIMEOUT_S", 1e-9)  # every search now gives up at once
    for slow in (True, False):
        partial = map_stream(StreamSpec(path=str(log), display=str(log), node="n0"), rules, MapOptions(), slow=slow)
        gave_up = [w for w in partial.accounting.warnings if "gave up on" in w]
        assert gave_up and all("were not checked against it" in w for w in gave_up)


def test_compiled_rules_are_kept_for_the_latest_rule_sets_only(tmp_path):
    # eval and the API load the rules anew for every run: the caches must not pile up
    path = tmp_path / "gpu-node-01.log"
    path.write_text("2024-05-01 10:00:00,100 INFO hello 1\n")
    spec = discover([str(path)], None).streams[0]
    for _ in range(fastmap.MAX_SHARED + 3):
        Folder(load_rules([]), MapOptions()).fold_spec(spec)
    assert len(fastmap._SHARED) <= fastmap.MAX_SHARED


def test_the_same_xid_on_two_gpus_is_one_key():
    # PCI bus ids carry hex letters (9a, ed): masked whole, not as <NUM>a
    masker = Masker(RULES)
    lines = ["NVRM: Xid (PCI:0000:9a:00): 79, pid=1, GPU has fallen off the bus.",
             "NVRM: Xid (PCI:0000:ed:00): 79, pid=2, GPU has fallen off the bus."]
    keys = {masker.key(line, None) for line in lines}
    assert keys == {"NVRM: Xid (PCI:<PCI>): <NUM>, pid=<NUM>, GPU has fallen off the bus."}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prefix", ["{n}: ", "[rank{n}]:", "[default{n}]: ", "  {n}: ", "gpu-node-{n}: "])
def test_combined_lines_with_odd_spacing_fold_as_the_reference(tmp_path, monkeypatch, path, prefix):
    # the fast path decides a line's prefix from its text up to the first ": " and one more
    # character: a message that starts with spaces (one is cut after a rank prefix), or with ": "
    use_path(monkeypatch, path)
    rng = random.Random(prefix)
    bodies = ["  warnings.warn(  # warn only once", " x", "x: y", ":", ": : ", "2024-05-01 10:00:00,000 iteration 5/ 10 |",
              "no colon at all", "   NCCL INFO comm 0x7f3a rank 3", "[rank9]: nested", "3: 4: 5"]
    lines = [prefix.format(n=rng.randint(0, 3)) + rng.choice(bodies) for _ in range(3000)]
    lines[::7] = ["continuation line without a prefix"] * len(lines[::7])
    (tmp_path / "job.log").write_text("\n".join(lines) + "\n")
    slow, fast = fold_both(tmp_path)
    assert fast == slow


def test_marker_needs_never_rule_out_a_marker_line():
    # MarkerNeeds.may_match rejects a line at once when it holds no rule's first-clause piece
    from l4diag.context import Markers
    from l4diag.fastmap import MarkerNeeds

    needs = MarkerNeeds.of(Markers.from_rules(RULES))
    markers = [*RULES.iterations, *RULES.stages]
    lines = [r.example for r in markers] + [r.example.upper() for r in markers] + [r.example.lower() for r in markers]
    for path in sorted(Path(__file__).parent.parent.joinpath("sample_logs").rglob("*.log")):
        lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    matched = 0
    for line in lines:
        if any(r.pattern.search(line) for r in markers):
            matched += 1
            assert needs.may_match(line), line
    assert matched > 100
    assert not needs.may_match("2024-05-01 10:00:00 NCCL INFO comm 0x7f3a rank 3 nranks 8 - Init COMPLETE")


def test_occurrences_hold_plain_python_values(tmp_path):
    # numpy scalars would compare equal to the reference's but pickle larger and print as np.True_
    root = write_layout(tmp_path / "run", "dir-per-node")
    folder = Folder(RULES, MapOptions())
    for spec in discover([str(root)], None).streams:
        folder.fold_spec(spec)
    for per_node in folder.partial.keys.values():
        for ks in per_node.values():
            for occ in (ks.first, ks.last):
                assert type(occ.time_exact) is bool
                assert occ.time is None or type(occ.time) is float
