"""Find input streams: directories, files, globs, compressed files, archives and stdin; give each a node id.

Archives are read member by member in-stream and never extracted to disk. Node ids follow
DESIGN.md's layouts; a stream whose node id must come from per-line prefixes (a combined
file given directly, or stdin) gets ``node=None`` and is split by ``lines.demux``.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import lzma
import os
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import regex

from .model import StreamSpec

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".zip")
LOG_SUFFIXES = (".log", ".out", ".err", ".txt", ".stdout", ".stderr", ".jsonl")
GENERIC_NAMES = {
    "stdout", "stderr", "out", "err", "log", "logs", "output", "console", "train", "training",
    "error", "errors", "main", "run", "slurm", "job", "rank", "node", "worker_log",
}
STDIN = "-"


class InputError(Exception):
    """No usable input at all; the message is one line for the user."""


@dataclass
class Discovery:
    streams: list = field(default_factory=list)  # [StreamSpec]
    warnings: list = field(default_factory=list)
    skipped_inputs: dict = field(default_factory=dict)  # reason -> count


def discover(paths: list, node_regex: str | None = None, *, max_member_bytes: int | None = None) -> Discovery:
    """Expand the command-line paths into streams, each with a node id (or None for prefix demux)."""
    found = Discovery()
    node_pattern = regex.compile(node_regex) if node_regex else None
    for given in paths:
        if given == STDIN:
            found.streams.append(StreamSpec(path=STDIN, display="<stdin>", node=None))
            continue
        expanded = _expand_glob(given)
        if not expanded:
            _skip(found, "missing", f"{given}: no such file or directory")
            continue
        for path in expanded:
            _discover_path(found, given if len(expanded) == 1 else path, path, node_pattern)
    return found


def _expand_glob(given: str) -> list:
    if os.path.lexists(given):
        return [given]
    if any(ch in given for ch in "*?["):
        return sorted(glob.glob(given, recursive=True))
    return []


def _skip(found: Discovery, reason: str, message: str) -> None:
    found.skipped_inputs[reason] = found.skipped_inputs.get(reason, 0) + 1
    found.warnings.append(message)


def _discover_path(found: Discovery, display: str, path: str, node_pattern) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        _skip(found, "unreadable", f"{display}: cannot read: {exc.strerror or exc}")
        return
    if stat.S_ISDIR(st.st_mode):
        _discover_dir(found, display, path, node_pattern)
    elif stat.S_ISREG(st.st_mode):
        node = _node_from_regex(node_pattern, display)
        if node is None and node_pattern is None:
            node = None  # a file given directly: node ids from prefixes, else its name
        found.streams.extend(_file_streams(found, path, display, node, direct=True))
    else:
        _skip(found, "not_regular_file", f"{display}: not a regular file (FIFO, socket or device); skipped")


def _discover_dir(found: Discovery, display: str, root: str, node_pattern) -> None:
    files = []
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            dirnames[:] = []
            _skip(found, "symlink_loop", f"{dirpath}: directory already visited (symlink loop); skipped")
            continue
        seen_dirs.add(ident)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") or name in ("truth.json", "error.json"):
                continue
            full = os.path.join(dirpath, name)
            try:
                fst = os.stat(full)
            except OSError as exc:
                _skip(found, "unreadable", f"{full}: cannot read: {exc.strerror or exc}")
                continue
            if not stat.S_ISREG(fst.st_mode):
                _skip(found, "not_regular_file", f"{full}: not a regular file; skipped")
                continue
            files.append(os.path.relpath(full, root))
    if not files:
        found.warnings.append(f"{display}: directory holds no files")
        found.skipped_inputs["empty_directory"] = found.skipped_inputs.get("empty_directory", 0) + 1
        return
    root_name = os.path.basename(os.path.normpath(os.path.abspath(root)))
    nodes = assign_nodes([_split(rel) for rel in files], root_name)
    if len(files) == 1:
        nodes = [None]  # a lone file may be a combined log: let its line prefixes name the nodes
    for rel, node in zip(files, nodes):
        shown = os.path.join(display, rel)
        forced = _node_from_regex(node_pattern, shown)
        found.streams.extend(
            _file_streams(found, os.path.join(root, rel), shown, forced or node, direct=len(files) == 1)
        )


def _split(rel: str) -> list:
    return [p for p in rel.replace("\\", "/").split("/") if p and p != "."]


def _node_from_regex(pattern, text: str) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(text)
    if not m:
        return None
    if "node" in pattern.groupindex:
        return m.group("node")
    return m.group(1) if pattern.groups else m.group(0)


def strip_suffixes(name: str) -> str:
    """``worker-3.out.gz`` -> ``worker-3``."""
    base = name
    changed = True
    while changed:
        changed = False
        lower = base.lower()
        for suffix in (*COMPRESSIONS, *LOG_SUFFIXES, ".tar", ".tgz", ".zip"):
            if lower.endswith(suffix) and len(base) > len(suffix):
                base = base[: -len(suffix)]
                changed = True
                break
    return base


def _is_generic(component: str) -> bool:
    name = strip_suffixes(component).lower()
    return (
        name in GENERIC_NAMES
        or name.isdigit()
        or regex.fullmatch(r"attempt_\d+|\d+_\d+|local_rank_?\d+", name) is not None
    )


def assign_nodes(parts_list: list, root_name: str) -> list:
    """Node id per file, from relative path parts: the first directory level where files differ.

    Files directly under the root are named by their file name; generic names (``stdout.log``,
    torchrun local-rank dirs) fall back to the root directory's own name.
    """
    dirs = [parts[:-1] for parts in parts_list]
    depth = 0
    deep = [d for d in dirs if d]
    while deep and all(len(d) > depth for d in deep) and len({d[depth] for d in deep}) == 1 and len(deep) > 1:
        depth += 1
    if len(deep) == 1:
        depth = 0
    nodes = []
    for parts, d in zip(parts_list, dirs):
        if len(d) > depth and not (len(deep) == 1 and len(parts_list) == 1):
            candidate = d[depth]
        else:
            candidate = strip_suffixes(parts[-1])
        if _is_generic(candidate):
            candidate = root_name if not _is_generic(root_name) else strip_suffixes(parts[-1])
        nodes.append(candidate)
    return nodes


def _file_streams(found: Discovery, path: str, display: str, node: str | None, *, direct: bool) -> list:
    lower = path.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return [StreamSpec(path=path, display=display, node=node, archive=_archive_kind(lower))]
    compression = next((c for s, c in COMPRESSIONS.items() if lower.endswith(s)), None)
    if node is None and not direct:
        node = strip_suffixes(os.path.basename(path))
    return [StreamSpec(path=path, display=display, node=node, compression=compression)]


def _archive_kind(lower: str) -> str:
    return "zip" if lower.endswith(".zip") else "tar"


def open_stream(spec: StreamSpec, max_decompressed: int | None = None) -> BinaryIO:
    """Open a plain or compressed stream for binary reading (archives are opened by ``iter_archive``)."""
    if spec.path == STDIN:
        return sys.stdin.buffer
    raw = open(spec.path, "rb")  # noqa: SIM115 - closed by the caller
    return wrap_decompressor(raw, spec.compression)


def wrap_decompressor(raw: BinaryIO, compression: str | None) -> BinaryIO:
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if compression == "bz2":
        return bz2.BZ2File(raw)
    if compression == "xz":
        return lzma.LZMAFile(raw)
    if compression == "zstd":
        import pyarrow as pa

        return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
    raise ValueError(f"unknown compression {compression}")


@dataclass
class ArchiveMember:
    name: str
    display: str
    node: str | None
    compression: str | None
    fileobj: BinaryIO | None


def iter_archive(spec: StreamSpec, node_pattern=None) -> Iterator:
    """Yield the regular-file members of an archive, in-stream, with node ids; never touches disk."""
    if spec.archive == "zip":
        yield from _iter_zip(spec, node_pattern)
    else:
        yield from _iter_tar(spec, node_pattern)


def _member_nodes(names: list, spec: StreamSpec) -> dict:
    root_name = strip_suffixes(os.path.basename(spec.path))
    usable = [n for n in names if _split(n)]
    if len(usable) == 1:
        return {}  # a lone member may be a combined log: let its line prefixes name the nodes
    nodes = assign_nodes([_split(n) for n in usable], root_name)
    return dict(zip(usable, nodes))


def _member_entry(spec: StreamSpec, name: str, nodes: dict, node_pattern, fileobj) -> ArchiveMember:
    display = f"{spec.display}!{safe_member_name(name)}"
    node = _node_from_regex(node_pattern, display) or nodes.get(name) or spec.node
    lower = name.lower()
    compression = next((c for s, c in COMPRESSIONS.items() if lower.endswith(s)), None)
    return ArchiveMember(name, display, node, compression, fileobj)


def safe_member_name(name: str) -> str:
    """Show a member name without absolute roots, ``..`` or control characters."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    shown = "/".join(parts) or "<unnamed>"
    return "".join(ch if ch.isprintable() else "?" for ch in shown)


