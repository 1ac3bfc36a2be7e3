"""Diagnosis behaviour on small runs written here: culprit vs collateral, hangs, metrics, healthy noise."""

from datetime import datetime, timedelta

from l4diag.api import diagnose_paths

T0 = datetime(2024, 6, 1, 8, 0, 0)


def ts(seconds: float) -> str:
    t = T0 + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def write_run(tmp_path, nodes: dict):
    run = tmp_path / "run"
    run.mkdir()
    for node, lines in nodes.items():
        (run / f"{node}.log").write_text("".join(f"{line}\n" for line in lines))
    return run


def healthy_node(i: int, until: int = 100, iterations: bool = False, loss=lambda it: 5.0 - it * 0.01) -> list:
    lines = [f"{ts(0)} INFO rank {i * 8} initializing", f"{ts(1)} INFO building model", f"{ts(2)} training ..."]
    for it in range(1, until + 1):
        if iterations and it % 5 == 0:
            lines.append(f"{ts(2 + it)}  iteration {it:8d}/    1000 | consumed samples: {it * 32:8d} | "
                         f"elapsed time per iteration (ms): 1000.0 | lm loss: {loss(it):.6E} | loss scale: 65536.0 | "
                         f"grad norm: 1.234 |")
        elif it % 25 == 0:
            lines.append(f"{ts(2 + it)} INFO heartbeat step {it} ok")
    return lines


def watchdog(i: int, t: float) -> list:
    return [
        f"{ts(t)} [rank{i * 8}]:[E601 08:10:00.000000 ProcessGroupNCCL.cpp:607] [Rank {i * 8}] Watchdog caught collective "
        f"operation timeout: WorkNCCL(SeqNum=99, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for "
        f"600031 milliseconds before timing out.",
        f"{ts(t + 2)} WARNING:torch.distributed.elastic.multiprocessing.api:Sending process {1000 + i} closing signal SIGTERM",
    ]


def test_hung_node_is_the_culprit_not_the_nodes_that_time_out(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=60, iterations=(i == 5)) + watchdog(i, 62 + 600) for i in range(6) if i != 2}
    nodes["n2"] = healthy_node(2, until=60)[:-1]  # stops first and prints nothing more
    report = diagnose_paths([str(write_run(tmp_path, nodes))])
    d = report["diagnosis"]
    assert report["verdict"] == "failure"
    assert (d["node"], d["category"]) == ("n2", "hang")
    roles = {n["node"]: n["role"] for n in report["nodes"]}
    assert roles["n2"] == "culprit" and roles["n0"] == "collateral"


def test_earliest_root_cause_wins_over_later_errors_on_peers(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=50) for i in range(4)}
    nodes["n3"] += [f"{ts(53)} RuntimeError: CUDA error: an illegal memory access was encountered"]
    nodes["n1"] += [f"{ts(60)} torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    nodes["n0"] += watchdog(0, 700)
    report = diagnose_paths([str(write_run(tmp_path, nodes))])
    # The OOM line weighs more than the illegal access, but the strongest signatures are compared by time
    assert report["diagnosis"]["node"] in {"n1", "n3"}
    assert report["nodes"][0]["role"] == "culprit"


def test_ecc_error_before_oom_is_hardware(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=20) for i in range(4)}
    nodes["n2"] += [
        f"{ts(30)} kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, An uncorrectable double bit error (DBE) has been detected on GPU",
        f"{ts(31)} torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
    ]
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"]) == ("n2", "hardware")


def test_device_side_assert_is_software(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=20) for i in range(4)}
    nodes["n1"] += [f"{ts(30)} RuntimeError: CUDA error: device-side assert triggered"]
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"]) == ("n1", "software")


def test_nan_loss_is_divergence_at_its_iteration(tmp_path):
    loss = lambda it: 4.0 - it * 0.001 if it < 80 else float("nan")  # noqa: E731
    nodes = {f"n{i}": healthy_node(i, until=90, iterations=(i == 3), loss=loss) for i in range(4)}
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"], d["stage"]) == ("n3", "divergence", "train")
    assert 75 <= d["iteration"] <= 80


