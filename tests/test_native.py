"""The native scanner computes exactly what fastmap's Python/numpy code computes, line by line."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest

from l4diag import native
from l4diag.context import Markers
from l4diag.fastmap import DIGITS_STR, BulkTimes, MarkerNeeds, _clean_parts, piece_may_overlap_id
from l4diag.lines import TimestampParser
from l4diag.rules import load_rules

mod = native.module()
needs_native = pytest.mark.skipif(mod is None, reason="the native scanner is not built")


def test_native_is_built_where_required():
    # CI sets L4DIAG_REQUIRE_NATIVE: a compiler failure at install must not pass as a slow green run
    if os.environ.get(native.REQUIRE_ENV):
        assert mod is not None


def test_a_stale_build_is_ignored(monkeypatch):
    class Stale:
        API_VERSION = native.API_VERSION - 1

    monkeypatch.setattr(native, "_MODULE", Stale)
    assert native.module() is None


def test_disable_switch_hides_the_module(monkeypatch):
    monkeypatch.setenv(native.DISABLE_ENV, "1")
    assert native.module() is None


def _random_line(rng: random.Random) -> str:
    parts = [
        f"{rng.randint(1960, 2300)}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}{rng.choice('T _x')}"
        f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}"
        + rng.choice(["", ",5", ".123456789", ".", ",x"]),
        rng.choice(["[", "(", "", "", "I", "Jan 3 ", "E0216 10:00:00.5 ", "x]:[", "May", "W1"]),
        rng.choice(["gpu-node-7", "gpu-node-77", "<NODE>", "gp", "8x", "0x1f", "deadbeef12", " ", "\t"]),
        str(rng.randint(0, 10**6)),
        rng.choice(["iteration 5/ 10 |", "saving checkpoint", "]:[", "ab", "é"[:0]]),
    ]
    rng.shuffle(parts)
    if rng.random() < 0.5:  # a timestamp in front, as most lines have
        parts.insert(0, parts.pop(0) if parts[0][:1].isdigit() else f"2024-05-0{rng.randint(1, 9)} 10:00:00,{rng.randint(0, 999)}")
    return " ".join(parts)[: rng.randint(1, 120)]


def _blocks(seed: int, count: int = 40):
    rng = random.Random(seed)
    for _ in range(count):
        lines = [_random_line(rng) for _ in range(rng.randint(1, 60))]
        yield lines


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_clean_check_agrees_with_python(seed):
    rng = random.Random(seed)
    for lines in _blocks(seed):
        if rng.random() < 0.3:  # an odd byte, blank or empty line, or a missing final newline
            i = rng.randrange(len(lines))
            lines[i] = rng.choice(["", "   ", "\t", "a\rb", "a\x1bb", "a\x00", "caf\u00e9", "x" * 300])
        block = ("\n".join(lines) + ("\n" if rng.random() < 0.9 else "")).encode()
        count = mod.count_clean_lines(block, 1000)
        parts = _clean_parts(block, 1000)
        if count >= 0:  # vouched for: Python must agree on every line
            assert parts == block.decode("ascii").split("\n")[:-1]
            assert count == len(parts)
        elif block.isascii() and block.endswith(b"\n"):  # refused an ASCII block: Python must refuse it too
            assert parts is None


def _python_skeleton(text: str, node: str | None, zero_digit_x: bool) -> str:
    """fastmap's skeleton: the node replaced, digits zeroed unless the line as written has [1-9][xX]."""
    keep_digits = not zero_digit_x and re.search(r"[1-9][xX]", text)
    if node is not None:
        text = text.replace(node, "<NODE>")
    return text if keep_digits else text.translate(DIGITS_STR)


@needs_native
@pytest.mark.parametrize("node", [None, "gpu-node-7", "gp"])
@pytest.mark.parametrize("zero_digit_x", [False, True])
def test_scan_splits_and_skeletons_like_python(node, zero_digit_x):
    table = mod.SkeletonTable()
    for lines in _blocks(11):
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            continue
        block = ("\n".join(lines) + "\n").encode()
        starts, ids, _, _, flags = mod.scan(block, None if node is None else node.encode(), table, zero_digit_x)
        assert list(native.ScannedLines(block, np.frombuffer(starts, dtype=np.int64))) == lines
        for text, sid, flag in zip(lines, np.frombuffer(ids, dtype=np.int32).tolist(), flags):
            assert table.skeletons[sid] == _python_skeleton(text, node, zero_digit_x)
            assert bool(flag & mod.FLAG_LITERAL_NODE) == ("<NODE>" in text)
    assert len(set(table.skeletons)) == len(table)  # one id per distinct skeleton


