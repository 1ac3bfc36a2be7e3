"""The grep baseline: what an on-call engineer does today, as a report-shaped dict.

It greps every node's lines for ``error|exception|fail|timeout`` (case-insensitive), blames
the node with the most matches, names the category by keyword votes over that node's
matching lines, and quotes its first 5 matching lines. Stage ``train``, iteration null.
It reads the same layouts ``l4diag synth`` writes, with a deliberately small reader.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

GREP_RE = re.compile(r"error|exception|fail|timeout", re.IGNORECASE)
# Checked in order; the first category with the most votes wins ties.
KEYWORDS: list[tuple[str, re.Pattern]] = [
    ("hardware", re.compile(r"xid|ecc|nvrm|fallen off|nvlink|cuda error: unknown|gpu is lost", re.I)),
    ("oom", re.compile(r"out of memory|outofmemory|oom|killed process|exitcode: -9|dataloader worker", re.I)),
    ("storage", re.compile(r"no space left|input/output error|stale file|disk quota|errno (?:28|5|116|122)\b", re.I)),
    ("checkpoint_load", re.compile(r"state_dict|pytorchstreamreader|load_checkpoint|loading checkpoint|world size of", re.I)),
    ("divergence", re.compile(r"\bnan\b(?! iterations)|loss scale|overflow", re.I)),
    ("network", re.compile(r"nccl|net/ib|ibv_|connection reset|socket|rendezvous|timed out|timeout", re.I)),
    ("software", re.compile(r"traceback|error|exception|assert", re.I)),
]
COMBINED_RE = re.compile(r"^(?:\[rank(\d+)\]|(\d+)|([A-Za-z][\w.-]*)): ")
COMPRESSED = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def _decode(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines()


def _strip_ext(name: str) -> str:
    base = name.split("/")[-1]
    for ext in (".gz", ".bz2", ".xz", ".log", ".out", ".txt"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base


def read_streams(root: Path) -> dict[str, list[str]]:
    """node id -> lines, for the layouts l4diag synth writes."""
    streams: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        name = path.name
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path) as tf:
                for member in sorted(tf.getmembers(), key=lambda m: m.name):
                    f = tf.extractfile(member) if member.isfile() else None
                    if f is not None:
                        _add(streams, _strip_ext(member.name), _decode(f.read()))
            continue
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for member in sorted(zf.namelist()):
                    if not member.endswith("/"):
                        _add(streams, _strip_ext(member), _decode(zf.read(member)))
            continue
        data = path.read_bytes()
        if path.suffix in COMPRESSED:
            data = COMPRESSED[path.suffix](data)
        lines = _decode(data)
        if len(rel.parts) > 1:  # dir per node, torchrun log dir: the first directory is the node
            _add(streams, rel.parts[0], lines)
        elif _is_combined(lines):
            for node, text in _split_combined(lines):
                _add(streams, node, [text])
        else:
            _add(streams, _strip_ext(name), lines)
    return streams


def _add(streams: dict[str, list[str]], node: str, lines: list[str]) -> None:
    streams.setdefault(node, []).extend(lines)


def _is_combined(lines: list[str]) -> bool:
    sample = [ln for ln in lines[:400] if ln.strip()]
    if not sample:
        return False
    prefixes = [m.group(0) for m in map(COMBINED_RE.match, sample) if m]
    return len(prefixes) >= 0.9 * len(sample) and len(set(prefixes)) >= 2


def _split_combined(lines: list[str]):
    for ln in lines:
        m = COMBINED_RE.match(ln)
        if not m:
            continue
        rank = m.group(1) or m.group(2)
        yield (f"rank{rank}" if rank is not None else m.group(3)), ln[m.end():]


def categorize(lines: list[str]) -> str:
    votes: Counter = Counter()
    for ln in lines:
        for cat, rx in KEYWORDS:
            if rx.search(ln):
                votes[cat] += 1
                break
    if not votes:
        return "unknown"
    best = max(votes.values())
    return next(cat for cat, _ in KEYWORDS if votes.get(cat) == best)


def grep_report(logs: Path) -> dict:
    """A report dict (the JSON contract's fields that eval reads) from grepping ``logs``."""
    streams = read_streams(Path(logs))
    matches = {node: [(i + 1, ln) for i, ln in enumerate(lines) if GREP_RE.search(ln)] for node, lines in streams.items()}
    ranked = sorted(streams, key=lambda n: (-len(matches[n]), n))
    nodes = [{"node": n, "score": float(len(matches[n])), "role": "suspect" if matches[n] else "normal",
              "lines": len(streams[n]), "last_iteration": None} for n in ranked]
    if not ranked or not matches[ranked[0]]:
        return {"verdict": "healthy", "diagnosis": None, "nodes": nodes, "templates": []}
    culprit = ranked[0]
    hits = matches[culprit]
    evidence = [{"node": culprit, "file": culprit, "line": num, "text": text} for num, text in hits[:5]]
    diagnosis = {"category": categorize([t for _, t in hits]), "subcategory": None, "confidence": 0.5,
                 "summary": f"{len(hits)} lines on {culprit} match error|exception|fail|timeout",
                 "node": culprit, "stage": "train", "iteration": None, "evidence": evidence}
    return {"verdict": "failure", "diagnosis": diagnosis, "nodes": nodes, "templates": []}