def test_recovered_loss_spike_and_benign_warnings_are_healthy(tmp_path):
    loss = lambda it: 9.0 if it == 50 else 4.0 - it * 0.001  # noqa: E731
    nodes = {f"n{i}": healthy_node(i, until=100, iterations=(i == 3), loss=loss) for i in range(4)}
    nodes["n0"].insert(3, f"{ts(3)} /usr/lib/python3/site-packages/torch/utils/data.py:12: UserWarning: "
                          f"this DataLoader will create 8 worker processes")
    report = diagnose_paths([str(write_run(tmp_path, nodes))])
    assert report["verdict"] == "healthy"
    assert report["diagnosis"] is None
    kinds = [f["kind"] for f in report["metrics"]["findings"]]
    assert "loss_spike_recovered" in kinds


def test_talkative_node_alone_is_not_a_failure(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=100, iterations=(i == 0)) for i in range(8)}
    assert diagnose_paths([str(write_run(tmp_path, nodes))])["verdict"] == "healthy"


def test_evidence_starts_with_the_most_telling_line_and_cites_file_and_line(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=20) for i in range(4)}
    nodes["n2"] += [
        f"{ts(30)} Traceback (most recent call last):",
        f'{ts(30)}   File "train.py", line 10, in <module>',
        f"{ts(30)} OSError: [Errno 28] No space left on device",
    ]
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert d["category"] == "storage"
    top = d["evidence"][0]
    assert "No space left on device" in top["text"]
    assert top["file"].endswith("n2.log") and top["line"] == len(nodes["n2"])
    # beside a specific signature, the bare traceback start adds nothing
    assert all("Traceback" not in e["text"] for e in d["evidence"])
    assert {e["node"] for e in d["evidence"]} == {"n2"}


def test_untimed_iteration_lines_still_put_a_late_failure_in_training(tmp_path):
    """Megatron prints iterations without timestamps on one rank; the fault line in stderr has none either."""
    run = tmp_path / "run"
    for i in range(3):
        node = run / f"n{i}"
        node.mkdir(parents=True)
        out = [f"NCCL INFO Init COMPLETE rank {i}"] * 5
        if i == 2:
            out += [f" iteration {it:8d}/    1000 | lm loss: 2.5E+00 | grad norm: 1.0 |" for it in range(10, 210, 10)]
        (node / "stdout.log").write_text("\n".join(out) + "\n")
        err = [f"[{ts(0)}] torch.distributed.run: [WARNING] Setting OMP_NUM_THREADS"]
        if i == 1:
            err += ["n1:1:2 [1] transport/net_ib.cc:1696 NCCL WARN NET/IB : Got completion from peer 10.0.0.2<1> "
                    "with status=12 opcode=0 len=0 vendor err 129 (Recv)"]
            err += [f"[{ts(3000)}] torch.distributed.elastic.multiprocessing.api: [ERROR] failed (exitcode: -6) local_rank: 1"]
        else:
            err += watchdog(i, 3600)
        (node / "stderr.log").write_text("\n".join(err) + "\n")
    d = diagnose_paths([str(run)])["diagnosis"]
    assert (d["node"], d["category"], d["stage"], d["iteration"]) == ("n1", "network", "train", 200)


def test_an_exception_printed_with_the_first_timeout_is_a_wrapper_not_the_finding(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=60) for i in range(4)}
    nodes["n0"] += [f"{ts(700)} RuntimeError: the training step failed"] + watchdog(0, 700)
    for i in (1, 2, 3):
        nodes[f"n{i}"] += watchdog(i, 700)
    report = diagnose_paths([str(write_run(tmp_path, nodes))])
    assert report["verdict"] in ("failure", "inconclusive")
    assert report["diagnosis"]["category"] == "hang"