@needs_native
def test_table_clear_starts_ids_again():
    table = mod.SkeletonTable()
    mod.scan(b"a 1\nb 2\na 3\n", None, table, True)
    assert table.skeletons == ["a 0", "b 0"]
    table.clear()
    assert len(table) == 0
    _, ids, *_ = mod.scan(b"b 5\n", None, table, True)
    assert np.frombuffer(ids, dtype=np.int32).tolist() == [0]


@needs_native
@pytest.mark.parametrize("seed", range(3))
def test_scan_times_equal_numpy_times(seed):
    for lines in _blocks(100 + seed):
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            continue
        block = ("\n".join(lines) + "\n").encode()
        expected = BulkTimes().compute(lines, TimestampParser(), block)
        _, _, times, years, flags = mod.scan(block, None, mod.SkeletonTable(), True)
        flags = np.frombuffer(flags, dtype=np.uint8)
        iso = (flags & mod.FLAG_ISO) != 0
        out = np.frombuffer(times, dtype=np.float64).copy()
        got = BulkTimes.resolve(out, iso, (flags & mod.FLAG_HARD) != 0, np.frombuffer(years, dtype=np.int32), lines,
                                TimestampParser())
        np.testing.assert_array_equal(got, expected)


def test_scanned_lines_decode_on_demand():
    block = b"first\nsecond line\nthird\n"
    lines = native.ScannedLines(block, np.array([0, 6, 18, 24], dtype=np.int64))
    assert len(lines) == 3
    assert lines[1] == "second line"
    assert lines[-1] == "third"
    assert list(lines) == ["first", "second line", "third"]


def test_key_ids_map_skeletons_to_shared_keys():
    keys = native.KeyIds()
    keys.add_skeletons(["k1", "k2", "k1"], np.array([1, 0, 1], dtype=np.int8))
    keys.add_skeletons(["k2"], np.array([-1], dtype=np.int8))
    assert keys.names == ["k1", "k2"]
    assert keys.of_skeleton.tolist() == [0, 1, 0, 1]
    assert keys.candidate.tolist() == [1, 0, 1, -1]
    assert keys.skeletons_done == 4


ID_TOKENS = ["0x1f", "0x", "0xg1", "x0x1f", "0X1f", "_deadbeef12", "deadbeef12_", "deadbeef12", "deadbeef", "12345678",
             "abcdefab", "f114b259-2e1a-8b3c-4d5e-0123456789ab", "f114b259-2e1a-8b3c-4d5e-0123456789abc",
             "af114b259-2e1a-8b3c-4d5e-0123456789ab", "F114B259-2E1A-8B3C-4D5E-0123456789AB-x", "1-2", "A100",
             "<HEX>", "<NODE>", "gpu-node-7", "E0216", "0x0x1f", "aaaa-bbbb-cccc-dddd"]


def _python_pre_mask(text: str) -> str:
    """The uuid and hex rules, as the Masker applies them: one after the other."""
    from l4diag.fastmap import HEX_RULE_PY, UUID_RULE_PY

    return re.sub(HEX_RULE_PY, "<HEX>", re.sub(UUID_RULE_PY, "<UUID>", text))


@needs_native
@pytest.mark.parametrize("seed", range(3))
def test_pre_mask_equals_the_uuid_and_hex_rules(seed):
    rng = random.Random(seed)
    table = mod.SkeletonTable()
    for _ in range(300):
        seps = [" ", "-", ":", "=", "/", "", ".", "_", "(", "<"]
        text = "".join(rng.choice(ID_TOKENS) + rng.choice(seps) for _ in range(rng.randint(1, 8))).strip() or "x"
        _, ids, _, _, flags = mod.scan((text + "\n").encode(), b"gpu-node-7", table, True, True)
        expected = _python_pre_mask(text.replace("gpu-node-7", "<NODE>")).translate(DIGITS_STR)
        assert table.skeletons[np.frombuffer(ids, dtype=np.int32)[0]] == expected, text
        masked = expected != text.replace("gpu-node-7", "<NODE>").translate(DIGITS_STR)
        assert bool(flags[0] & mod.FLAG_PRE_MASKED) == masked, text


