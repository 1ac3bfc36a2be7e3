"""Small multi-node runs written by the tests: one realistic run, laid out every way DESIGN.md lists."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

START = datetime(2024, 5, 1, 10, 0, 0)
NODES = [f"gpu-node-{i:02d}" for i in range(8)]
CULPRIT = "gpu-node-05"
XID_LINE = "NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, GPU has fallen off the bus."


def _ts(seconds: float) -> str:
    t = START + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def node_lines(node: str, index: int, *, fault: bool = True, iterations: int = 200) -> list:
    """(seconds, text) lines one node prints: init, NCCL, iterations on the last node, then fault or end."""
    out = []
    pid = 4000 + index
    out.append((0.1 + index * 0.01, f"{_ts(0.1)} INFO initializing torch distributed with world size 64"))
    for dev in range(2):
        out.append((0.5, f"{node}:{pid}:{pid + dev} [{dev}] NCCL INFO Bootstrap : Using eth0:10.0.0.{index + 1}<0>"))
        out.append((0.6, f"{node}:{pid}:{pid + dev} [{dev}] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB ; OOB eth0:10.0.0.{index + 1}<0>"))
    out.append((1.0, f"{_ts(1.0)} INFO building GPT model"))
    out.append((2.0, f"{_ts(2.0)} INFO training ..."))
    fail_at = 120 if fault else None
    for it in range(1, iterations + 1):
        t = 2.0 + it * 1.5 + index * 0.001
        if fail_at is not None and it > fail_at:
            break
        if index == len(NODES) - 1 and it % 10 == 0:
            loss = 7.5 - it * 0.01
            out.append((t, f"{_ts(t)} iteration {it:8d}/    1000 | consumed samples: {it * 64:10d} | "
                           f"elapsed time per iteration (ms): 1500.{index} | lm loss: {loss:.6E} | "
                           f"loss scale: 65536.0 | grad norm: 1.{it % 7}23 |"))
    t_fail = 2.0 + 120 * 1.5 + 0.7
    if fault:
        if node == CULPRIT:
            out.append((t_fail, f"{_ts(t_fail)} kernel: {XID_LINE}"))
            out.append((t_fail + 0.2, f"{_ts(t_fail + 0.2)} RuntimeError: CUDA error: unknown error"))
        else:
            t_coll = t_fail + 600 + index * 0.05
            rank = index * 8
            out.append((t_coll, f"{_ts(t_coll)} [Rank {rank}] Watchdog caught collective operation timeout: "
                                f"WorkNCCL(SeqNum=812, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) "
                                f"ran for 600091 milliseconds before timing out."))
            out.append((t_coll + 1, f"{_ts(t_coll + 1)} WARNING:torch.distributed.elastic.multiprocessing.api:"
                                    f"Sending process {pid} closing signal SIGTERM"))
    else:
        t_end = 2.0 + iterations * 1.5 + 1
        out.append((t_end, f"{_ts(t_end)} INFO training finished"))
    return out


def run_lines(fault: bool = True) -> dict:
    return {node: node_lines(node, i, fault=fault) for i, node in enumerate(NODES)}


def _text(lines: list) -> str:
    return "".join(text + "\n" for _, text in lines)


def write_layout(root: Path, layout: str, fault: bool = True) -> Path:
    """Write the run in one layout under root; return the path to give `l4diag diagnose`."""
    runs = run_lines(fault)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "dir-per-node":
        for node, lines in runs.items():
            (root / node).mkdir()
            (root / node / "stdout.log").write_text(_text(lines))
            (root / node / "stderr.log").write_text("")
        return root
    if layout == "file-per-node":
        for node, lines in runs.items():
            (root / f"{node}.log").write_text(_text(lines))
        return root
    if layout == "torchrun":
        for node, lines in runs.items():
            d = root / node / "logs" / "run_abc123" / "attempt_0" / "0"
            d.mkdir(parents=True)
            (d / "stdout.log").write_text(_text(lines))
        return root
    if layout in ("combined-host", "combined-rank"):
        merged = []
        for i, (node, lines) in enumerate(runs.items()):
            prefix = f"{node}: " if layout == "combined-host" else f"[rank{i}]:"
            merged.extend((t, i, prefix + text) for t, text in lines)
        merged.sort(key=lambda x: (x[0], x[1]))
        path = root / "combined.log"
        path.write_text("".join(text + "\n" for _, _, text in merged))
        return path
    if layout in ("gz", "bz2", "xz", "zst"):
        for node, lines in runs.items():
            data = _text(lines).encode()
            (root / f"{node}.log.{layout}").write_bytes(_compress(data, layout))
        return root
    if layout in ("tar.gz", "zip", "tar"):
        path = root / f"run.{layout}"
        if layout == "zip":
            with zipfile.ZipFile(path, "w") as zf:
                for node, lines in runs.items():
                    zf.writestr(f"run/{node}/stdout.log", _text(lines))
        else:
            mode = "w:gz" if layout == "tar.gz" else "w"
            with tarfile.open(path, mode) as tf:
                for node, lines in runs.items():
                    data = _text(lines).encode()
                    info = tarfile.TarInfo(f"run/{node}.log")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        return path
    raise ValueError(layout)


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    import pyarrow as pa

    buf = pa.BufferOutputStream()
    with pa.CompressedOutputStream(buf, "zstd") as out:
        out.write(data)
    return buf.getvalue().to_pybytes()
