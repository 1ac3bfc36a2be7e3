"""Write a simulated run's node streams in one of the input layouts l4diag reads.

Every writer is byte-deterministic: compressed and archived outputs use fixed
mtimes and owners so the same seed gives the same bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from pathlib import Path

from . import clock
from .records import Line, Node
from .simulate import Simulation


def render(sim: Simulation, node: Node, line: Line) -> str:
    """The line as it appears in the file, before any layout prefix (adds a collector timestamp when the run has one)."""
    if sim.collector_ts and not line.raw:
        return f"{clock.iso(sim.epoch(node, line.t))} {line.text}"
    return line.text


def ordered(node: Node) -> list[Line]:
    """A node's lines in print order (stable: equal times keep emission order)."""
    return sorted(node.lines, key=lambda ln: ln.t)


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def node_bytes(sim: Simulation, node: Node, stream: str | None = None) -> bytes:
    return _text([render(sim, node, ln) for ln in ordered(node) if stream is None or ln.stream == stream])


def write_layout(sim: Simulation, logs: Path, layout: str) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    writers = {
        "dir-per-node": _dir_per_node,
        "file-per-node": _file_per_node,
        "file-per-node-gz": _file_per_node,
        "file-per-node-bz2": _file_per_node,
        "file-per-node-xz": _file_per_node,
        "torchrun": _torchrun,
        "combined-host": _combined,
        "combined-rank": _combined,
        "tar.gz": _archive,
        "zip": _archive,
    }
    writers[layout](sim, logs, layout)


def _dir_per_node(sim: Simulation, logs: Path, layout: str) -> None:
    for node in sim.nodes:
        d = logs / node.name
        d.mkdir(exist_ok=True)
        (d / "stdout.log").write_bytes(node_bytes(sim, node, "stdout"))
        (d / "stderr.log").write_bytes(node_bytes(sim, node, "stderr"))


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        return buf.getvalue()
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return data


def _file_per_node(sim: Simulation, logs: Path, layout: str) -> None:
    kind = layout.rsplit("-", 1)[-1] if layout != "file-per-node" else ""
    suffix = f".log.{kind}" if kind else ".log"
    for node in sim.nodes:
        (logs / f"{node.name}{suffix}").write_bytes(compress(node_bytes(sim, node), kind))


def _torchrun(sim: Simulation, logs: Path, layout: str) -> None:
    """torchelastic --log-dir: one dir per local rank; the agent's own lines go beside it."""
    run_id = f"{sim.seq_base}_{sim.base_epoch % 10**8:08x}"
    for node in sim.nodes:
        base = logs / node.name
        agent = [render(sim, node, ln) for ln in ordered(node) if ln.local_rank is None]
        base.mkdir(exist_ok=True)
        (base / "launcher.log").write_bytes(_text(agent))
        for lr in range(node.gpus):
            d = base / run_id / "attempt_0" / str(lr)
            d.mkdir(parents=True, exist_ok=True)
            for stream in ("stdout", "stderr"):
                lines = [render(sim, node, ln) for ln in ordered(node) if ln.local_rank == lr and ln.stream == stream]
                (d / f"{stream}.log").write_bytes(_text(lines))


def prefix(sim: Simulation, node: Node, layout: str) -> str:
    """The per-line prefix a combined file carries for this node."""
    if layout == "combined-host":
        return f"{node.name}: "
    return f"[rank{node.index}]: " if sim.rank_prefix_style == "bracket" else f"{node.index}: "


def combined_lines(sim: Simulation, layout: str) -> list[str]:
    """All nodes' lines interleaved by true time, each with its node prefix."""
    tagged = []
    for node in sim.nodes:
        pre = prefix(sim, node, layout)
        for k, ln in enumerate(ordered(node)):
            tagged.append((ln.t, node.index, k, pre + render(sim, node, ln)))
    tagged.sort(key=lambda x: (x[0], x[1], x[2]))
    return [x[3] for x in tagged]


def _combined(sim: Simulation, logs: Path, layout: str) -> None:
    name = f"slurm-{sim.seq_base}.out" if layout == "combined-rank" else f"job-{sim.seq_base}.log"
    (logs / name).write_bytes(_text(combined_lines(sim, layout)))


def _archive(sim: Simulation, logs: Path, layout: str) -> None:
    top = f"job-{sim.seq_base}"
    members = [(f"{top}/{node.name}.log", node_bytes(sim, node)) for node in sim.nodes]
    if layout == "zip":
        with zipfile.ZipFile(logs / f"{top}.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = sim.base_epoch
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    (logs / f"{top}.tar.gz").write_bytes(compress(buf.getvalue(), "gz"))