@needs_native
@pytest.mark.parametrize("node", [b"a", b"ab", b"abc"])
def test_short_node_names_that_fill_a_line(node):
    # every byte of the line is the node: the skeleton is 6x the line for a 1-byte node
    line = node * 500 + b" 0x1 0x2 0x3"
    table = mod.SkeletonTable()
    _, ids, *_ = mod.scan(line + b"\n", node, table, True, True)
    expected = _python_pre_mask(line.decode().replace(node.decode(), "<NODE>")).translate(DIGITS_STR)
    assert table.skeletons[np.frombuffer(ids, dtype=np.int32)[0]] == expected


@pytest.mark.parametrize("piece, node, may", [
    ("step", None, False),
    ("iteration", None, False),  # inside, 'e' and 'a' are id characters, but no id can end there
    ("checkpoint from", None, False),  # an id ending in "c" would need a non-word character after it
    ("checkpoint from", "heckpoint", True),  # ... or the node name, which the scanner cuts out first
    ("checkpoint from", "heckpoint-7", False),  # (a node that cannot go on as the piece does)
    ("ab:", None, True),  # "...ab" then ":" can end an id
    (":ab", None, True),
    ("ab-step", None, True),  # "-" ends a hex id
    ("ca_t", None, False),  # "_" is a word character: no id ends before it
    ("0xff", None, True),  # holds an id whole
    ("to deadbeef1", None, True),
    ("cafe", None, True),  # all id characters
    ("done.", "x.done", False),
])
def test_which_marker_pieces_may_overlap_an_id(piece, node, may):
    assert piece_may_overlap_id(piece, node) is may


@needs_native
@pytest.mark.parametrize("node", ["gpu-node-7", "cafe01", "heckpoint", "raining", "training-x"])
def test_an_id_line_whose_skeleton_lacks_what_markers_need_matches_no_marker(node):
    # the shortcut of Folder._id_skeletons_may_hold_markers, on marker examples with ids and the
    # node name put next to and inside their words
    rules = load_rules()
    markers = [*rules.iterations, *rules.stages]
    examples = [r.example for r in markers if r.example.isascii()]  # the scanner reads ASCII blocks
    needs = MarkerNeeds.of(Markers.from_rules(rules)).id_blind(node)
    if needs is None:
        pytest.skip("no id-blind clause for some rule with this node name")
    rng = random.Random(node)
    table = mod.SkeletonTable()
    checked = 0
    for _ in range(3000):
        text = rng.choice(examples)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(text))
            token = rng.choice(ID_TOKENS + [node, " " + node, "0xdeadbeef ", " f114b259-2e1a-8b3c-4d5e-0123456789ab"])
            text = text[:at] + token + text[at:]
        _, ids, _, _, flags = mod.scan((text + "\n").encode(), node.encode(), table, True, True)
        if not flags[0] & mod.FLAG_PRE_MASKED or flags[0] & mod.FLAG_LITERAL_NODE:
            continue
        skeleton = table.skeletons[np.frombuffer(ids, dtype=np.int32)[0]]
        if any(r.pattern.search(text) for r in markers):
            checked += 1
            assert needs.may_match(skeleton.replace("<NODE>", node.translate(DIGITS_STR)), zeroed=True), text
    assert checked > 200
# The C code reads lines in 16-byte chunks, two a step (with looks 1 byte back and up to 10 ahead),
# and blocks 16 to 64 bytes a step; it takes lines near a block's end, and its first line, the
# byte-by-byte way: the tests below put every kind of byte the scanner looks for at every offset
# around those edges.

EDGE_TOKENS = ID_TOKENS + ["]:[", "5x", "9X", "0x", "<", "gpu-node-7", "gp", "2024-05-01 10:00:00,5", "a-bcde-fghi-j"]


def _expected_skeleton(text: str, node: str | None, zero_digit_x: bool, pre_mask: bool) -> str:
    keep_digits = not zero_digit_x and re.search(r"[1-9][xX]", text)
    if node is not None:
        text = text.replace(node, "<NODE>")
    if pre_mask:
        text = _python_pre_mask(text)
    return text if keep_digits else text.translate(DIGITS_STR)


def _edge_lines(rng: random.Random, count: int) -> list:
    lines = []
    for _ in range(count):
        pad = "a" * rng.randint(0, 40)  # moves the token across chunk boundaries
        sep = rng.choice([" ", "", "=", "-", ":"])
        text = pad + sep + sep.join(rng.choice(EDGE_TOKENS) for _ in range(rng.randint(1, 3)))
        lines.append(text[: rng.randint(1, 80)] if rng.random() < 0.3 else text)
    return [ln for ln in lines if ln.strip()]


