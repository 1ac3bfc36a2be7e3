"""Hostile and broken input, end to end through the CLI: no traceback, the right exit code, every line
counted, nothing from the logs acting as markup.

Every input is generated here (no committed binaries). Property-based tests are bounded so the module
runs in well under 30 s; for a longer fuzz run: ``L4DIAG_FUZZ_EXAMPLES=2000 pytest tests/test_hostile.py``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import re
import lzma
import os
import socket
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l4diag.cli import cli
from l4diag.lines import LineStats, collapse_warnings, iter_text_lines
from runs import CULPRIT, XID_LINE, _compress, write_layout

FUZZ_EXAMPLES = int(os.environ.get("L4DIAG_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_EXAMPLES <= 20,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- helpers -----------------------------------------------------------------------------------


def invoke(*args, input=None, timeout=60):
    """Run ``l4diag diagnose ARGS -j 1`` in-process; fail on a traceback or a hang."""
    runner = CliRunner()
    box = {}

    def target():
        box["result"] = runner.invoke(cli, ["diagnose", "-j", "1", *map(str, args)], input=input)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"l4diag hung on {args}"
    result = box["result"]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exception escaped: {result.exception!r}") from result.exception
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return result


def report_of(result, validate_report) -> dict:
    assert result.exit_code in (0, 1), result.stderr
    return validate_report(json.loads(result.stdout))


def assert_usage_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout[:500])
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("l4diag: error: "), result.stderr
    return lines[0]


@pytest.fixture
def run(tmp_path) -> Path:
    """A failed 8-node run, one file per node."""
    return write_layout(tmp_path / "run", "file-per-node")


def good_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


# --- inputs that are not there or not files ---------------------------------------------------


def test_empty_file_alone_exits_2(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    line = assert_usage_error(invoke(empty))
    assert "empty" in line


def test_empty_directory_alone_exits_2(tmp_path):
    (tmp_path / "nothing").mkdir()
    line = assert_usage_error(invoke(tmp_path / "nothing"))
    assert "empty_directory" in line


def test_missing_path_beside_a_good_run_is_reported(run, tmp_path, validate_report):
    result = invoke(run, tmp_path / "missing", "-f", "json")
    report = report_of(result, validate_report)
    assert result.exit_code == 1
    assert report["input"]["inputs_skipped"] == {"missing": 1}
    assert any("missing" in w and "no such file" in w for w in report["input"]["warnings"])
    assert report["diagnosis"]["node"] == CULPRIT


def test_unreadable_file_is_skipped_and_counted(run, validate_report, monkeypatch):
    # chmod 000 does not stop root, so simulate the permission error where the file is opened.
    import builtins

    import l4diag.sources as sources

    victim = run / "gpu-node-01.log"
    real_open = builtins.open

    def guarded(path, *a, **k):
        if str(path) == str(victim):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(sources, "open", guarded, raising=False)
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["inputs_skipped"] == {"unreadable": 1}
    assert any("gpu-node-01.log" in w and "Permission denied" in w for w in report["input"]["warnings"])
    assert report["input"]["nodes"] == 7


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files")
def test_chmod_000_file_is_skipped(run, validate_report):
    victim = run / "gpu-node-01.log"
    victim.chmod(0)
    try:
        report = report_of(invoke(run, "-f", "json"), validate_report)
    finally:
        victim.chmod(0o644)
    assert report["input"]["inputs_skipped"].get("unreadable") == 1


def test_symlink_loops_are_skipped(run, validate_report):
    (run / "loop").symlink_to(run, target_is_directory=True)  # directory loop
    (run / "self.log").symlink_to(run / "self.log")  # a link to itself
    (run / "dangling.log").symlink_to(run / "gone.log")
    report = report_of(invoke(run, "-f", "json"), validate_report)
    skipped = report["input"]["inputs_skipped"]
    assert skipped["symlink_loop"] == 2 and skipped["missing"] == 1
    assert report["input"]["nodes"] == 8


def test_fifo_socket_and_device_are_never_opened(run, tmp_path, validate_report):
    fifo = run / "pipe.log"
    os.mkfifo(fifo)  # opening it would block forever: invoke() fails on a hang
    sock = socket.socket(socket.AF_UNIX)
    sock_path = Path(tempfile.mkdtemp(prefix="l4s")) / "s.sock"  # AF_UNIX paths must be short
    sock.bind(str(sock_path))
    try:
        report = report_of(invoke(run, fifo, sock_path, "/dev/null", "-f", "json"), validate_report)
    finally:
        sock.close()
    assert report["input"]["inputs_skipped"] == {"not_regular_file": 4}  # fifo in the dir, fifo, socket, device
    assert report["diagnosis"]["node"] == CULPRIT


def test_only_unusable_inputs_exit_2_with_one_line(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "bin.log").write_bytes(bytes(range(256)) * 64)
    line = assert_usage_error(invoke(tmp_path / "fifo", tmp_path / "bin.log", tmp_path / "nope"))
    assert "not_regular_file: 1" in line and "missing: 1" in line


# --- bytes that are not clean text --------------------------------------------------------------


def test_invalid_utf8_and_binary_garbage_beside_good_lines(run, validate_report):
    victim = run / f"{CULPRIT}.log"
    garbage = bytes((i * 37 + 11) % 256 for i in range(20000))
    victim.write_bytes(b"\xff\xfe\xfd bad start\n" + garbage + b"\n" + victim.read_bytes())
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["skipped"].get("binary", 0) >= 1
    assert any("invalid UTF-8" in w for w in report["input"]["warnings"])
    assert report["diagnosis"]["node"] == CULPRIT


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_files_with_and_without_bom(run, validate_report, encoding):
    victim = run / f"{CULPRIT}.log"
    text = victim.read_text()
    victim.write_bytes(text.encode(encoding))
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["diagnosis"]["node"] == CULPRIT
    assert any(XID_LINE in e["text"] for e in report["diagnosis"]["evidence"])
    assert report["input"]["skipped"].get("binary", 0) == 0


def test_nul_padding_from_a_full_disk_separates_lines(run, validate_report):
    victim = run / f"{CULPRIT}.log"
    lines = victim.read_text().splitlines(keepends=True)
    # a partial line, then a block of NULs, then the log resumes (the culprit's last lines)
    data = "".join(lines[:-2]).encode() + b"2024-05-01 10:03:00,000 partial li" + b"\x00" * 70000 + "".join(lines[-2:]).encode()
    victim.write_bytes(data)
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["diagnosis"]["node"] == CULPRIT
    assert any("NUL bytes" in w for w in report["input"]["warnings"])


def test_line_endings_cr_only_and_mixed():
    stats = LineStats()
    lines = list(iter_text_lines(io.BytesIO(b"a\rb\r\nc\nd\n\re"), stats))
    assert [t for _, t in lines] == ["a", "b", "c", "d", "e"]
    assert stats.read == 6 and stats.skipped["blank"] == 1


def test_crlf_split_across_read_blocks_is_one_line_end(monkeypatch):
    import l4diag.lines as lines_mod

    monkeypatch.setattr(lines_mod, "READ_BLOCK", 4)
    stats = LineStats()
    lines = list(iter_text_lines(io.BytesIO(b"abc\r\ndefgh\r\nij"), stats))
    assert [t for _, t in lines] == ["abc", "defgh", "ij"]
    assert stats.read == 3


def test_huge_single_line_is_truncated_never_loaded_whole(run, validate_report, monkeypatch):
    import l4diag.lines as lines_mod

    monkeypatch.setattr(lines_mod, "READ_BLOCK", 1 << 16)
    victim = run / f"{CULPRIT}.log"
    original = victim.read_bytes()
    head, tail = original.rsplit(b"\n", 3)[0], b"\n".join(original.rsplit(b"\n", 3)[1:])
    victim.write_bytes(head + b"\ntensor([" + b"0.1234, " * 1_000_000 + b"])\n" + tail)  # ~8 MB, one line
    report = report_of(invoke(run, "-f", "json", "--max-line-bytes", "4096"), validate_report)
    assert report["input"]["lines_truncated"] == 1
    assert any("longer than 4096 bytes truncated" in w for w in report["input"]["warnings"])
    assert report["input"]["lines_read"] == sum(good_lines(p) for p in run.iterdir())
    assert report["diagnosis"]["node"] == CULPRIT


def test_long_line_memory_is_bounded(monkeypatch):
    import l4diag.lines as lines_mod

    monkeypatch.setattr(lines_mod, "READ_BLOCK", 1000)
    seen = []

    class Spy(io.BytesIO):
        def read1(self, n=-1):
            data = super().read1(n)
            seen.append(len(data))
            return data

    stats = LineStats()
    lines = list(iter_text_lines(Spy(b"x" * 200_000 + b"\nafter\n"), stats, 100))
    assert [len(t) for _, t in lines] == [100, 5]
    assert max(seen) <= 1000 and stats.truncated_lines == 1


# --- compressed files and archives --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst"])
def test_truncated_compressed_stream_keeps_what_was_read(tmp_path, validate_report, kind):
    run = write_layout(tmp_path / "run", kind)
    victim = next(run.glob(f"{CULPRIT}.log.*"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["streams_incomplete"] == {"truncated_stream": 1}
    assert any(victim.name in w and "ended early" in w for w in report["input"]["warnings"])
    assert report["input"]["nodes"] == 8
    others = sum(good_lines(Path(str(p))) for p in write_layout(tmp_path / "plain", "file-per-node").iterdir()
                 if not p.name.startswith(CULPRIT))
    culprit = good_lines(tmp_path / "plain" / f"{CULPRIT}.log")
    if kind in ("bz2", "zst"):  # bzip2 decodes whole 900 KB blocks; pyarrow's zstd drops its last 64 KB read
        assert others <= report["input"]["lines_read"] < others + culprit
    else:
        assert others < report["input"]["lines_read"] < others + culprit


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst"])
def test_corrupt_compressed_stream_is_not_fatal(tmp_path, validate_report, kind):
    run = write_layout(tmp_path / "run", kind)
    victim = next(run.glob(f"{CULPRIT}.log.*"))
    data = bytearray(victim.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    victim.write_bytes(bytes(data))
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["nodes"] >= 7


def test_gzip_with_a_broken_second_member(run, validate_report):
    victim = run / f"{CULPRIT}.log"
    text = victim.read_bytes()
    gz = run / f"{CULPRIT}.log.gz"
    gz.write_bytes(gzip.compress(text) + b"\x1f\x8b\x08\x00garbage")
    victim.unlink()
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["streams_incomplete"] == {"truncated_stream": 1}
    assert report["diagnosis"]["node"] == CULPRIT


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "zip", "tgz", "tar.xz"])
def test_garbage_archive_alone_exits_2(tmp_path, suffix):
    bad = tmp_path / f"run.{suffix}"
    bad.write_bytes(b"this is not an archive\n" * 50)
    line = assert_usage_error(invoke(bad))
    assert "broken_archive" in line


@pytest.mark.parametrize("layout", ["tar", "tar.gz", "zip"])
def test_truncated_archive_keeps_the_members_read(tmp_path, validate_report, layout):
    path = write_layout(tmp_path / "run", layout)
    data = path.read_bytes()
    cut = data.find(b"gpu-node-04.log") + 700 if layout == "tar" else len(data) * 3 // 4
    path.write_bytes(data[:cut])
    result = invoke(path, "-f", "json")
    if layout == "zip":  # no central directory: nothing usable, one clear line
        assert "broken_archive" in assert_usage_error(result)
        return
    report = report_of(result, validate_report)
    assert report["input"]["inputs_skipped"].get("broken_archive") == 1 or report["input"]["streams_incomplete"]
    assert 4 <= report["input"]["nodes"] <= 8


def _tar(path: Path, members: list) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_tar_with_hostile_member_names_is_never_extracted(tmp_path, validate_report, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = write_layout(tmp_path / "src", "file-per-node")
    members = [_file(f"run/{p.name}", p.read_bytes()) for p in sorted(lines.iterdir())]
    members.append(_file("/etc/l4diag-abs.log", b"2024-05-01 10:00:00,000 absolute path member\n"))
    members.append(_file("../../escape.log", b"2024-05-01 10:00:00,000 dot-dot member\n"))
    members.append(_file("run/\x1b[31mred\x1b[0m\nnode.log", b"2024-05-01 10:00:00,000 control chars in name\n"))
    link = tarfile.TarInfo("run/passwd.log")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("run/hard.log")
    hard.type, hard.linkname = tarfile.LNKTYPE, "run/gpu-node-00.log"
    dev = tarfile.TarInfo("run/dev.log")
    dev.type = tarfile.CHRTYPE
    fifo = tarfile.TarInfo("run/fifo.log")
    fifo.type = tarfile.FIFOTYPE
    members += [(link, None), (hard, None), (dev, None), (fifo, None)]
    archive = _tar(tmp_path / "hostile.tar.gz", members)
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    report = report_of(invoke(archive, "-f", "json"), validate_report)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written
    assert not Path("/etc/l4diag-abs.log").exists() and not (tmp_path.parent / "escape.log").exists()
    inp = report["input"]
    assert inp["inputs_skipped"] == {"archive_link": 2, "archive_special": 2}
    text = json.dumps(report)
    assert "\\u001b" not in text, text[text.find("\\u001b") - 200:][:300]
    assert "'etc/passwd' never followed" in text  # link target named (sanitized), never followed
    for w in inp["warnings"]:
        assert w.isprintable() and "!/" not in w and "../" not in w
    assert report["diagnosis"]["node"] == CULPRIT
    assert inp["lines_read"] == sum(good_lines(p) for p in lines.iterdir()) + 3


def test_zip_with_hostile_members(tmp_path, validate_report):
    src = write_layout(tmp_path / "src", "file-per-node")
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.iterdir()):
            zf.writestr(f"run/{p.name}", p.read_bytes())
        zf.writestr("/run/../../x.log", b"absolute and dot-dot\n")
        link = zipfile.ZipInfo("run/link.log")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    report = report_of(invoke(path, "-f", "json"), validate_report)
    assert report["input"]["inputs_skipped"] == {"archive_link": 1}
    assert report["diagnosis"]["node"] == CULPRIT
    assert all("../" not in w for w in report["input"]["warnings"])


def test_decompression_bomb_per_stream(run, validate_report):
    bomb = run / "gpu-node-99.log.gz"
    line = b"2024-05-01 10:00:00,000 INFO all good " + b"x" * 4000 + b"\n"
    bomb.write_bytes(gzip.compress(line * 10_000, compresslevel=1))  # 40 MB -> ~200 KB
    report = report_of(invoke(run, "-f", "json", "--max-decompressed-bytes", "1M"), validate_report)
    inp = report["input"]
    assert inp["streams_incomplete"] == {"decompression_cap": 1}
    assert any("gpu-node-99" in w and "--max-decompressed-bytes" in w for w in inp["warnings"])
    assert inp["bytes_read"] < sum(p.stat().st_size for p in run.glob("*.log")) + (1 << 20) + 1
    assert report["diagnosis"]["node"] == CULPRIT


def test_decompression_bomb_in_an_archive_member_and_in_total(tmp_path, validate_report):
    src = write_layout(tmp_path / "src", "file-per-node")
    members = [_file(f"run/{p.name}", p.read_bytes()) for p in sorted(src.iterdir())]
    filler = (b"2024-05-01 10:00:00,000 INFO filler line " + b"x" * 4000 + b"\n") * 400  # 1.6 MB per member
    members += [_file(f"run/zz-bomb-{i}.log", filler) for i in range(4)]
    archive = _tar(tmp_path / "bomb.tar.gz", members)
    result = invoke(archive, "-f", "json", "--max-decompressed-bytes", "512K", "--max-total-decompressed-bytes", "6M")
    report = report_of(result, validate_report)
    inp = report["input"]
    # three members capped at 512K each; the 4th runs into the total cap (skipped data counts towards it)
    assert inp["streams_incomplete"] == {"decompression_cap": 4}
    assert inp["inputs_skipped"].get("decompression_cap") == 1
    assert inp["bytes_read"] <= 6 << 20
    assert any("--max-total-decompressed-bytes" in w for w in inp["warnings"])
    assert report["diagnosis"]["node"] == CULPRIT


def test_bad_size_option_exits_2(run):
    result = invoke(run, "--max-decompressed-bytes", "lots")
    assert result.exit_code == 2 and "not a size" in result.stderr


# --- accounting and warnings --------------------------------------------------------------------


def test_many_empty_streams_give_one_warning(tmp_path, validate_report):
    run = write_layout(tmp_path / "run", "dir-per-node")  # every node has an empty stderr.log
    for i in range(8, 128):
        (run / f"gpu-node-{i:03d}").mkdir()
        (run / f"gpu-node-{i:03d}" / "stderr.log").write_bytes(b"")
    report = report_of(invoke(run, "-f", "json"), validate_report)
    inp = report["input"]
    assert inp["inputs_skipped"] == {"empty": 128}
    empty = [w for w in inp["warnings"] if "empty" in w]
    assert len(empty) == 1 and "128 streams" in empty[0] and "and 123 more" in empty[0]


def test_collapse_warnings_keeps_singletons_and_order():
    ws = ["a: empty", "x: other", "b: empty", "c: empty", "y: stream ended early: EOFError"]
    assert collapse_warnings(ws) == ["empty (3 streams: a, b, c)", "x: other", "y: stream ended early: EOFError"]


# --- output safety --------------------------------------------------------------------------------

HOSTILE_TEXT = (
    "RuntimeError: [bold red]boom[/] [link=http://evil]x[/link] \x1b[2J\x1b]0;pwned\x07 <script>alert(1)</script> "
    "<img src=x onerror=alert(1)> | a | b | ``` `code` ** _x_ \u202etxt.exe\u202c \x9b31m &amp;"
)


@pytest.fixture
def hostile_run(tmp_path):
    run = write_layout(tmp_path / "run", "file-per-node")
    victim = run / f"{CULPRIT}.log"
    victim.write_bytes(victim.read_bytes() + f"2024-05-01 10:03:03,100 {HOSTILE_TEXT}\n".encode())
    evil_name = run / "gpu-node-08\x1b[31m<b>|`x`".replace("/", "")
    evil_name = Path(str(evil_name) + ".log")
    evil_name.write_text("2024-05-01 10:00:00,000 INFO building GPT model\n")
    return run


def test_text_report_is_literal(hostile_run):
    for color in ("--color", "--no-color"):
        out = invoke(hostile_run, color, "--explain").stdout
        assert "[bold red]boom[/]" in out and "[link=http://evil]" in out
        assert "\x07" not in out and "\x9b" not in out and "\u202e" not in out
        assert "\x1b]" not in out and "\x1b[2J" not in out
        if color == "--no-color":
            assert "\x1b" not in out


def test_json_report_is_literal(hostile_run, validate_report):
    result = invoke(hostile_run, "-f", "json")
    raw = result.stdout
    assert "\x1b" not in raw and "\x07" not in raw and "\x9b" not in raw and "\u202e" not in raw
    report = report_of(result, validate_report)
    texts = [e["text"] for e in report["diagnosis"]["evidence"]] + [t["example"]["text"] for t in report["templates"]]
    assert any("[bold red]boom[/]" in t and "<script>alert(1)</script>" in t for t in texts)


def test_markdown_report_is_literal(hostile_run):
    out = invoke(hostile_run, "-f", "markdown").stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    fence_lines = [i for i, line in enumerate(out.splitlines()) if line.startswith("```")]
    lines = out.splitlines()
    outside = [line for i, line in enumerate(lines)
               if not (fence_lines and fence_lines[0] < i < (fence_lines[1] if len(fence_lines) > 1 else 10**9))]
    for line in outside:
        assert "<script" not in line and "<img" not in line and "<b>" not in line
        if line.startswith("| ") and "boom" in line:
            assert line.count("|") - line.count("\\|") == 6  # pipes in log text escaped: 5 cells
    if fence_lines:
        fence = lines[fence_lines[0]].rstrip("text")
        body = "\n".join(lines[fence_lines[0] + 1 : fence_lines[1]])
        longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
        assert len(fence) > max(longest, 2)  # longer than any backtick run inside the log text
        assert lines[fence_lines[1]] == fence


# --- rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[rule]]\nname = "mine"\ncategory = "network"\nregex = "("\nexample = "x"\n', "'mine'"),
        ('[[rule]]\nname = "slow"\ncategory = "network"\nregex = "(a+)+$"\nexample = "nope"\n', "'slow'"),
        ("[[rule]\nname=", "invalid TOML"),
        ('[[rule]]\nname = "nocat"\nregex = "x"\nexample = "x"\n', "'nocat'"),
    ],
)
def test_broken_rule_file_exits_2_naming_file_and_rule(run, tmp_path, body, needle):
    rules = tmp_path / "faults.toml"
    rules.write_text(body)
    line = assert_usage_error(invoke(run, "--rules", rules))
    assert "faults.toml" in line and needle in line


def test_catastrophic_user_regex_is_rejected_at_load(run, tmp_path):
    rules = tmp_path / "faults.toml"
    rules.write_text('[[rule]]\nname = "redos"\ncategory = "network"\nregex = "^(a+)+$"\nexample = "aaaa"\n')
    line = assert_usage_error(invoke(run, "--rules", rules))
    assert "faults.toml" in line and "'redos'" in line and "too slow" in line


def test_builtin_rules_of_every_kind_are_fast_on_adversarial_lines():
    import time

    from l4diag.rules import SPEED_PROBES, load_rules

    rules = load_rules()
    for rule in rules.all_rules():
        for probe in SPEED_PROBES:
            start = time.perf_counter()
            rule.pattern.search(probe * 2)
            assert time.perf_counter() - start < 0.5, (rule.kind, rule.name, probe[:12])


def test_rule_file_not_utf8_or_missing_exits_2(run, tmp_path):
    rules = tmp_path / "faults.toml"
    rules.write_bytes(b"\xff\xfe\x00garbage")
    assert "faults.toml" in assert_usage_error(invoke(run, "--rules", rules))
    assert "nope.toml" in assert_usage_error(invoke(run, "--rules", tmp_path / "nope.toml"))


def test_adversarial_lines_do_not_hang_the_pipeline(run, validate_report):
    victim = run / f"{CULPRIT}.log"
    evil = ["a" * 100_000, "0x" * 50_000, "[rank0]:" * 10_000 + "Error", "Xid (" * 20_000, "\t" * 50_000 + "Exception",
            "NCCL WARN " * 10_000, "1." * 50_000 + "Error"]
    victim.write_bytes(victim.read_bytes() + "".join(e + "\n" for e in evil).encode())
    report = report_of(invoke(run, "-f", "json", timeout=60), validate_report)
    assert report["input"]["lines_read"] == sum(good_lines(p) for p in run.iterdir())


# --- fuzzing ----------------------------------------------------------------------------------------


def _check_any(result, validate_report, fmt: str = "json") -> None:
    """Either a validated report with exit 0/1, or exit 2 with one clean line (other formats: 0, 1 or 2)."""
    if fmt != "json":
        assert result.exit_code in (0, 1, 2)
        return
    if result.exit_code == 2:
        assert_usage_error(result)
        return
    report_of(result, validate_report)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(tmp_path_factory, validate_report, data):
    path = tmp_path_factory.mktemp("fz") / "node-1.log"
    path.write_bytes(data)
    _check_any(invoke(path, "-f", "json"), validate_report)


TOKEN = st.one_of(
    st.sampled_from(["ERROR", "NCCL WARN", "iteration", "loss:", "[rank3]:", "gpu-node-07:", "12:", "Xid", "\x00",
                     "\r", "\x1b[31m", "[bold]", "<script>", "|", "`", "\ufffd", "\u202e", "nan", "step 5"]),
    st.text(max_size=20),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.integers(min_value=1, max_value=5000).map(lambda n: "x" * n),
)
PREFIX = st.sampled_from(["", "[rank1]:", "gpu-node-01: ", "3: ", "[default0]:", "[h:1]:", "2024-05-01 10:00:00,123 ",
                          "I0501 10:00:00.123 ", "May  1 10:00:00 ", "[2024-05-01T10:00:00Z] ", "9999-99-99 99:99:99 ",
                          "0000-01-01 00:00:00 ", "9999-12-31 23:59:59,999999 ", "1970-01-01 00:00:00 "])
LINE = st.tuples(PREFIX, st.lists(TOKEN, max_size=8)).map(lambda t: t[0] + " ".join(t[1]))
ENDING = st.sampled_from(["\n", "\r\n", "\r", "\n\n", ""])


FORMAT = st.sampled_from(["json", "json", "text", "markdown"])


@FUZZ
@given(lines=st.lists(st.tuples(LINE, ENDING), max_size=60), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
       fmt=FORMAT)
def test_fuzz_line_structures(tmp_path_factory, validate_report, lines, encoding, fmt):
    path = tmp_path_factory.mktemp("fz") / "combined.log"
    path.write_bytes("".join(a + b for a, b in lines).encode(encoding, "replace"))
    result = invoke(path, "-f", fmt)
    _check_any(result, validate_report, fmt)
    if fmt != "json":
        assert "\x1b" not in result.stdout and "\u202e" not in result.stdout


MEMBER_NAME = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(["/abs.log", "../../up.log", "a/../../b.log", ".hidden", "", "dir/", "x\x00y", "\x1b[31m.log"]),
)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(
    kind=st.sampled_from(["tar", "tar.gz", "zip"]),
    members=st.lists(st.tuples(MEMBER_NAME, st.binary(max_size=512)), max_size=6),
    cut=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_fuzz_random_archives(tmp_path_factory, validate_report, kind, members, cut):
    root = tmp_path_factory.mktemp("fz")
    path = root / f"a.{kind}"
    buf = io.BytesIO()
    try:
        if kind == "zip":
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in members:
                    zf.writestr(name or "empty-name", data)
        else:
            with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as tf:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    except (ValueError, UnicodeError, OSError, IndexError):
        return  # the writer refused the name (zipfile fails on a name like "\x00"); nothing to test
    data = buf.getvalue()
    if cut is not None:
        data = data[: int(len(data) * cut)]
    path.write_bytes(data)
    _check_any(invoke(path, "-f", "json"), validate_report)
    assert sorted(p.name for p in root.iterdir()) == [path.name]  # nothing extracted


@FUZZ
@given(kind=st.sampled_from(["gz", "bz2", "xz", "zst"]), data=st.binary(max_size=2048),
       cut=st.floats(min_value=0.0, max_value=1.0))
def test_fuzz_truncated_compressed(tmp_path_factory, validate_report, kind, data, cut):
    path = tmp_path_factory.mktemp("fz") / f"node-1.log.{kind}"
    packed = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}.get(kind, lambda d: _compress(d, "zst"))(data)
    path.write_bytes(packed[: int(len(packed) * cut)])
    _check_any(invoke(path, "-f", "json"), validate_report)


# --- stdin and the process pool -------------------------------------------------------------------


def test_binary_stdin_exits_2_with_one_line():
    line = assert_usage_error(invoke("-", input=bytes(range(256)) * 100))
    assert "binary" in line


def test_hostile_inputs_through_the_process_pool(tmp_path, validate_report):
    run = write_layout(tmp_path / "run", "gz")
    victim = next(run.glob(f"{CULPRIT}.log.*"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 8])  # lose the gzip trailer only: every line survives
    (run / "empty.log").write_bytes(b"")
    (run / "bomb.log.gz").write_bytes(gzip.compress(b"filler " * 400_000, compresslevel=1))
    os.mkfifo(run / "fifo.log")
    runner = CliRunner()
    result = runner.invoke(cli, ["diagnose", "-j", "2", str(run), "-f", "json", "--max-decompressed-bytes", "64K"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    report = report_of(result, validate_report)
    inp = report["input"]
    assert inp["streams_incomplete"] == {"truncated_stream": 1, "decompression_cap": 1}
    assert inp["inputs_skipped"] == {"empty": 1, "not_regular_file": 1}
    assert report["diagnosis"]["node"] == CULPRIT


# --- lines: encodings and padding, unit level ------------------------------------------------------


def _read(data: bytes, cap: int = 1 << 20):
    stats = LineStats()
    lines = [t for _, t in iter_text_lines(io.BytesIO(data), stats, cap)]
    assert stats.read == stats.parsed + sum(stats.skipped.values())
    return lines, stats


def test_invalid_utf16_lone_surrogate_and_odd_length():
    data = "ok line\n".encode("utf-16-le") + b"\x00\xd8" + "after\n".encode("utf-16-le") + b"x"
    lines, stats = _read(b"\xff\xfe" + data)
    assert lines[0] == "ok line" and "after" in lines[1]
    assert stats.invalid_utf8_lines >= 1


def test_file_of_only_nuls_reads_no_lines():
    lines, stats = _read(b"\x00" * 100_000)
    assert lines == [] and stats.nul_bytes == 100_000 and stats.parsed == 0


def test_utf16_long_lines_are_truncated_at_the_cap():
    lines, stats = _read(("y" * 5000 + "\nshort\n").encode("utf-16"), cap=100)
    assert lines == ["y" * 100, "short"] and stats.truncated_lines == 1


def test_ff_fe_garbage_is_not_taken_for_utf16():
    lines, stats = _read(b"\xff\xfe" + bytes(range(1, 256)) * 20 + b"\nreal line\n")
    assert lines[-1] == "real line" and stats.skipped["binary"] >= 1


FILE_NAME = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                    min_size=1, max_size=24).filter(lambda n: n not in (".", ".."))


@FUZZ
@given(files=st.lists(st.tuples(st.lists(FILE_NAME, min_size=1, max_size=3), st.binary(max_size=300)), max_size=6),
       fmt=FORMAT)
def test_fuzz_random_directory_trees(tmp_path_factory, validate_report, files, fmt):
    root = tmp_path_factory.mktemp("fz")
    for parts, data in files:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_dir():
                path.write_bytes(data)
        except OSError:
            continue  # a name the filesystem refuses, or a file where a directory should be
    result = invoke(root, "-f", fmt)
    _check_any(result, validate_report, fmt)
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr


def test_symlinks_leaving_the_input_directory_are_not_followed(run, tmp_path, validate_report):
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "shadow.log").write_text("2024-05-01 10:00:00,000 root:SECRET-HASH:19000:0:99999:7:::\n")
    (run / "gpu-node-09.log").symlink_to(secret_dir / "shadow.log")
    (run / "gpu-node-10").symlink_to(secret_dir, target_is_directory=True)
    (run / "inside.log").symlink_to(run / "gpu-node-00.log")  # inside the tree: followed
    result = invoke(run, "-f", "json")
    report = report_of(result, validate_report)
    assert "SECRET-HASH" not in result.stdout
    assert report["input"]["inputs_skipped"] == {"symlink_outside": 2}
    assert any("--follow-symlinks" in w for w in report["input"]["warnings"])
    followed = invoke(run, "-f", "json", "--follow-symlinks")
    assert report_of(followed, validate_report)["input"]["inputs_skipped"] == {}


def test_truncation_inside_a_multibyte_character_is_not_invalid_utf8():
    lines, stats = _read(("é" * 1000 + "\n").encode(), cap=101)
    assert lines == ["é" * 50] and stats.invalid_utf8_lines == 0 and stats.truncated_lines == 1


def test_unlistable_subdirectory_is_reported(tmp_path, validate_report, monkeypatch):
    run = write_layout(tmp_path / "run", "dir-per-node")
    blocked = run / "gpu-node-03"
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(blocked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = report_of(invoke(run, "-f", "json"), validate_report)
    assert report["input"]["inputs_skipped"].get("unreadable") == 1
    assert any("gpu-node-03" in w and "cannot list directory" in w for w in report["input"]["warnings"])
    assert report["input"]["nodes"] == 7
