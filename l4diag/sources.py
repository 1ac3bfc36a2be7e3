"""Find input streams: directories, files, globs, compressed files, archives and stdin; give each a node id.

Archives are read member by member in-stream and never extracted to disk. Node ids follow
DESIGN.md's layouts; a stream whose node id must come from per-line prefixes (a combined
file given directly, or stdin) gets ``node=None`` and is split by ``lines.demux``.
"""

from __future__ import annotations

import bz2
import dataclasses
import errno
import glob
import io
import lzma
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import regex

from .model import InputCap, StreamSpec

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


DEFAULT_MAX_MEMBER_BYTES = 4 << 30  # decompressed bytes of one compressed file or archive member
DEFAULT_MAX_TOTAL_BYTES = 20 << 30  # decompressed bytes of one archive as a whole


def discover(
    paths: list,
    node_regex: str | None = None,
    *,
    max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
    max_total_bytes: int | None = DEFAULT_MAX_TOTAL_BYTES,
    follow_symlinks: bool = False,
) -> Discovery:
    """Expand the command-line paths into streams, each with a node id (or None for prefix demux).

    Never opens anything but directories (FIFOs, sockets and devices are skipped unopened); every
    path that cannot be used is counted in ``skipped_inputs`` by reason, with a warning.
    Inside a directory, symlinks whose target lies outside it are not followed unless
    ``follow_symlinks`` (a stranger's tree must not make l4diag quote ``/etc/shadow`` in a ticket);
    paths given on the command line are always followed.
    """
    found = _discover(paths, node_regex, follow_symlinks)
    if max_member_bytes is not None or max_total_bytes is not None:
        found.streams = [
            dataclasses.replace(s, max_member_bytes=max_member_bytes, max_total_bytes=max_total_bytes)
            for s in found.streams
        ]
    return found


def _discover(paths: list, node_regex: str | None, follow_symlinks: bool = False) -> Discovery:
    found = Discovery()
    node_pattern = regex.compile(node_regex) if node_regex else None
    for given in paths:
        if given == STDIN:
            found.streams.append(StreamSpec(path=STDIN, display="<stdin>", node=None))
            continue
        expanded = _expand_glob(given)
        if not expanded:
            _skip(found, "missing", f"{safe_name(given)}: no such file or directory")
            continue
        for path in expanded:
            _discover_path(found, given if len(expanded) == 1 else path, path, node_pattern, follow_symlinks)
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


def _stat_failed(found: Discovery, display: str, exc: OSError) -> None:
    if exc.errno == errno.ELOOP:
        _skip(found, "symlink_loop", f"{display}: symlink loop; skipped")
    elif exc.errno == errno.ENOENT:
        _skip(found, "missing", f"{display}: no such file (dangling symlink?); skipped")
    else:
        _skip(found, "unreadable", f"{display}: cannot read: {exc.strerror or exc}")


def _discover_path(found: Discovery, display: str, path: str, node_pattern, follow_symlinks: bool = False) -> None:
    display = safe_name(display)
    try:
        st = os.stat(path)
    except OSError as exc:
        _stat_failed(found, display, exc)
        return
    if stat.S_ISDIR(st.st_mode):
        _discover_dir(found, display, path, node_pattern, follow_symlinks)
    elif stat.S_ISREG(st.st_mode):
        node = _node_from_regex(node_pattern, display)
        if node is None and node_pattern is None:
            node = None  # a file given directly: node ids from prefixes, else its name
        found.streams.extend(_file_streams(found, path, display, node, direct=True))
    else:
        _skip(found, "not_regular_file", f"{display}: not a regular file (FIFO, socket or device); skipped unopened")