@needs_native
@pytest.mark.parametrize("node", [None, "gpu-node-7", "gp"])
@pytest.mark.parametrize("zero_digit_x", [False, True])
@pytest.mark.parametrize("pre_mask", [False, True])
def test_scan_at_chunk_and_block_edges(node, zero_digit_x, pre_mask):
    rng = random.Random(f"{node}{zero_digit_x}{pre_mask}")
    table = mod.SkeletonTable()
    for _ in range(60):
        lines = _edge_lines(rng, rng.randint(1, 30))
        if not lines:
            continue
        block = ("\n".join(lines) + "\n").encode()
        starts, ids, _, _, flags = mod.scan(block, None if node is None else node.encode(), table, zero_digit_x,
                                            pre_mask)
        assert list(native.ScannedLines(block, np.frombuffer(starts, dtype=np.int64))) == lines
        for text, sid, flag in zip(lines, np.frombuffer(ids, dtype=np.int32).tolist(), flags):
            expected = _expected_skeleton(text, node, zero_digit_x, pre_mask)
            assert table.skeletons[sid] == expected, text
            assert bool(flag & mod.FLAG_LITERAL_NODE) == ("<NODE>" in text)
            if pre_mask:
                unmasked = _expected_skeleton(text, node, zero_digit_x, False)
                assert bool(flag & mod.FLAG_PRE_MASKED) == (expected != unmasked), text


@needs_native
@pytest.mark.parametrize("length", [15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65])
def test_scan_lines_of_chunk_lengths(length):
    # each kind of token ending exactly at, one before and one past a 16-byte boundary
    table = mod.SkeletonTable()
    for token in EDGE_TOKENS:
        for shift in range(-2, 3):
            head = "b" * max(length - len(token) + shift, 0)
            lines = [head + token, token + head, "q" * length, head + token]
            block = ("\n".join(lines) + "\n").encode()
            _, ids, _, _, _ = mod.scan(block, b"gpu-node-7", table, False, True)
            got = [table.skeletons[i] for i in np.frombuffer(ids, dtype=np.int32).tolist()]
            assert got == [_expected_skeleton(t, "gpu-node-7", False, True) for t in lines], lines


@needs_native
@pytest.mark.parametrize("seed", range(3))
def test_a_piece_that_cannot_overlap_an_id_survives_in_the_skeleton(seed):
    # the lemma behind piece_may_overlap_id: with the node put back, the skeleton (ids masked,
    # digits zeroed) holds every such piece the line holds
    rng = random.Random(seed)
    table = mod.SkeletonTable()
    alphabet = "abcdefxX019-_:. hst"
    checked = 0
    for _ in range(4000):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
        cut = rng.randint(1, 2)
        if rng.random() < 0.5:  # an id that ends inside the piece, then the node going on as the piece does
            node = rng.choice(["gpu-node-7", "cafe-2", piece[cut:] + "-9", piece[cut:]])
            glued = "0x1" + piece[:cut] + node
        else:  # the node, then an id that starts inside the piece
            node = rng.choice(["gpu-node-7", "cafe-2", "n-" + piece[:-cut], piece[:-cut]])
            glued = node + piece[-cut:] + "deadbeef1 "
        parts = [rng.choice([piece, glued])] + [rng.choice(ID_TOKENS + [node, "0xdead", "beef12345", "x", ":", "-", " "])
                                                for _ in range(rng.randint(1, 4))]
        rng.shuffle(parts)
        text = "".join(parts)
        replaced = node if len(node) >= 3 else None  # as Folder: a shorter node name is not replaced
        _, ids, _, _, flags = mod.scan((text + "\n").encode(), replaced and replaced.encode(), table, True, True)
        if piece not in text or flags[0] & mod.FLAG_LITERAL_NODE or piece_may_overlap_id(piece, replaced):
            continue
        skeleton = table.skeletons[np.frombuffer(ids, dtype=np.int32)[0]]
        if replaced:
            skeleton = skeleton.replace("<NODE>", node.translate(DIGITS_STR))
        assert piece.translate(DIGITS_STR) in skeleton, (piece, node, text)
        checked += 1
    assert checked > 500


