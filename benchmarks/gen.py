"""Generate a realistic multi-node training run for the benchmarks (one file per node)."""

from __future__ import annotations

import heapq
import os
import random
import shutil
from datetime import datetime, timedelta

START = datetime(2024, 5, 1, 10, 0, 0)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def write_run(out: str, lines: int, nodes: int, seed: int = 7) -> dict:
    """Write ``nodes`` files with about ``lines`` lines in total; the fault is on node ``nodes // 3``."""
    os.makedirs(out, exist_ok=True)
    per_node = max(50, lines // nodes)
    culprit = nodes // 3
    total_lines = total_bytes = 0
    for n in range(nodes):
        rng = random.Random(seed * 1000 + n)
        host = f"gpu-node-{n:03d}"
        pid = 30000 + n * 7
        t = START + timedelta(milliseconds=n)
        it = 0
        rows = []
        fail_at = int(per_node * 0.8)
        # a process creates a handful of communicators: their pointers and ids repeat
        comms = [(rng.getrandbits(48), rng.getrandbits(64)) for _ in range(6)]
        for i in range(per_node):
            t += timedelta(microseconds=rng.randint(100, 90000))
            r = rng.random()
            if n == culprit and i == fail_at:
                rows.append(f"{_ts(t)} kernel: NVRM: Xid (PCI:0000:{rng.randint(16, 250):02x}:00): 79, pid={pid}, GPU has fallen off the bus.")
                rows.append(f"{_ts(t)} RuntimeError: CUDA error: unknown error")
                break
            if n != culprit and i == per_node - 3:
                rows.append(f"{_ts(t)} [Rank {n * 8}] Watchdog caught collective operation timeout: WorkNCCL(SeqNum={it * 3 + 11}, "
                            f"OpType=ALLREDUCE, NumelIn={rng.randint(1, 10**8)}, NumelOut=1, Timeout(ms)=600000) ran for "
                            f"{600000 + rng.randint(1, 999)} milliseconds before timing out.")
                rows.append(f"{_ts(t)} WARNING:torch.distributed.elastic.multiprocessing.api:Sending process {pid} closing signal SIGTERM")
                continue
            if r < 0.40:
                dev = rng.randint(0, 7)
                kind = rng.random()
                if kind < 0.3:
                    rows.append(f"{host}:{pid}:{pid + dev + rng.randint(0, 90)} [{dev}] NCCL INFO Channel {rng.randint(0, 31):02d}/0 : "
                                f"{n * 8 + dev}[{dev}] -> {(n * 8 + dev + 1) % (nodes * 8)}[{(dev + 1) % 8}] [send] via NET/IB/{dev}/GDRDMA")
                elif kind < 0.55:
                    comm, comm_id = rng.choice(comms)
                    rows.append(f"{host}:{pid}:{pid + dev} [{dev}] NCCL INFO comm 0x{comm:x} rank {n * 8 + dev} nranks "
                                f"{nodes * 8} cudaDev {dev} busId {rng.randint(16, 250):x}000 commId 0x{comm_id:x} - Init COMPLETE")
                elif kind < 0.75:
                    rows.append(f"{host}:{pid}:{pid + dev} [{dev}] NCCL INFO NET/IB : Using [0]mlx5_{dev}:1/IB ; OOB eth0:10.{n // 250}.{n % 250}.{dev + 1}<0>")
                else:
                    rows.append(f"{host}:{pid}:{pid + dev} [{dev}] NCCL INFO {rng.randint(1, 64)} coll channels, {rng.randint(1, 64)} nvls channels, "
                                f"{rng.randint(1, 32)} p2p channels, {rng.randint(1, 8)} p2p channels per peer")
            elif r < 0.42:
                it += 1
                rows.append(f"{_ts(t)} [INFO] iteration {it:8d}/  500000 | consumed samples: {it * 512:12d} | elapsed time per iteration (ms): "
                            f"{rng.uniform(900, 1600):.1f} | learning rate: {rng.uniform(1e-5, 3e-4):.3E} | global batch size:   512 | "
                            f"lm loss: {rng.uniform(2, 8):.6E} | loss scale: 65536.0 | grad norm: {rng.uniform(0.2, 3):.3f} | "
                            f"number of skipped iterations:   0 | number of nan iterations:   0 |")
            elif r < 0.80:
                choice = rng.random()
                if choice < 0.3:
                    rows.append(f"{_ts(t)} - torch.distributed - INFO - [Rank {n * 8 + rng.randint(0, 7)}] Reducer buckets have been rebuilt in this iteration.")
                elif choice < 0.6:
                    rows.append(f"[{_ts(t)}] [INFO] [logging.py:{rng.randint(10, 300)}:log_dist] [Rank {n * 8}] time (ms) | forward: "
                                f"{rng.uniform(100, 900):.2f} | backward: {rng.uniform(100, 900):.2f} | optimizer: {rng.uniform(1, 90):.2f}")
                elif choice < 0.8:
                    rows.append(f"{_ts(t)} INFO dataloader worker {rng.randint(0, 15)} fetched shard /data/shards/shard-{rng.randint(0, 99999):05d}.bin "
                                f"({rng.randint(10**6, 10**9)} bytes) in {rng.uniform(0.1, 30):.3f}s")
                elif choice < 0.97:
                    rows.append(f"{_ts(t)} INFO memory stats: allocated {rng.uniform(10, 70):.2f} GB reserved {rng.uniform(70, 79):.2f} GB "
                                f"peak {rng.uniform(70, 80):.2f} GB")
                else:
                    rows.append(f"{_ts(t)} INFO memory stats: allocated {rng.uniform(10, 70):.2f} GB reserved {rng.uniform(70, 79):.2f} GB "
                                f"peak {rng.uniform(70, 80):.2f} GB request_id={rng.getrandbits(128):032x}")
            elif r < 0.95:
                rows.append(f"  [{rng.randint(0, 7)}] throughput {rng.uniform(100, 200):.2f} TFLOP/s, tokens/s {rng.randint(10**5, 10**6)}, "
                            f"step_time {rng.uniform(0.5, 2):.4f}")
            else:
                rows.append(f"{_ts(t)} WARNING torch.utils.checkpoint: recomputing layer {rng.randint(0, 95)} because "
                            f"activation {rng.getrandbits(32):08x} was evicted (pressure {rng.uniform(0, 1):.2f})")
        data = ("\n".join(rows) + "\n").encode()
        with open(os.path.join(out, f"{host}.log"), "wb") as fh:
            fh.write(data)
        total_lines += len(rows)
        total_bytes += len(data)
    return {"lines": total_lines, "bytes": total_bytes, "nodes": nodes, "culprit": f"gpu-node-{culprit:03d}"}


LAYOUTS = ("per-node", "one-file", "combined")


def write_layout(out: str, lines: int, nodes: int, layout: str = "per-node", seed: int = 7) -> dict:
    """``write_run`` in one of LAYOUTS: a file per node; one node's lines in one file (``nodes``
    ignored); or every node's lines in one combined file, ``host: `` prefixed, in time order."""
    if layout == "per-node":
        return write_run(out, lines, nodes, seed)
    if layout == "one-file":
        return write_run(out, lines, 1, seed)
    parts = os.path.join(out, "per-node")
    info = write_run(parts, lines, nodes, seed)
    names = sorted(os.listdir(parts))
    with open(os.path.join(out, "combined.log"), "w", encoding="utf-8") as fh:
        for _, _, line in heapq.merge(*(_timed(os.path.join(parts, n)) for n in names), key=lambda e: e[:2]):
            fh.write(line)
    shutil.rmtree(parts)
    return {**info, "bytes": os.path.getsize(os.path.join(out, "combined.log"))}


def _timed(path: str):
    """``(time key, node, prefixed line)`` per line of a node's file; an untimed line keeps the time before it."""
    host = os.path.basename(path)[: -len(".log")]
    key = ""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            stamp = line.lstrip("[")[:23]
            if stamp[:4].isdigit():
                key = stamp
            yield key, host, f"{host}: {line}"


if __name__ == "__main__":
    import sys

    print(write_layout(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *(sys.argv[4:5] or ["per-node"])))
