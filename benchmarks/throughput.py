"""Throughput and memory of `l4diag diagnose` against plain drain3 and shell baselines.

    PYTHONPATH=. python benchmarks/throughput.py --lines 2000000 --nodes 128 [--out DIR | --run DIR]
                                                [--layout per-node|one-file|combined]
                                                [--growth] [--drain-sample 200000]

Run by hand (not in the tests). Prints lines/s of each contender, ratios and peak RSS.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from gen import LAYOUTS, write_layout, write_run  # noqa: E402


def tree_rss_kb(pid: int) -> tuple:
    """Sums of RSS and of PSS (shared pages split between sharers, so forked workers are not
    double counted) over a process and all its descendants, in kB."""
    total = pss = 0
    todo = [pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total, pss


def children_cpu() -> float:
    """User + system CPU seconds of every waited-for descendant so far (pool workers included)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_measured(cmd: list, **kw) -> tuple:
    """Run a command; return (seconds, (peak RSS sum, peak PSS sum) of its process tree in MB, stdout, CPU seconds).

    CPU seconds (user + system over the process tree) say how much work was done: on a machine
    shared with other jobs they vary far less than wall time."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    peak = [0, 0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            rss, pss = tree_rss_kb(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    dt = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return dt, (peak[0] / 1024, peak[1] / 1024), out, children_cpu() - cpu0


def l4diag_cmd(run: str, jobs: int) -> list:
    code = "import sys; from l4diag.cli import main; sys.argv = ['l4diag'] + sys.argv[1:]; main()"
    return [sys.executable, "-c", code, "diagnose", "--jobs", str(jobs), "--format", "json", run]


def files_of(run: str) -> list:
    return sorted(glob.glob(os.path.join(run, "*.log")))


def shell(cmd: str) -> float:
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    dt = time.perf_counter() - t0
    print(f"  {cmd[-60:]}: {dt:.2f} s, {children_cpu() - cpu0:.2f} CPU s", flush=True)
    return dt


def drain3_rate(run: str, sample: int) -> tuple:
    """Plain drain3 (default config) on every line; on a sample if the run is larger."""
    from drain3 import TemplateMiner

    miner = TemplateMiner()
    n = 0
    t0 = time.perf_counter()
    for path in files_of(run):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                miner.add_log_message(line.rstrip("\n"))
                n += 1
                if n >= sample:
                    break
        if n >= sample:
            break
    dt = time.perf_counter() - t0
    return n / dt, n, dt


def diagnose_once(run: str, jobs: int) -> dict:
    dt, rss, out, cpu = run_measured(l4diag_cmd(run, jobs), env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    report = json.loads(out)
    culprit = next((n["node"] for n in report.get("nodes", []) if n.get("role") == "culprit"), None)
    return {"seconds": dt, "cpu_seconds": cpu, "peak_rss_mb": rss[0], "peak_pss_mb": rss[1], "timings": report.get("timings"), "culprit": culprit,
            "lines": report["input"]["lines_read"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--out", help="where to write the generated run (default: a temp dir, removed after)")
    ap.add_argument("--run", help="use this existing run (a directory of *.log)")
    ap.add_argument("--layout", choices=LAYOUTS, default="per-node",
                    help="of the generated run: a file per node, one node's file, or one combined file")
    ap.add_argument("--drain-sample", type=int, default=200_000)
    ap.add_argument("--growth", action="store_true", help="also run 1x and 4x of --lines/4 for the RSS growth")
    ap.add_argument("--skip-drain", action="store_true")
    args = ap.parse_args()

    tmp = None
    if args.run:
        run = args.run
    else:
        run = args.out or (tmp := tempfile.mkdtemp(prefix="l4bench-"))
        print(f"generating {args.lines} lines over {args.nodes} nodes ({args.layout}) in {run} ...", flush=True)
        print(write_layout(run, args.lines, args.nodes, args.layout))
    try:
        files = files_of(run)
        nbytes = sum(os.path.getsize(f) for f in files)
        quoted = " ".join(f"'{f}'" for f in files)
        t_wc = shell(f"cat {quoted} | wc -l")
        lines = int(subprocess.run(["bash", "-c", f"cat {quoted} | wc -l"], capture_output=True, text=True).stdout)
        print(f"run: {run}: {len(files)} files, {lines} lines, {nbytes / 1e6:.1f} MB, {os.cpu_count()} cores")
        t_grep = shell(f"cat {quoted} | grep -c ''")
        t_sed = shell(f"cat {quoted} | sed -E 's/0x[0-9a-fA-F]+|[0-9]+/#/g' | sort | uniq -c")
        rows = [("wc -l", t_wc), ("grep -c ''", t_grep), ("sed -E mask | sort | uniq -c", t_sed)]
        if not args.skip_drain:
            rate, n, dt = drain3_rate(run, args.drain_sample)
            extrap = lines / rate
            note = f"(measured on {n} lines in {dt:.1f} s, extrapolated)" if n < lines else "(all lines)"
            rows.append((f"plain drain3 add_log_message {note}", extrap))
        res = {}
        for jobs in (1, 0):
            r = diagnose_once(run, jobs)
            res[jobs] = r
            label = "l4diag diagnose --jobs 1" if jobs == 1 else f"l4diag diagnose --jobs 0 ({os.cpu_count()} cores)"
            rows.append((label, r["seconds"]))
            print(f"{label}: {r['seconds']:.2f} s ({r['cpu_seconds']:.2f} CPU s), peak RSS {r['peak_rss_mb']:.0f} MB (PSS {r['peak_pss_mb']:.0f} MB), timings {r['timings']}, "
                  f"culprit {r['culprit']}", flush=True)
        print()
        print(f"{'contender':62s} {'seconds':>9s} {'lines/s':>12s}")
        for name, secs in rows:
            print(f"{name:62s} {secs:9.2f} {lines / secs:12,.0f}")
        best = res[0]["seconds"]
        print()
        by = dict(rows)
        for name in ("wc -l", "grep -c ''", "sed -E mask | sort | uniq -c"):
            print(f"l4diag (all cores) vs {name}: {by[name] / best:.2f}x (>1 means l4diag is faster)")
        drain = [s for n, s in rows if n.startswith("plain drain3")]
        if drain:
            print(f"l4diag (all cores) vs plain drain3: {drain[0] / best:.2f}x")
        print(f"peak RSS (sum over the process tree): jobs 1 {res[1]['peak_rss_mb']:.0f} MB, all cores "
              f"{res[0]['peak_rss_mb']:.0f} MB; peak PSS: {res[1]['peak_pss_mb']:.0f} / {res[0]['peak_pss_mb']:.0f} MB")
        if args.growth:
            base = max(args.lines // 4, 100_000)
            rss = {}
            for mult in (1, 4):
                d = tempfile.mkdtemp(prefix="l4growth-")
                try:
                    write_run(d, base * mult, args.nodes)
                    rss[mult] = diagnose_once(d, 0)
                finally:
                    shutil.rmtree(d, ignore_errors=True)
                print(f"growth {mult}x ({base * mult} lines): {rss[mult]['seconds']:.2f} s, "
                      f"peak RSS {rss[mult]['peak_rss_mb']:.0f} MB, PSS {rss[mult]['peak_pss_mb']:.0f} MB", flush=True)
            print(f"RSS ratio 4x/1x: {rss[4]['peak_rss_mb'] / rss[1]['peak_rss_mb']:.2f}, PSS ratio "
                  f"{rss[4]['peak_pss_mb'] / rss[1]['peak_pss_mb']:.2f} (input ratio 4.00)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