def _outside(path: str, root_real: str) -> str | None:
    """The real target of a symlink that leads outside ``root_real``, else None."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    if target == root_real or target.startswith(root_real.rstrip(os.sep) + os.sep):
        return None
    return target


def _discover_dir(found: Discovery, display: str, root: str, node_pattern, follow_symlinks: bool = False) -> None:
    files = []
    seen_dirs = set()
    root_real = os.path.realpath(root)

    def skip_outside(path: str, target: str) -> None:
        _skip(found, "symlink_outside", f"{safe_name(path)}: symlink to {safe_name(target)}, outside the input "
                                        f"directory; not followed (--follow-symlinks to read it)")

    def walk_error(exc: OSError) -> None:
        where = safe_name(getattr(exc, "filename", None) or root)
        _skip(found, "unreadable", f"{where}: cannot list directory: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=walk_error):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            dirnames[:] = []
            _skip(found, "symlink_loop", f"{safe_name(dirpath)}: directory already visited (symlink loop); skipped")
            continue
        seen_dirs.add(ident)
        dirnames.sort()
        if not follow_symlinks:
            for name in list(dirnames):
                target = _outside(os.path.join(dirpath, name), root_real)
                if target is not None:
                    dirnames.remove(name)
                    skip_outside(os.path.join(dirpath, name), target)
        for name in sorted(filenames):
            if name.startswith(".") or name in ("truth.json", "error.json"):
                continue
            full = os.path.join(dirpath, name)
            target = None if follow_symlinks else _outside(full, root_real)
            if target is not None:
                skip_outside(full, target)
                continue
            try:
                fst = os.stat(full)
            except OSError as exc:
                _stat_failed(found, safe_name(full), exc)
                continue
            if not stat.S_ISREG(fst.st_mode):
                _skip(found, "not_regular_file",
                      f"{safe_name(full)}: not a regular file (FIFO, socket or device); skipped unopened")
                continue
            files.append(os.path.relpath(full, root))
    if not files:
        found.warnings.append(f"{display}: directory holds no files")
        found.skipped_inputs["empty_directory"] = found.skipped_inputs.get("empty_directory", 0) + 1
        return
    root_name = os.path.basename(os.path.normpath(os.path.abspath(root)))
    nodes = assign_nodes([_split(safe_name(rel)) for rel in files], safe_name(root_name))
    if len(files) == 1:
        nodes = [None]  # a lone file may be a combined log: let its line prefixes name the nodes
    for rel, node in zip(files, nodes):
        shown = safe_name(os.path.join(display, rel))
        forced = _node_from_regex(node_pattern, shown)
        found.streams.extend(
            _file_streams(found, os.path.join(root, rel), shown, forced or node, direct=len(files) == 1)
        )


def _split(rel: str) -> list:
    return [p for p in rel.replace("\\", "/").split("/") if p and p not in (".", "..")]


def safe_name(name: str) -> str:
    """A file or member name fit to show: control, bidi and other non-printable characters become ``?``."""
    if name.isprintable():
        return name
    return "".join(ch if ch.isprintable() else "?" for ch in name)


def _node_from_regex(pattern, text: str) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(text)
    if not m:
        return None
    if "node" in pattern.groupindex:
        found = m.group("node")
    else:
        found = m.group(1) if pattern.groups else m.group(0)
    return safe_name(found) if found else None


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
            # a generic directory (``run/``, ``logs/``): the file's own name if telling, else the root's
            own = strip_suffixes(parts[-1])
            if candidate != own and not _is_generic(own):
                candidate = own
            else:
                candidate = root_name if not _is_generic(root_name) else own
        nodes.append(candidate)
    return nodes


def _file_streams(found: Discovery, path: str, display: str, node: str | None, *, direct: bool) -> list:
    lower = path.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return [StreamSpec(path=path, display=display, node=node, archive=_archive_kind(lower))]
    compression = next((c for s, c in COMPRESSIONS.items() if lower.endswith(s)), None)
    if node is None and not direct:
        node = strip_suffixes(safe_name(os.path.basename(path)))
    return [StreamSpec(path=path, display=display, node=node, compression=compression)]


def _archive_kind(lower: str) -> str:
    return "zip" if lower.endswith(".zip") else "tar"


def open_stream(spec: StreamSpec, max_decompressed: int | None = None) -> BinaryIO:
    """Open a plain or compressed stream for binary reading (archives are opened by ``iter_archive``).

    Decompressed data is capped at ``spec.max_member_bytes``: past it, reads raise ``InputCap``.
    """
    if spec.path == STDIN:
        return sys.stdin.buffer
    raw = open(spec.path, "rb")  # noqa: SIM115 - closed by the caller
    cap = max_decompressed if max_decompressed is not None else spec.max_member_bytes
    try:
        return wrap_decompressor(raw, spec.compression, cap)
    except Exception:
        raw.close()
        raise


def wrap_decompressor(raw: BinaryIO, compression: str | None, cap: int | None = None, what: str = "stream") -> BinaryIO:
    if compression is None:
        return raw
    if compression in ("gzip", "bz2", "xz"):
        fh = _Decompress(raw, compression)
    elif compression == "zstd":
        import pyarrow as pa

        # small reads: pyarrow drops a whole read's output when the stream turns out truncated
        fh = _Capped(pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd"), None, what, max_read=1 << 16)
    else:
        raise ValueError(f"unknown compression {compression}")
    return _Capped(fh, cap, what) if cap is not None else fh


MEMBER_READ = 1 << 16


class _RawReader(io.RawIOBase):
    """A readable raw stream over ``self._source``, with ``readinto`` and ``close`` in terms of ``read``."""

    _source: BinaryIO

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            super().close()


class _Decompress(_RawReader):
    """Streaming gzip/bz2/xz decompression that hands out every byte it could decode.

    Unlike ``gzip.GzipFile`` and friends, a truncated or corrupt stream first yields all the data
    decoded before the damage, then raises. Output per read is bounded (``max_length``), so a
    small compressed chunk cannot expand into a huge buffer. Concatenated members are read on.
    """

    CHUNK = 1 << 16

    def __init__(self, raw: BinaryIO, kind: str) -> None:
        self._source = raw
        self._kind = kind
        self._dec = self._make()
        self._buf = b""

    def _make(self):
        if self._kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._kind == "bz2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 22
        if n == 0:
            return b""
        while True:
            if self._dec.eof:
                rest = self._dec.unused_data + self._buf
                if not rest:
                    rest = self._source.read(self.CHUNK)
                if not rest.strip(b"\x00"):
                    return b""  # clean end (NUL padding after the last member tolerated)
                self._dec = self._make()
                self._buf = rest
            if self._kind == "gzip":
                out = self._dec.decompress(self._buf, n)
                self._buf = self._dec.unconsumed_tail
                need_input = not self._buf
            else:
                out = self._dec.decompress(self._buf, max_length=n)
                self._buf = b""
                need_input = self._dec.needs_input
            if out:
                return out
            if self._dec.eof:
                continue
            if need_input:
                chunk = self._source.read(self.CHUNK)
                if not chunk:
                    raise EOFError(f"{self._kind} stream ended before its end marker (truncated)")
                self._buf = self._buf + chunk if self._kind == "gzip" else chunk

    read1 = read



class _Capped(_RawReader):
    """Pass reads through until ``cap`` bytes, then raise ``InputCap`` (a decompression-bomb guard)."""

    def __init__(self, inner: BinaryIO, cap: int, what: str = "stream", budget: list | None = None,
                 total_cap: int | None = None, reason: str = "decompression_cap", max_read: int = 1 << 22) -> None:
        self._source = inner
        self._max_read = max_read
        self._cap = cap
        self._what = what
        self._budget = budget  # shared [bytes used] across the members of one archive
        self._total_cap = total_cap
        self._reason = reason
        self.count = 0

    def _check(self) -> None:
        if self._cap is not None and self.count >= self._cap:  # noqa: SIM102
            raise InputCap(f"decompressed size cap of {self._cap} bytes reached for this {self._what} "
                           f"(--max-decompressed-bytes); the rest was not read", self._reason)
        if self._budget is not None and self._total_cap is not None and self._budget[0] >= self._total_cap:
            raise InputCap(f"decompressed size cap of {self._total_cap} bytes for the whole archive reached "
                           f"(--max-total-decompressed-bytes); the rest was not read", self._reason)

    def _room(self, n: int) -> int:
        room = min(n, self._max_read)
        if self._cap is not None:
            room = min(room, self._cap - self.count)
        if self._budget is not None and self._total_cap is not None:
            room = min(room, self._total_cap - self._budget[0])
        return max(room, 0)

    def read(self, n: int = -1) -> bytes:
        return self._pull(n, self._source.read)

    def read1(self, n: int = -1) -> bytes:
        return self._pull(n, getattr(self._source, "read1", None) or self._source.read)

    def _pull(self, n: int, reader) -> bytes:
        """Read at most what the caps leave room for; raise ``InputCap`` when a cap stops real data."""
        if n is None or n < 0:
            n = 1 << 22
        room = self._room(n)
        if room == 0 and n > 0:
            probe = self._source.read(1)
            if not probe:
                return b""
            self._check()
        data = reader(room)
        self.count += len(data)
        if self._budget is not None:
            self._budget[0] += len(data)
        return data



@dataclass
class ArchiveMember:
    name: str
    display: str
    node: str | None
    compression: str | None
    fileobj: BinaryIO | None
    note: str = "link member skipped"  # why there is no fileobj
    reason: str = "archive_link"  # the inputs_skipped reason when there is no fileobj


def iter_archive(spec: StreamSpec, node_pattern=None) -> Iterator:
    """Yield the regular-file members of an archive, in-stream, with node ids; never touches disk.

    Never raises for a bad archive: links, devices, encrypted or unsupported members and a broken
    or truncated archive come out as members without a fileobj, whose ``note`` says what happened.
    Member data comes decompressed (``compression`` None) and capped.
    """
    budget = [0]
    try:
        if spec.archive == "zip":
            yield from _iter_zip(spec, node_pattern, budget)
        else:
            yield from _iter_tar(spec, node_pattern, budget)
    except InputCap as exc:
        yield _note(spec, "", f"{exc}", "decompression_cap")
    except (GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - tarfile/zipfile/zlib/lzma raise many kinds
        yield _note(spec, "", f"broken archive ({_describe(exc)}); kept what was read", "broken_archive")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _note(spec: StreamSpec, name: str, note: str, reason: str) -> ArchiveMember:
    display = f"{spec.display}!{safe_member_name(name)}" if name else spec.display
    return ArchiveMember(name, display, None, None, None, note, reason)


def _member_nodes(names: list, spec: StreamSpec) -> dict:
    root_name = strip_suffixes(safe_name(os.path.basename(spec.path)))
    usable = [n for n in names if _split(safe_member_name(n))]
    if len(usable) == 1:
        return {}  # a lone member may be a combined log: let its line prefixes name the nodes
    nodes = assign_nodes([_split(safe_member_name(n)) for n in usable], root_name)
    return dict(zip(usable, nodes))


def _member_entry(spec: StreamSpec, name: str, nodes: dict, node_pattern, fileobj, budget: list) -> ArchiveMember:
    display = f"{spec.display}!{safe_member_name(name)}"
    node = _node_from_regex(node_pattern, display) or nodes.get(name) or spec.node
    lower = name.lower()
    compression = next((c for s, c in COMPRESSIONS.items() if lower.endswith(s)), None)
    inner = wrap_decompressor(fileobj, compression) if compression is not None else fileobj
    # Small reads: a truncated member raises on a read that passes its end, losing that read's data.
    capped = _Capped(inner, spec.max_member_bytes, "archive member", budget, spec.max_total_bytes, max_read=MEMBER_READ)
    return ArchiveMember(name, display, node, None, capped)


def safe_member_name(name: str) -> str:
    """Show a member name without absolute roots, ``..`` or control characters."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    shown = "/".join(parts) or "<unnamed>"
    return safe_name(shown)


