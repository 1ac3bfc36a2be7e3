"""Real failure excerpts as scenarios: which category, stage and framework each one stands for.

The table states the root cause the source states (SOURCES.md), not the visible symptom:
``network/nccl-1235-...`` is labelled ``oom`` (GPU memory exhaustion during NCCL setup)
and ``hang/nccl-193-...`` ``network`` (a connection reset that left the job hung).
``other/`` (an operator's KeyboardInterrupt) is labelled verdict ``failure``, category
``unknown``, subcategory ``operator_interrupt``: the run did stop abnormally, but no
fault category applies; a diagnoser should not name an infrastructure fault.

Evidence lines of an excerpt are picked by a light heuristic (``FAIL_RE`` minus traceback
frames and code lines), or by the table's own regex where the heuristic is wrong
(loss spikes are numbers, not words; an excerpt that stops before its exception line
gets its last two frames, ``LAST_LINES``). At most ``MAX_EVIDENCE`` lines, first in file order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FOLDER_CATEGORY = {
    "gpu_hardware": "hardware", "loss_divergence": "divergence", "software_bug": "software", "network": "network",
    "storage": "storage", "oom": "oom", "hang": "hang", "checkpoint_load": "checkpoint_load", "other": "unknown",
}
MAX_EVIDENCE = 8
FAIL_RE = re.compile(
    r"(?i)(error|exception|fail|killed|timed? ?out|timeout|\bnan\b(?! iterations)|uncorrectable|\bxid\b|gpu is lost|fallen off|"
    r"overflow|reset by peer|closed by remote|abort|terminate|exitcode|assert|unable to|no such file|quota|stale file|"
    r"mismatch|keyboardinterrupt|out of memory|unknown error|heartbeat|not match)"
)
NOT_EVIDENCE_RE = re.compile(
    r"""^\s*(?:\[[^\]]*\]:)?(?:\s*(?:File "|frame #|Traceback \(most recent call last\)|During handling|The above exception|"""
    r"""Exception raised from|warnings\.warn|raise |return |[\w.]+\s*=\s*[\w.\[\]]+\(|.*asynchronously reported|"""
    r""".*CUDA_LAUNCH_BLOCKING|.*TORCH_USE_CUDA_DSA)|\s{4,}\S)"""
)
ITERATION_RES = (
    re.compile(r"\biteration\s+(\d+)\s*/\s*\d+\s*\|"),
    re.compile(r"\biter: (\d+)\b"),
    re.compile(r"global_step=(\d+(?:\.\d+)?(?:e\+?\d+)?)"),
    re.compile(r"\[Rank \d+\] step=(\d+)"),
)


@dataclass(frozen=True)
class ExcerptInfo:
    category: str
    subcategory: str
    stage: str
    framework: str
    kernel: bool = False  # kernel/dmesg or nvidia-smi text: printed by the node, not a worker
    evidence_re: str | None = None  # overrides the heuristic


TABLE: dict[str, ExcerptInfo] = {
    # checkpoint_load
    "dddd-trainer-36-corrupt-ckpt-after-disk-full": ExcerptInfo("checkpoint_load", "corrupt_checkpoint", "checkpoint_load", "hf", evidence_re="LAST_LINES"),
    "glm-136-deepspeed-zero-dp-world-size-mismatch": ExcerptInfo("checkpoint_load", "zero_dp_world_size_mismatch", "checkpoint_load", "deepspeed"),
    "megatron-deepspeed-439-rank5-zero3-dp-8-vs-16": ExcerptInfo("checkpoint_load", "zero_dp_world_size_mismatch", "checkpoint_load", "deepspeed"),
    "nemo-8460-dist-ckpt-load-different-tp-srun-label": ExcerptInfo("checkpoint_load", "dist_checkpoint_sharding_mismatch", "checkpoint_load", "megatron", evidence_re="LAST_LINES"),
    "transpeeder-37-deepspeed-load-zero-ckpt-missing": ExcerptInfo("checkpoint_load", "checkpoint_file_missing", "checkpoint_load", "deepspeed", evidence_re="LAST_LINES"),
    # hardware
    "bigscience-tr1-13B-ecc-uncorrectable": ExcerptInfo("hardware", "gpu_ecc_uncorrectable", "train", "megatron"),
    "bigscience-tr11-176B-cuda-unknown-error-default3": ExcerptInfo("hardware", "cuda_unknown_error", "train", "megatron"),
    "jade-hpc-194-node-dgk713-ecc": ExcerptInfo("hardware", "gpu_ecc_uncorrectable", "train", "hf"),
    "open-gpu-km-1150-xid45-after-xid149-145-nvlink": ExcerptInfo("hardware", "gpu_xid_nvlink", "train", "megatron", kernel=True, evidence_re=r"Xid"),
    "pytorch-43685-gpu-lost-nvrm-ailcm-ai1": ExcerptInfo("hardware", "gpu_lost", "train", "hf", kernel=True, evidence_re=r"NVRM"),
    "returnn-1486-gpu-lost-pcie-aer-cn-234": ExcerptInfo("hardware", "gpu_lost_pcie_aer", "train", "torchtitan", kernel=True, evidence_re=r"(?i)unknown error|AER|error"),
    # hang
    "bigscience-tr11-176B-eval-hang-45000": ExcerptInfo("hang", "eval_dataloader_deadlock", "train", "megatron", evidence_re=r"$^"),
    "llamafactory-6953-rank144-heartbeat-monitor-multinode": ExcerptInfo("hang", "heartbeat_monitor_timeout", "init", "hf"),
    "nccl-193-k8s-pods-conn-reset-gpu-100pct": ExcerptInfo("network", "nccl_connection_reset", "train", "hf"),
    "open-r1-620-grpo-broadcast-timeout-1800000": ExcerptInfo("hang", "rank_never_joined", "init", "hf"),
    "pytorch-118369-nemo-watchdog-after-7h-stuck": ExcerptInfo("hang", "collective_desync", "train", "megatron"),
    # divergence
    "bigscience-tr1-13B-lm-loss-spike": ExcerptInfo("divergence", "loss_spike", "train", "megatron", evidence_re="LOSS_JUMP"),
    "bigscience-tr8-104B-exp1-glitch-7000": ExcerptInfo("divergence", "loss_spike", "train", "megatron", evidence_re="LOSS_JUMP"),
    "bigscience-tr8b-104B-overflow-skipping-step-17060": ExcerptInfo("divergence", "loss_scale_collapse", "train", "megatron", evidence_re=r"OVERFLOW|LOSS_JUMP"),
    "megatron-llm-33-falcon40b-nan-after-3383": ExcerptInfo("divergence", "nan_loss", "train", "megatron", evidence_re="LAST_LINE"),
    "pai-megatron-60-rank3-nan-grad-norm-node-named": ExcerptInfo("divergence", "nan_grad_norm", "train", "megatron"),
    # network
    "accelerate-157-store-based-barrier-timeout-elastic-restart": ExcerptInfo("network", "c10d_store_barrier_timeout", "init", "hf"),
    "llamafactory-6269-reduce-scatter-watchdog-timeout": ExcerptInfo("network", "nccl_watchdog_timeout", "train", "hf"),
    "ms-swift-6107-rank10-ibv-reg-mr-nccl-error2-megatron": ExcerptInfo("network", "ibv_error", "train", "megatron"),
    "nccl-1235-narval-socket-closed-then-nccl-cuda-oom": ExcerptInfo("oom", "nccl_cuda_oom", "init", "torchtitan"),
    "nccl-2076-remote-error-conn-reset-ib-nodes": ExcerptInfo("network", "nccl_remote_error", "train", "deepspeed"),
    "nccl-928-h100-net-ib-error4-vendor81-multi-host": ExcerptInfo("network", "nccl_ib_completion_error", "train", "deepspeed"),
    "pytorch-107021-c10d-store-client-socket-timeout": ExcerptInfo("network", "c10d_rendezvous_connect_failed", "init", "torchtitan"),
    "pytorch-pr129985-tcpstore-connection-reset-trainer-prefix": ExcerptInfo("network", "tcpstore_connection_reset", "init", "torchtitan"),
    # oom
    "3drs-7-dataloader-worker-killed-hf-trainer": ExcerptInfo("oom", "dataloader_worker_killed", "train", "hf"),
    "bigscience-tr1-13B-dataloader-shm-bus-error": ExcerptInfo("oom", "shm_bus_error", "train", "megatron"),
    "diffusers-4229-childfailederror-sigbus-shm-multi-rank": ExcerptInfo("oom", "shm_sigbus", "train", "hf", evidence_re=r"exitcode|SIGBUS"),
    "llamafactory-7781-rank3-cuda-oom-model-load": ExcerptInfo("oom", "cuda_oom", "checkpoint_load", "hf"),
    "upsnet-139-dataloader-killed-batch8980": ExcerptInfo("oom", "dataloader_worker_killed", "train", "hf", evidence_re="LAST_LINES"),
    # other
    "megatron-deepspeed-random-ltd-log-keyboardinterrupt-launcher-kill": ExcerptInfo("unknown", "operator_interrupt", "train", "deepspeed", evidence_re=r"KeyboardInterrupt|Killing subprocess|SIGTERM"),
    # software
    "ddcap-35-ddp-unused-params-rank0-indices": ExcerptInfo("software", "ddp_unused_parameters", "train", "hf"),
    "flagembedding-51-root-cause-block-batch-too-large": ExcerptInfo("software", "config_error", "init", "hf", evidence_re=r"exitcode"),
    "megatron-deepspeed-pr2-assert-restart-iteration-based": ExcerptInfo("software", "assertion_error", "init", "megatron"),
    "ms-swift-8307-childfailederror-multi-rank-timestamped": ExcerptInfo("software", "python_exception", "train", "hf", evidence_re=r"exitcode|FAILED"),
    "open-r1-692-rank0-traceback-with-collector-timestamps": ExcerptInfo("software", "shape_mismatch", "train", "hf", evidence_re="LAST_LINES"),
    # storage
    "diffusiondet-39-8gpu-oserror-at-save-iter4999": ExcerptInfo("storage", "oserror_on_save", "checkpoint_save", "hf", evidence_re=r"ERROR|OSError"),
    "mmdet-12069-mmengine-save-epoch14-disk-quota": ExcerptInfo("storage", "disk_quota_exceeded", "checkpoint_save", "hf", evidence_re="LAST_LINES"),
    "naifu-35-rank3-input-output-error-makedirs": ExcerptInfo("storage", "io_error", "checkpoint_save", "torchtitan"),
    "pytorch-10577-write-fd-input-output-error-disk-full": ExcerptInfo("storage", "io_error", "checkpoint_save", "hf"),
    "transformers-9732-stale-file-handle-optimizer-save": ExcerptInfo("storage", "stale_file_handle", "checkpoint_save", "hf", evidence_re="LAST_LINES"),
}


@dataclass(frozen=True)
class Excerpt:
    path: Path
    rel: str  # "<folder>/<file>"
    info: ExcerptInfo
    lines: list[str]

    @property
    def iterations(self) -> list[int | None]:
        return [excerpt_iteration(ln) for ln in self.lines]


def excerpt_iteration(line: str) -> int | None:
    for rx in ITERATION_RES:
        m = rx.search(line)
        if m:
            return int(float(m.group(1)))
    return None


def default_info(folder: str, stem: str) -> ExcerptInfo:
    """An excerpt not in the table: the folder's category, training stage."""
    return ExcerptInfo(FOLDER_CATEGORY.get(folder, "unknown"), folder, "train", "megatron")


def find_excerpts(root: Path) -> list[Excerpt]:
    """Every excerpt file under ``root`` except ``normal/``, sorted by path."""
    out = []
    for path in sorted(root.glob("*/*")):
        folder = path.parent.name
        if folder == "normal" or not path.is_file() or path.suffix not in (".log", ".txt", ".out"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        info = TABLE.get(path.stem) or default_info(folder, path.stem)
        out.append(Excerpt(path=path, rel=f"{folder}/{path.name}", info=info, lines=lines))
    return out


_FILLER_RE = re.compile(r"^\s*(?:\[[^\]]*\]:)?\s*(?:\^+|~+|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*$")
_LOSS_RE = re.compile(r"(?:lm loss|loss)\s*[:=]\s*([0-9.]+E?[+-]?\d*)")


def evidence_indices(ex: Excerpt) -> list[int]:
    """Which excerpt lines are failure-indicating (see the module docstring)."""
    rx = ex.info.evidence_re
    picked: list[int] = []
    if rx == "LAST_LINE":
        picked = [len(ex.lines) - 1]
    elif rx == "LAST_LINES":  # the excerpt stops before its exception line: the deepest frames are all there is
        picked = [i for i, ln in enumerate(ex.lines) if ln.strip() and not _FILLER_RE.match(ln)][-2:]
    elif rx and "LOSS_JUMP" in rx:
        picked = _loss_jumps(ex.lines)
        other = rx.replace("LOSS_JUMP", "").strip("|")
        if other:
            picked += [i for i, ln in enumerate(ex.lines) if re.search(other, ln)]
        picked = sorted(set(picked))
    elif rx:
        picked = [i for i, ln in enumerate(ex.lines) if re.search(rx, ln) and not NOT_EVIDENCE_RE.match(ln)]
        if not picked:
            picked = [i for i, ln in enumerate(ex.lines) if re.search(rx, ln)]
    else:
        picked = [i for i, ln in enumerate(ex.lines) if FAIL_RE.search(ln) and not NOT_EVIDENCE_RE.match(ln)]
    return [i for i in picked if ex.lines[i].strip()][:MAX_EVIDENCE]


def _loss_jumps(lines: list[str]) -> list[int]:
    """Iteration lines whose loss is well above the first loss in the excerpt (or NaN)."""
    first = None
    out = []
    for i, ln in enumerate(lines):
        m = _LOSS_RE.search(ln)
        if not m:
            if re.search(r"\bnan\b", ln, re.I) and excerpt_iteration(ln) is not None:
                out.append(i)
            continue
        try:
            val = float(m.group(1))
        except ValueError:
            continue
        if first is None:
            first = val
        elif val > first * 1.3:
            out.append(i)
    return out