@needs_native
@pytest.mark.parametrize("seed", range(3))
def test_scan_times_at_chunk_edges(seed, monkeypatch):
    # "]:[" moves lines from the ISO test to TimestampParser, at any offset; a short line is read
    # as if followed by newlines. The flags must be numpy's masks themselves: TimestampParser often
    # reads a line to the same time either way.
    masks = {}
    resolve = BulkTimes.resolve

    def spy(out, iso, maybe, y, texts, parser):
        masks.update(iso=iso.tolist(), maybe=maybe.tolist())
        return resolve(out, iso, maybe, y, texts, parser)

    monkeypatch.setattr(BulkTimes, "resolve", staticmethod(spy))
    rng = random.Random(seed)
    stamps = ["2024-05-01 10:00:00,5 ", "[2024-05-01T10:00:00.25] ", "E0216 10:00:00.5 ", "May 3 ", "Mayday "]
    for _ in range(30):
        lines = []
        for _ in range(rng.randint(1, 20)):
            stamp = rng.choice(stamps)
            if rng.random() < 0.3:  # cut short, so that the line ends inside the parts line_time reads
                lines.append(stamp[: rng.randint(1, len(stamp))].strip() or "x")
                continue
            lines.append(stamp + "c" * rng.randint(0, 40) + rng.choice(["]:[", "]:", ":[", "] :[", ""]) + " end")
        block = ("\n".join(lines) + "\n").encode()
        expected = BulkTimes().compute(lines, TimestampParser(), block)
        _, _, times, years, flags = mod.scan(block, None, mod.SkeletonTable(), True)
        flags = np.frombuffer(flags, dtype=np.uint8)
        iso = (flags & mod.FLAG_ISO) != 0
        hard = (flags & mod.FLAG_HARD) != 0
        assert iso.tolist() == masks["iso"] and hard.tolist() == masks["maybe"], lines
        got = BulkTimes.resolve(np.frombuffer(times, dtype=np.float64).copy(), iso, hard,
                                np.frombuffer(years, dtype=np.int32), lines, TimestampParser())
        np.testing.assert_array_equal(got, expected)


@needs_native
def test_scan_counts_lines_past_a_byte_counter_wrap():
    # newlines are counted in 8-bit lanes, 64 bytes a step: a block of them overflows a lane
    for size in (4079, 4080, 4096, 4097, 9000):
        starts, ids, *_ = mod.scan(b"\n" * size, None, mod.SkeletonTable(), True)
        assert len(ids) == size * 4 and len(starts) == (size + 1) * 8


@needs_native
def test_clean_check_at_every_offset():
    # one odd byte, blank or empty line at each position across several 16-byte chunks
    rng = random.Random(5)
    for size in (15, 16, 17, 40, 100):
        lines = ["w" * rng.randint(1, 20) for _ in range(size // 5 + 1)]
        base = ("\n".join(lines) + "\n").encode()
        for at in range(len(base)):
            for odd in (b"\x01", b"\x7f", b"\xc3", b"\t", b"\r", b"\n", b" \n", b"\n \t"):
                block = base[:at] + odd + base[at:]
                count = mod.count_clean_lines(block, 1000)
                parts = _clean_parts(block, 1000)
                if block.isascii() and block.endswith(b"\n"):
                    assert count == (-1 if parts is None else len(parts)), (block, count)
                else:
                    assert count == -1
    long = ("\n".join(["y" * 250, "z" * 251, "y"]) + "\n").encode()
    assert mod.count_clean_lines(long, 1004) == 3  # 251 * 4 bytes: just short enough
    assert mod.count_clean_lines(long, 1003) == -1


@needs_native
@pytest.mark.parametrize("node", ["g", "gp", "gpu", "gpu-n", "gpu-node-7", "gpu-node-7-long-name", "deadbeef12", "n0x1f",
                                  "12345678", "ab-0x"])
def test_pre_mask_after_node_names_of_every_length(node):
    # scan looks for ids from where the line's first id could start, moved by the "<NODE>"s before it;
    # node names that hold (part of) an id themselves cover that place
    rng = random.Random(node)
    table = mod.SkeletonTable()
    pieces = [node, node, "0x1", "0xa", "deadbeef12", "f114b259-2e1a-8b3c-4d5e-0123456789ab", "x", "7", "ab"]
    for _ in range(200):
        lines = ["padding line " + "p" * rng.randint(0, 20)]  # so that the lines below are not a block's first
        for _ in range(rng.randint(1, 8)):
            lines.append("".join(rng.choice(pieces) + rng.choice([" ", "", "=", "-", ":"]) for _ in range(rng.randint(1, 6))))
        lines.append("q" * 30)  # nor its last
        block = ("\n".join(lines) + "\n").encode()
        _, ids, *_ = mod.scan(block, node.encode(), table, True, True)
        got = [table.skeletons[i] for i in np.frombuffer(ids, dtype=np.int32).tolist()]
        assert got == [_expected_skeleton(t, node, True, True) for t in lines]