def _root_cause_block(t: float, host: str, code: int) -> list:
    return [
        f"{ts(t)} torch.distributed.elastic.multiprocessing.api: [ERROR] failed (exitcode: {code}) local_rank: 0 (pid: 4242) of binary: /usr/bin/python3",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "Root Cause (first observed failure):",
        f"  host      : {host}",
        f"  exitcode  : {code} (pid: 4242)",
    ]


def _killed_from_outside(t: float, i: int) -> list:
    return [
        f"{ts(t)} torch.distributed.elastic.agent.server.api: [WARNING] Received Signals.SIGTERM death signal, shutting down workers",
        f"{ts(t)} torch.distributed.elastic.multiprocessing.api: [WARNING] Sending process {1000 + i} closing signal SIGTERM",
    ]


def test_nodes_stopped_from_outside_do_not_count_as_failing_first(tmp_path):
    """n3's worker exited with status 1 (an uncaught exception): that is software, even with no traceback shown."""
    nodes = {f"n{i}": healthy_node(i, until=60) for i in range(4)}
    nodes["n3"] += _root_cause_block(70, "n3", 1)
    for i in (0, 1, 2):
        nodes[f"n{i}"] += _killed_from_outside(69, i)  # the scheduler cancels the others (their clocks run early)
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"]) == ("n3", "software")


def test_a_traceback_before_the_launcher_teardown_is_the_cause_not_a_wrapper(tmp_path):
    nodes = {f"n{i}": healthy_node(i, until=60) for i in range(4)}
    nodes["n1"] += [f"{ts(66)} Traceback (most recent call last):", '  File "train.py", line 10, in <module>',
                    "    loader.join()"] + _root_cause_block(68, "n1", 1)
    for i in (0, 2, 3):
        nodes[f"n{i}"] += watchdog(i, 700)
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"]) == ("n1", "software")
    assert "    loader.join()" in [e["text"] for e in d["evidence"][:3]], "a cut-off traceback is cited by its last lines"


def test_a_failure_after_rank0_began_saving_is_in_checkpoint_save_though_rank0_logs_no_times(tmp_path):
    nodes = {
        "n0": [f"[{ts(0)}] launcher start", "training ..."]
        + [line for it in (50, 100) for line in (f"saving checkpoint at iteration {it:7d} to /ckpt",
                                                  f"  successfully saved checkpoint at iteration {it:7d} to /ckpt")]
        + ["saving checkpoint at iteration     150 to /ckpt"],
        "n1": [f"[{ts(0)}] launcher start"],
        "n2": [f"[{ts(0)}] launcher start"]
        + [f"[{ts(10 + it)}] iteration {it:8d}/    1000 | lm loss: 2.5E+00 | grad norm: 1.0 |" for it in range(10, 160, 10)],
    }
    nodes["n1"] += [f"{ts(175)} RuntimeError: CUDA error: uncorrectable ECC error encountered"]
    for i in (0, 2):
        nodes[f"n{i}"] += watchdog(i, 800)
    d = diagnose_paths([str(write_run(tmp_path, nodes))])["diagnosis"]
    assert (d["node"], d["category"], d["stage"], d["iteration"]) == ("n1", "hardware", "checkpoint_save", 150)


def test_exit_codes_masked_alike_are_still_told_apart_per_node(tmp_path):
    """'exitcode : -9' (SIGKILL, the host OOM killer) and '-6' (the watchdog's abort) mask to one key."""
    nodes = {f"n{i}": healthy_node(i, until=60) for i in range(4)}
    nodes["n2"] += _root_cause_block(70, "n2", -9)
    for i in (0, 1, 3):
        nodes[f"n{i}"] += watchdog(i, 700) + _root_cause_block(703, f"n{i}", -6)
    report = diagnose_paths([str(write_run(tmp_path, nodes))])
    d = report["diagnosis"]
    assert report["verdict"] == "failure"
    assert (d["node"], d["category"]) == ("n2", "oom")