def _iter_zip(spec: StreamSpec, node_pattern, budget: list) -> Iterator:
    import zipfile  # here: most runs have no archive, and the import is not free

    with zipfile.ZipFile(spec.path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and not _skip_member(i.filename)]
        nodes = _member_nodes([i.filename for i in infos], spec)
        for info in infos:
            if info.flag_bits & 0x1:
                yield _note(spec, info.filename, "encrypted member skipped", "archive_encrypted")
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                yield _note(spec, info.filename, "link member skipped (never followed)", "archive_link")
                continue
            try:
                fh = zf.open(info)
            except (GeneratorExit, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - unsupported method, bad header, overlap
                yield _note(spec, info.filename, f"unreadable member ({_describe(exc)}); skipped", "broken_member")
                continue
            with fh:
                yield _member_entry(spec, info.filename, nodes, node_pattern, fh, budget)


def _skip_member(name: str) -> bool:
    base = os.path.basename(name.rstrip("/"))
    return base.startswith(".") or base in ("truth.json", "error.json")


TAR_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _open_tar_stream(spec: StreamSpec, budget: list | None) -> tuple:
    """The archive's decompressed byte stream (compression sniffed from magic bytes), capped in total."""
    raw = open(spec.path, "rb")  # noqa: SIM115 - closed by the caller
    head = raw.read(8)
    raw.seek(0)
    compression = next((c for magic, c in TAR_MAGIC if head.startswith(magic)), None)
    if compression is None:
        return raw, raw
    fh = wrap_decompressor(raw, compression)
    # The decompressed tar stream as a whole counts against the archive's total cap (headers and
    # skipped members included) — a bomb cannot make us decompress more than that.
    total = spec.max_total_bytes
    if total is not None:
        fh = _Capped(fh, None, "archive", [0], total)
    return raw, fh


def _iter_tar(spec: StreamSpec, node_pattern, budget: list) -> Iterator:
    # One pass to learn member names (node ids need the whole layout), one pass to read.
    import tarfile  # here: most runs have no archive, and the import is not free

    names = []
    raw, fh = _open_tar_stream(spec, budget)
    try:
        with tarfile.open(fileobj=fh, mode="r|") as tf:
            for m in tf:
                if m.isfile() and not _skip_member(m.name):
                    names.append(m.name)
    except Exception:  # noqa: BLE001 - a broken tail: the read pass reports it
        pass
    finally:
        raw.close()
    nodes = _member_nodes(names, spec)
    raw, fh = _open_tar_stream(spec, budget)
    try:
        with tarfile.open(fileobj=fh, mode="r|") as tf:
            for member in tf:
                if member.isdir() or _skip_member(member.name):
                    continue
                if member.issym() or member.islnk():
                    kind = "symlink" if member.issym() else "hard link"
                    yield _note(spec, member.name,
                                f"{kind} member skipped (target {safe_member_name(member.linkname)!r} never followed)",
                                "archive_link")
                    continue
                if not member.isfile():
                    yield _note(spec, member.name, "not a regular file (device, FIFO); skipped", "archive_special")
                    continue
                fileobj = tf.extractfile(member)
                if fileobj is None:
                    continue
                yield _member_entry(spec, member.name, nodes, node_pattern, fileobj, budget)
    finally:
        raw.close()
