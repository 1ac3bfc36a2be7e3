"""Tests of the rule data in l4diag/patterns/ (faults, collateral, benign).

- every rule's own example matches its regex (parametrized by rule name);
- real failure lines (quoted from /work/shared/data/real_excerpts/, file named in a comment) are
  classified by the best-weight matching fault rule into the expected category;
- every line of the healthy excerpts in tests/data/healthy/ matches no fault or collateral rule
  unless a benign rule also matches it;
- every regex finishes quickly on adversarial lines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from l4diag.rules import load_rules
from l4diag.scoring.patterns import classify_text

RULES = load_rules()
HEALTHY_DIR = Path(__file__).parent / "data" / "healthy"


def _ids(rules):
    return [r.name for r in rules]


@pytest.mark.parametrize("rule", RULES.faults, ids=_ids(RULES.faults))
def test_fault_example_matches(rule):
    assert rule.pattern.search(rule.example), rule.example


@pytest.mark.parametrize("rule", RULES.collateral, ids=_ids(RULES.collateral))
def test_collateral_example_matches(rule):
    assert rule.pattern.search(rule.example), rule.example


@pytest.mark.parametrize("rule", RULES.benign, ids=_ids(RULES.benign))
def test_benign_example_matches(rule):
    assert rule.pattern.search(rule.example), rule.example


def test_rule_counts_and_categories():
    categories = {r.category for r in RULES.faults}
    for cat in ("hardware", "network", "storage", "checkpoint_load", "oom", "software", "hang", "divergence"):
        assert cat in categories, f"no fault rule for {cat}"
    assert len(RULES.faults) >= 60
    for r in RULES.faults + RULES.collateral:
        assert 0.0 <= r.weight <= 1.0


def test_benign_examples_not_flagged_by_benign_exemption_only():
    """A benign example must not be a fault example of another rule (sanity: the sets are disjoint)."""
    fault_examples = {r.example for r in RULES.faults}
    for r in RULES.benign:
        assert r.example not in fault_examples, r.name


def best_fault(line: str):
    """The best-weight fault rule matching `line`, or None if a benign rule matches it."""
    if any(b.search(line) for b in RULES.benign):
        return None
    matches = [r for r in RULES.faults if r.search(line)]
    if not matches:
        return None
    return max(matches, key=lambda r: r.weight)


# (line, expected category). Lines are verbatim from the real excerpts (file in the comment).
REAL_LINES = [
    # gpu_hardware/bigscience-tr1-13B-ecc-uncorrectable.log
    ("RuntimeError: transform: failed to synchronize: cudaErrorECCUncorrectable: uncorrectable ECC error encountered", "hardware"),
    ("  what():  CUDA error: uncorrectable ECC error encountered", "hardware"),
    # gpu_hardware/jade-hpc-194-node-dgk713-ecc.log
    ("RuntimeError: CUDA error: uncorrectable ECC error encountered", "hardware"),
    # gpu_hardware/bigscience-tr11-176B-cuda-unknown-error-default3.log
    ("[default3]:  what():  CUDA error: unknown error", "hardware"),
    ("[default3]:terminate called after throwing an instance of 'c10::CUDAError'", "hardware"),
    # gpu_hardware/open-gpu-km-1150-xid45-after-xid149-145-nvlink.log
    ("kernel: NVRM: Xid (PCI:0000:ed:00): 45, pid=1818992, name=python3, Ch 0000000c caused by previous Xid 145", "hardware"),
    # gpu_hardware/returnn-1486-gpu-lost-pcie-aer-cn-234.log
    ("Unable to determine the device handle for GPU0000:03:00.0: Unknown Error", "hardware"),
    ("[  +0.000006] pcieport 0000:00:03.0: PCIe Bus Error: severity=Corrected, type=Data Link Layer, (Transmitter ID)", "hardware"),
    # network/nccl-928-h100-net-ib-error4-vendor81-multi-host.log
    ("H100-1:9821:9920 [1] transport/net_ib.cc:1295 NCCL WARN NET/IB : Got completion from peer fe80::966d:ae03:8b:df50%ib0<44413> with error 4, opcode 32613, len 32613, vendor err 81 (Send)", "network"),
    # network/ms-swift-6107-rank10-ibv-reg-mr-nccl-error2-megatron.log
    ("[rank10]: RuntimeError: NCCL Error 2: unhandled system error (run with NCCL_DEBUG=INFO for details)", "network"),
    ("[2025-10-13 10:12:54] iv-ydin754tmoxjd1twgixh:1458548:1480527 [0] misc/ibvwrap.cc:182 NCCL WARN Call to ibv_reg_mr_iova2 failed with error Invalid argument", "network"),
    # network/nccl-2076-remote-error-conn-reset-ib-nodes.log
    ("ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely.", "network"),
    ("socketProgressOpt: Call to recv from 172....<33759> failed : Connection reset by peer", "network"),
    # network/pytorch-107021-c10d-store-client-socket-timeout.log
    ("[E socket.cpp:860] [c10d] The client socket has timed out after 60s while trying to connect to 192.0.0.1:1234", "network"),
    ("torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d store has failed. See inner exception for details.", "network"),
    # network/accelerate-157-store-based-barrier-timeout-elastic-restart.log
    ("RuntimeError: Timed out initializing process group in store based barrier on rank: 6, for key: store_based_barrier_key:1 (world_size=8, worker_count=16, timeout=0:30:00)", "network"),
    # network/pytorch-pr129985-tcpstore-connection-reset-trainer-prefix.log
    ("[trainer85612|12]:W0701 13:41:43.421574  4776 TCPStore.cpp:182] [c10d] recvValue failed on SocketImpl(fd=24, ...): Connection reset by peer", "network"),
    # hang/nccl-193-k8s-pods-conn-reset-gpu-100pct.log (root cause: network reset that hung the job)
    ("worker0-0d9gnb:15:91 [3] include/socket.h 398 NCCL WARN Call to write failed : Connection reset by peer.", "network"),
    # storage/naifu-35-rank3-input-output-error-makedirs.log
    ("[rank3]: OSError: [Errno 5] Input/output error: '/app/naifu555'", "storage"),
    # storage/pytorch-10577-write-fd-input-output-error-disk-full.log
    ("RuntimeError: write(): fd 29 failed with Input/output error", "storage"),
    # checkpoint_load/glm-136-deepspeed-zero-dp-world-size-mismatch.log
    ("deepspeed.runtime.zero.utils.ZeRORuntimeException: The checkpoint being loaded used a DP world size of 256 but the current world size is 2. Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is not currently supported.", "checkpoint_load"),
    # checkpoint_load/megatron-deepspeed-439-rank5-zero3-dp-8-vs-16.log
    ("[rank5]: deepspeed.runtime.zero.utils.ZeRORuntimeException: The checkpoint being loaded used a DP world size of 8 but the current world size is 16. Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is not currently supported.", "checkpoint_load"),
    # checkpoint_load/nemo-8460-dist-ckpt-load-different-tp-srun-label.log
    ("[0]:    validate_sharding_integrity(nested_values(sharded_state_dict))", "checkpoint_load"),
    # checkpoint_load/transpeeder-37-deepspeed-load-zero-ckpt-missing.log
    ("  File \"/opt/conda/lib/python3.8/site-packages/deepspeed/runtime/engine.py\", line 2948, in _load_zero_checkpoint", "checkpoint_load"),
    # oom/llamafactory-7781-rank3-cuda-oom-model-load.log (line truncated at the excerpt's own cut)
    ("[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 270.00 MiB. GPU 3 has a total capacity of 23.65 GiB of which 208.06 MiB is free.", "oom"),
    # network/nccl-1235-narval-socket-closed-then-nccl-cuda-oom.log (network symptom, OOM cause)
    ("ng30903:3063028:3066152 [3] include/alloc.h:185 NCCL WARN Failed to CUDA calloc 6291456 bytes", "oom"),
    # oom/3drs-7-dataloader-worker-killed-hf-trainer.log
    ("RuntimeError: DataLoader worker (pid 108439) is killed by signal: Killed.", "oom"),
    # oom/bigscience-tr1-13B-dataloader-shm-bus-error.log
    ("RuntimeError: DataLoader worker (pid 30882) is killed by signal: Bus error. It is possible that dataloader's workers are out of shared memory. Please try to raise your shared memory limit.", "oom"),
    # oom/diffusers-4229-childfailederror-sigbus-shm-multi-rank.log
    ("  traceback : Signal 7 (SIGBUS) received by PID 754", "oom"),
    # software_bug/ddcap-35-ddp-unused-params-rank0-indices.log (line cut at its first sentence)
    ("RuntimeError: Expected to have finished reduction in the prior iteration before starting a new one. This error indicates that your module has parameters that were not used in producing loss.", "software"),
    # software_bug/megatron-deepspeed-pr2-assert-restart-iteration-based.log
    ("AssertionError: only backward compatiblity support for iteration-based training", "software"),
    # loss_divergence/pai-megatron-60-rank3-nan-grad-norm-node-named.log
    ("AssertionError: Rank 3: found NaN in local grad norm in backwards pass. Device: 3, node: set-zw04-kubernetes-pc133.mt", "divergence"),
    # loss_divergence/bigscience-tr8b-104B-overflow-skipping-step-17060.log (low weight, but divergence)
    ("[2022-01-19 13:09:13,305] [INFO] [stage_1_and_2.py:1644:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1048576.0, reducing to 1048576.0", "divergence"),
    # other/megatron-deepspeed-random-ltd-log-keyboardinterrupt-launcher-kill.log (an operator stop: no fault category)
    ("KeyboardInterrupt", "unknown"),
    # hang/llamafactory-6953-rank144-heartbeat-monitor-multinode.log
    ("[rank144]:[E ProcessGroupNCCL.cpp:1316] [PG 0 Rank 144] Heartbeat monitor timed out! Process will be terminated after dumping debug info. workMetaList_.size()=1", "hang"),
]


@pytest.mark.parametrize("line,expected", REAL_LINES, ids=[f"{i:02d}-{c}" for i, (_, c) in enumerate(REAL_LINES)])
def test_real_line_category(line, expected):
    rule = best_fault(line)
    assert rule is not None, f"no fault rule matches: {line!r}"
    assert rule.category == expected, f"{rule.name} ({rule.category}) for {line!r}"


# Lines that must be collateral, not a root-cause fault.
COLLATERAL_LINES = [
    # network/llamafactory-6269-reduce-scatter-watchdog-timeout.log
    "[rank4]:[E1206 18:44:12.755262105 ProcessGroupNCCL.cpp:607] [Rank 4] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7753, OpType=_REDUCE_SCATTER_BASE, NumelIn=544997376, NumelOut=68124672, Timeout(ms)=600000) ran for 600099 milliseconds before timing out.",
    "[rank2]:[E1206 18:44:16.994987462 ProcessGroupNCCL.cpp:627] [Rank 2] To avoid data inconsistency, we are taking the entire process down.",
    # hang/pytorch-118369-nemo-watchdog-after-7h-stuck.log
    "[E ProcessGroupNCCL.cpp:458] [Rank 7] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=64088, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 25625251 milliseconds before timing out.",
    # software_bug/ms-swift-8307-childfailederror-multi-rank-timestamped.log
    "2026-09-17 13:40:05 torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    # software_bug/flagembedding-51-root-cause-block-batch-too-large.log
    "Root Cause (first observed failure):",
    # network/accelerate-157-store-based-barrier-timeout-elastic-restart.log
    "INFO:torch.distributed.elastic.agent.server.api:[default] Worker group FAILED. 2/3 attempts left; will restart worker group",
]


@pytest.mark.parametrize("line", COLLATERAL_LINES, ids=[f"collateral-{i:02d}" for i in range(len(COLLATERAL_LINES))])
def test_collateral_lines(line):
    assert any(r.search(line) for r in RULES.collateral), line
    assert best_fault(line) is None, f"{best_fault(line).name} matched collateral line {line!r}"


# Lines that look like errors but are normal (must be exempted by benign rules or match nothing).
BENIGN_LINES = [
    # normal/megatron-51-startup-load-release-checkpoint.log
    "libibverbs: Warning: no userspace device-specific driver found for /sys/class/infiniband_verbs/uverbs0",
    "could not find arguments in the checkpoint ...",
    # hang/bigscience-tr11-176B-eval-hang-45000.log (the PULSE lines themselves are normal)
    "[2022-05-01 04:56:13] PULSE: tr11-176B-ml is running for 1-08:27:35 since 2022-04-29T20:28:38 (1528763 on 'gpu_p5' partition (jean-zay-iam[01-34,36-49])",
    # other/megatron-deepspeed-random-ltd-log-keyboardinterrupt-launcher-kill.log (operator stop)
    "NameError: free variable 'kill_cmd' referenced before assignment in enclosing scope",
    # loss_divergence/bigscience-tr1-13B-lm-loss-spike.log (a Megatron iteration line)
    " iteration    29050/  311541 | consumed samples:     10728784 | elapsed time per iteration (ms): 22148.5 | learning rate: 9.849E-05 | global batch size:  1024 | lm loss: 7.343709E+00 | loss scale: 8192.0 | grad norm: 0.000 | num zeros: 0.0 | number of skipped iterations:   0 | number of nan iterations:   0 |",
]


@pytest.mark.parametrize("line", BENIGN_LINES, ids=[f"benign-{i:02d}" for i in range(len(BENIGN_LINES))])
def test_benign_lines_not_faults(line):
    assert best_fault(line) is None


def _healthy_files():
    files = sorted(p for p in HEALTHY_DIR.iterdir() if p.is_file() and p.name != "SOURCES.md")
    assert files, "no healthy test data"
    return files


def test_healthy_data_is_small():
    assert sum(p.stat().st_size for p in HEALTHY_DIR.iterdir()) < 20 * 1024


@pytest.mark.parametrize("path", _healthy_files(), ids=lambda p: p.name)
def test_healthy_lines_not_flagged(path):
    bad = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if any(b.search(line) for b in RULES.benign):
            continue
        hits = [r.name for r in RULES.faults + RULES.collateral if r.search(line)]
        if hits:
            bad.append((lineno, hits, line[:200]))
    assert not bad, bad


ADVERSARIAL = [
    "a" * 200_000,
    "0x" * 100_000,
    " " * 100_000 + "x",
    "NCCL WARN " * 20_000,
    ":" * 100_000,
    "[" * 100_000,
    "]:" * 100_000,
    "Xid (" * 40_000,
    "Error" * 40_000,
    "[rank0]:" * 20_000 + "Error",
    "a." * 100_000 + "Error",
    "1" * 200_000,
    "\t" * 100_000 + "Exception",
    "FileNotFoundError " + "x" * 200_000,
]

ALL_RULES = RULES.faults + RULES.collateral + RULES.benign


@pytest.mark.parametrize("rule", ALL_RULES, ids=[f"{r.kind}-{r.name}" for r in ALL_RULES])
def test_regex_is_fast_on_adversarial_lines(rule):
    for text in ADVERSARIAL:
        start = time.perf_counter()
        rule.pattern.search(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 0.5, f"{rule.name} took {elapsed:.3f}s on {text[:20]!r}..."


def test_every_rule_example_passes_the_alarm_word_prefilter():
    """Lines are matched against the rules only when they carry an alarm word: no rule may be unreachable."""
    from l4diag.mask import Masker
    from l4diag.scoring.patterns import ALARM_WORDS_RE

    rules = load_rules()
    masker = Masker(rules)
    unreachable = [r.name for r in [*rules.faults, *rules.collateral, *rules.benign]
                   if not ALARM_WORDS_RE.search(masker.key(r.example))]
    assert unreachable == []


def test_combined_marker_prefilter_is_fast_on_adversarial_blocks():
    """The markers are searched as one alternation over whole blocks: that must stay linear too."""
    from l4diag.context import Markers, block_marker_pattern

    pattern = block_marker_pattern(Markers.from_rules(load_rules()))
    block = "\n".join(["\t" * 50_000 + "Exception", " " * 50_000 + "x", "1." * 50_000, "[rank0]:" * 10_000, "%|" * 20_000])
    start = time.perf_counter()
    list(pattern.finditer(block))
    # linear takes ~0.1 s, catastrophic backtracking minutes: a loose bound that a busy machine keeps
    assert time.perf_counter() - start < 5.0


def test_rules_that_anchor_at_the_message_start_match_after_a_timestamp_and_rank_tag():
    hit = classify_text("2024-01-10T01:22:46.341056Z [rank7]: AttributeError: 'NoneType' object has no attribute 'size'", RULES)
    assert hit.is_fault and hit.fault_rule.category == "software"


def test_a_traceback_frame_in_the_checkpoint_writer_is_a_save_stage_marker():
    markers = {r.name: r for r in RULES.stages}
    frame = '  File "/workspace/megatron/training/checkpointing.py", line 416, in save_checkpoint'
    assert markers["traceback_frame_in_checkpoint_save"].search(frame)
    assert not markers["traceback_frame_in_checkpoint_save"].search('  File "/w/train.py", line 9, in train_step')


def test_deepspeed_launcher_reporting_sigkill_is_a_host_oom_hint():
    # source: https://github.com/deepspeedai/DeepSpeed/issues/3232 (argument list shortened)
    line = ("[2023-04-14 13:11:27,885] [ERROR] [launch.py:434:sigkill_handler] ['/usr/bin/python3', '-u', 'main.py', "
            "'--local_rank=0'] exits with return code = -9")
    assert best_fault(line).name == "sigkill_received"
