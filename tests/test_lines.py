"""Bytes become clean lines; every line is counted."""

import io

import pytest

from l4diag.lines import LineStats, TimestampParser, detect_prefix_kind, iter_text_lines, line_body, split_prefix


def read(data: bytes, cap: int = 1 << 20):
    stats = LineStats()
    lines = list(iter_text_lines(io.BytesIO(data), stats, cap))
    assert stats.read == stats.parsed + sum(stats.skipped.values())
    return lines, stats


def test_invalid_utf8_is_replaced_not_fatal():
    lines, stats = read(b"ok line\nbad \xff\xfe byte\n")
    assert [t for _, t in lines] == ["ok line", "bad \ufffd\ufffd byte"]
    assert stats.invalid_utf8_lines == 1


def test_ansi_and_control_characters_are_stripped():
    lines, _ = read(b"\x1b[31mERROR\x1b[0m boom\x07\n")
    assert lines == [(1, "ERROR boom")]


def test_carriage_returns_end_lines_and_blank_lines_are_counted():
    lines, stats = read(b"a\r\nb\rc\n\n\n")
    assert [t for _, t in lines] == ["a", "b", "c"]
    assert stats.skipped["blank"] == 2
    assert stats.read == 5


def test_long_lines_are_truncated_and_counted():
    data = b"x" * 5000 + b"\nshort\n"
    lines, stats = read(data, cap=1000)
    assert len(lines[0][1]) == 1000
    assert lines[1] == (2, "short")
    assert stats.truncated_lines == 1


def test_last_line_without_newline_is_kept():
    lines, stats = read(b"one\ntwo")
    assert [t for _, t in lines] == ["one", "two"]
    assert stats.bytes == 7


def test_binary_junk_is_skipped_as_binary():
    lines, stats = read(b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12\x13\x14\x15\n" + b"fine\n")
    assert [t for _, t in lines] == ["fine"]
    assert stats.skipped["binary"] == 1


def test_utf16_with_bom_is_decoded():
    lines, _ = read("hello\nworld\n".encode("utf-16"))
    assert [t for _, t in lines] == ["hello", "world"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("2024-05-01 10:00:05,250 INFO x", 1714557605.25),
        ("[2024-05-01 10:00:05,250] [INFO] x", 1714557605.25),
        ("2024-05-01T10:00:05.5Z x", 1714557605.5),
        ("[INFO|trainer.py:3410] 2024-05-01 10:00:05,250 >> Saving model checkpoint to /out", 1714557605.25),
        ("[rank0]:[E0501 10:00:05.000000000 ProcessGroupNCCL.cpp:607] x", None),
        ("no time here", None),
    ],
)
def test_timestamps(line, expected):
    p = TimestampParser()
    got = p.parse(line)
    if expected is None and line.startswith("[rank0]"):
        assert got is not None  # glog with the year of the last full timestamp
    else:
        assert got == expected


def test_glog_and_syslog_take_year_from_last_full_timestamp():
    p = TimestampParser()
    p.parse("2024-05-01 10:00:00,000 x")
    assert p.parse("E0501 10:00:05.000000 x") == 1714557605.0
    assert p.parse("May  1 10:00:05 host kernel: x") == 1714557605.0


@pytest.mark.parametrize(
    "line, node, rest",
    [
        ("gpu-node-07: iteration 10/ 100 |", "gpu-node-07", "iteration 10/ 100 |"),
        ("12: hello", "rank12", "hello"),
        ("[rank12]: hello", "rank12", "hello"),
        ("[default3]:hello", "rank3", "hello"),
        ("[lrdn3321:3]: x", "lrdn3321", "x"),
        ("RuntimeError: boom", None, "RuntimeError: boom"),
    ],
)
def test_prefixes(line, node, rest):
    _, got_node, got_rest = split_prefix(line, None)
    assert (got_node, got_rest) == (node, rest)


def test_combined_file_detection_needs_most_lines_prefixed():
    assert detect_prefix_kind(["a-1: x", "a-2: y", "a-1: z"]) == "host"
    assert detect_prefix_kind(["RuntimeError: x", "ValueError: y", "plain"]) is None
    assert detect_prefix_kind(["[rank0]: x", "[rank1]: y"]) == "rank"


def test_line_body_drops_the_timestamp_and_the_rank_tag_glued_to_it():
    assert line_body("2024-01-10T01:22:46.341056Z [rank7]: AttributeError: x") == "[rank7]: AttributeError: x"
    assert line_body("[INFO|trainer.py:3410] 2024-05-01 10:00:05,250 >> Saving") == ">> Saving"
    assert line_body("no time here") == "no time here"