def _iter_zip(spec: StreamSpec, node_pattern) -> Iterator:
    with zipfile.ZipFile(spec.path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and not _skip_member(i.filename)]
        nodes = _member_nodes([i.filename for i in infos], spec)
        for info in infos:
            with zf.open(info) as fh:
                yield _member_entry(spec, info.filename, nodes, node_pattern, fh)


def _skip_member(name: str) -> bool:
    base = os.path.basename(name.rstrip("/"))
    return base.startswith(".") or base in ("truth.json", "error.json")


def _iter_tar(spec: StreamSpec, node_pattern) -> Iterator:
    # One pass to learn member names (node ids need the whole layout), one pass to read.
    with tarfile.open(spec.path, mode="r:*") as tf:
        names = [m.name for m in tf.getmembers() if m.isfile() and not _skip_member(m.name)]
    nodes = _member_nodes(names, spec)
    with tarfile.open(spec.path, mode="r|*") as tf:
        for member in tf:
            if not member.isfile() or _skip_member(member.name):
                if member.issym() or member.islnk():
                    yield ArchiveMember(member.name, f"{spec.display}!{safe_member_name(member.name)}", None, None, None)
                continue
            fh = tf.extractfile(member)
            if fh is None:
                continue
            yield _member_entry(spec, member.name, nodes, node_pattern, fh)


def read_head(fh: BinaryIO, size: int = 65536) -> tuple:
    """Peek at the start of a stream; return (head bytes, stream positioned at the start)."""
    head = fh.read(size)
    return head, io.BufferedReader(_Prepend(head, fh)) if head else fh


class _Prepend(io.RawIOBase):
    """A raw stream that first yields ``head`` and then the rest of ``tail``."""

    def __init__(self, head: bytes, tail: BinaryIO) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n
