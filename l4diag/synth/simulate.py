"""Simulate a healthy multi-node training run: schedule, per-node lines in real framework shapes.

A ``Simulation`` owns one ``random.Random`` (no global state, no wall clock) and produces,
per node, a list of ``Line`` with true times. Faults (``faults.py``) cut the healthy
timeline at the fault time and add root-cause and collateral lines.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from . import clock
from .records import Line, Node, RunSpec

HOST_FAMILIES = ("gpu-node-{:02d}", "nid{:06d}", "jean-zay-iam{:02d}", "worker-{}", "dgx-a100-{:03d}")
MODELS = ("gpt3-1.3b", "llama2-7b", "llama3-8b", "gpt3-13b", "mixtral-8x7b", "bloom-3b")
BENIGN_WARNINGS = (
    (
        "/usr/local/lib/python3.10/dist-packages/torch/utils/checkpoint.py:429: UserWarning: torch.utils.checkpoint: "
        "please pass in use_reentrant=True or use_reentrant=False explicitly. The default value of use_reentrant will "
        "be updated to be False in the future. To maintain current behavior, pass use_reentrant=True. It is "
        "recommended that you use use_reentrant=False. Refer to docs for more details on the differences between the "
        "two variants.",
        "  warnings.warn(",
    ),
    (
        "/opt/conda/lib/python3.10/site-packages/torch/cuda/amp/grad_scaler.py:120: FutureWarning: "
        "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use `torch.amp.GradScaler('cuda', args...)` instead.",
        "  warnings.warn(",
    ),
    (
        "/usr/local/lib/python3.10/dist-packages/transformer_engine/pytorch/attention.py:2861: DeprecationWarning: "
        "Argument 'qkv_format' is deprecated and will be removed in a future release.",
        "  warnings.warn(",
    ),
    (
        "/opt/conda/lib/python3.10/site-packages/torch/distributed/distributed_c10d.py:3859: UserWarning: "
        "barrier(): using the device under current context. You can specify `device_id` in `init_process_group` "
        "to mute this warning.",
        "  warnings.warn(  # warn only once",
    ),
)


@dataclass
class Event:
    """One step of the training schedule, in true seconds since launch."""

    kind: str  # "iter" | "save" | "eval"
    iteration: int
    t: float
    t_end: float = 0.0


def host_names(rng: random.Random, count: int) -> list[str]:
    """Host names of one family, a random contiguous-ish block."""
    fam = rng.choice(HOST_FAMILIES)
    start = rng.randint(0 if "worker" in fam else 1, 40)
    if fam.startswith("nid"):
        start = rng.randint(1000, 9000)
    return [fam.format(start + i) for i in range(count)]


class Simulation:
    """A healthy run's schedule and line emitters; faults cut and extend it."""

    def __init__(self, spec: RunSpec, rng: random.Random, need_resume: bool = False, first_iteration_hint: int | None = None) -> None:
        self.spec = spec
        self.rng = rng
        self.fw = spec.framework
        self.per_rank_nodes = spec.layout == "combined-rank"
        self.gpus = 1 if self.per_rank_nodes else 8
        self.world = spec.nodes * self.gpus
        self.base_epoch = 1_704_067_200 + rng.randint(0, 500) * 86_400 + rng.randint(0, 86_000)
        self.collector_ts = rng.random() < 0.45
        self.rank_tag = rng.random() < 0.6  # PyTorch >= 2.2 tags c10d lines with [rankN]:
        self.megatron_ts = rng.random() < 0.75
        self.nccl_debug = rng.random() < 0.85
        self.nccl_channels = rng.choice((2, 4, 8, 16, 24))
        self.rank_prefix_style = rng.choice(("bracket", "srun"))  # combined-rank: [rankN]: or N:
        self.journald = rng.random() < 0.5  # kernel lines as journald (host named) or bare dmesg
        self.fp16 = rng.random() < 0.4
        self.model = rng.choice(MODELS)
        self.ckpt_dir = rng.choice(("/checkpoints", "/lustre/ckpt", "/mnt/fsx/ckpt", "/gpfsscratch/rech/ckpt")) + "/" + self.model
        self.timeout_ms = rng.choice((600000, 600000, 1800000))
        self.log_interval = rng.choice((1, 5, 10, 10, 20, 50))
        if first_iteration_hint is not None:  # an injected excerpt continues the run's own iteration numbers
            self.log_interval = 10 if first_iteration_hint % 10 == 0 else 1
        self.iter_time = rng.uniform(0.8, 6.0) if self.log_interval <= 10 else rng.uniform(0.4, 2.0)
        self.n_logged = rng.randint(100, 600)
        self.save_every = rng.randint(25, 70)  # in logged iterations
        self.resume = rng.random() < 0.5 or need_resume
        self.start_iter = self.log_interval * self.save_every * rng.randint(1, 20) if self.resume else 0
        self.total_iters = self.start_iter + self.log_interval * self.n_logged * rng.randint(1, 4)
        self.seq_base = rng.randint(1000, 90000)
        hosts = host_names(rng, spec.nodes if not self.per_rank_nodes else max(1, math.ceil(spec.nodes / 8)))
        self.nodes = self._make_nodes(hosts)
        self.slow = rng.randrange(spec.nodes)  # starts late, iterates a bit slower
        self.nodes[self.slow].start_delay += rng.uniform(4.0, 15.0)
        self.master = self.nodes[0].host
        self.master_ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
        self.ips = [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{i + 10}" for i in range(spec.nodes)]
        self.noise: set[str] = set()
        self.loss_spike_at: int | None = None
        self.diverge_at: int | None = None  # set by the divergence fault before training is emitted
        self.nan_after = rng.randint(1, 3)  # logged iterations of blow-up before NaN
        self.events: list[Event] = []
        self.init_end = 0.0
        self.load_start = self.load_end = 0.0
        self.train_start = 0.0
        self.end_t = 0.0
        self._schedule()

    # ---- setup -------------------------------------------------------------

    def _make_nodes(self, hosts: list[str]) -> list[Node]:
        nodes = []
        for i in range(self.spec.nodes):
            if self.per_rank_nodes:
                host, name = hosts[i // 8], f"rank{i}"
            else:
                host = name = hosts[i]
            nodes.append(
                Node(
                    index=i,
                    name=name,
                    host=host,
                    gpus=self.gpus,
                    first_rank=i * self.gpus,
                    clock_offset=self.rng.uniform(-0.35, 0.35),
                    start_delay=self.rng.uniform(0.0, 2.0),
                    pid_base=self.rng.randint(2000, 400000),
                )
            )
        return nodes

    def _schedule(self) -> None:
        rng = self.rng
        self.init_end = max(n.start_delay for n in self.nodes) + rng.uniform(30.0, 80.0)
        t = self.init_end
        if self.resume:
            self.load_start = t + 1.0
            self.load_end = self.load_start + rng.uniform(10.0, 40.0)
            t = self.load_end
        self.train_start = t + rng.uniform(2.0, 5.0)
        t = self.train_start
        slow = 1.0
        for k in range(1, self.n_logged + 1):
            it = self.start_iter + k * self.log_interval
            t += self.log_interval * self.iter_time * rng.uniform(0.97, 1.05) * slow
            self.events.append(Event("iter", it, t))
            if k % self.save_every == 0 or k == self.n_logged:
                dur = rng.uniform(6.0, 40.0)
                self.events.append(Event("save", it, t + 0.5, t + 0.5 + dur))
                t += dur + 1.0
        self.end_t = t + rng.uniform(2.0, 6.0)

    @property
    def printer(self) -> Node:
        """The node that prints iteration lines: Megatron's last pipeline rank, else rank 0."""
        return self.nodes[-1] if self.fw == "megatron" else self.nodes[0]

    def epoch(self, node: Node, t: float) -> float:
        return self.base_epoch + t + node.clock_offset

    def add(self, node: Node, t: float, text: str, lr: int | None = None, stream: str = "stdout", **kw) -> Line:
        line = Line(t=t, text=text, local_rank=lr, stream=stream, **kw)
        node.lines.append(line)
        return line

    def c10d_tag(self, node: Node, lr: int) -> str:
        return f"[rank{node.rank(lr)}]:" if self.rank_tag else ""

    def nccl(self, node: Node, lr: int, tid: int | None = None) -> str:
        pid = node.pid(lr)
        return f"{node.host}:{pid}:{tid if tid is not None else pid} [{lr}]"

    # ---- healthy run -------------------------------------------------------

    def build_healthy(self) -> None:
        for node in self.nodes:
            self.emit_launcher(node)
            if self.nccl_debug:
                self.emit_nccl_init(node)
            self.emit_startup(node)
            self.emit_warnings(node)
            if self.resume:
                self.emit_checkpoint_load(node)
        self.emit_benign_retries()
        self.emit_training()
        for node in self.nodes:
            self.emit_shutdown(node)

    def emit_launcher(self, node: Node) -> None:
        t = node.start_delay
        if self.fw == "deepspeed":
            ts = clock.bracket(self.epoch(node, t))
            self.add(node, t, f"{ts} [INFO] [launch.py:146:main] WORLD INFO DICT: {{'{node.host}': [0, 1, 2, 3, 4, 5, 6, 7]}}", stream="stderr")
            self.add(node, t, f"{ts} [INFO] [launch.py:152:main] nnodes={self.spec.nodes}, num_local_procs={node.gpus}, node_rank={node.index}", stream="stderr")
            self.add(node, t, f"{ts} [INFO] [launch.py:163:main] dist_world_size={self.world}", stream="stderr")
            self.add(node, t, f"{ts} [INFO] [launch.py:165:main] Setting CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7", stream="stderr")
            return
        ts = clock.bracket(self.epoch(node, t))
        self.add(node, t, f"{ts} torch.distributed.run: [WARNING] ", stream="stderr")
        self.add(node, t, f"{ts} torch.distributed.run: [WARNING] *****************************************", stream="stderr")
        self.add(
            node, t,
            f"{ts} torch.distributed.run: [WARNING] Setting OMP_NUM_THREADS environment variable for each process to be 1 in "
            "default, to avoid your system being overloaded, please further tune the variable for optimal performance in "
            "your application as needed. ",
            stream="stderr",
        )
        self.add(node, t, f"{ts} torch.distributed.run: [WARNING] *****************************************", stream="stderr")

    def emit_nccl_init(self, node: Node) -> None:
        rng = self.rng
        t0 = node.start_delay + rng.uniform(8.0, 20.0)
        ip = self.ips[node.index]
        for lr in range(node.gpus):
            t = t0 + lr * 0.01
            p = self.nccl(node, lr)
            rank = node.rank(lr)
            comm = f"0x{rng.getrandbits(44):x}"
            if rank == 0:
                self.add(node, t, f"{p} NCCL INFO Bootstrap : Using ib0:{ip}<0>", lr)
                self.add(node, t, "NCCL version 2.18.5+cuda12.2", lr)
            self.add(node, t, f"{p} NCCL INFO NET/Plugin : No plugin found (libnccl-net.so), using internal implementation", lr)
            self.add(node, t, f"{p} NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB [2]mlx5_2:1/IB [3]mlx5_3:1/IB ; OOB ib0:{ip}<0>", lr)
            self.add(node, t, f"{p} NCCL INFO Using network IB", lr)
            tid = node.pid(lr) + rng.randint(50, 900)
            bus = ("18000", "2a000", "3a000", "5d000", "9a000", "ab000", "ba000", "db000")[lr % 8]
            self.add(node, t + 0.2, f"{p} NCCL INFO comm {comm} rank {rank} nranks {self.world} cudaDev {lr} busId {bus} commId 0x{self.seq_base:x}9f3c - Init START", lr)
            for ch in range(self.nccl_channels):  # NCCL_DEBUG=INFO floods: one line per channel and peer
                peer = (rank + 1) % self.world
                via = "via P2P/IPC/read" if (lr + 1) % node.gpus else f"[send] via NET/IB/{ch % 4}/GDRDMA"
                self.add(node, t + 0.4, f"{self.nccl(node, lr, tid)} NCCL INFO Channel {ch:02d}/0 : {rank}[{lr}] -> {peer}[{(lr + 1) % node.gpus}] {via}", lr)
            self.add(node, t + 0.6, f"{self.nccl(node, lr, tid)} NCCL INFO Connected all rings", lr)
            self.add(node, t + 0.6, f"{self.nccl(node, lr, tid)} NCCL INFO Connected all trees", lr)
            self.add(node, t + 0.7, f"{p} NCCL INFO comm {comm} rank {rank} nranks {self.world} cudaDev {lr} busId {bus} commId 0x{self.seq_base:x}9f3c - Init COMPLETE", lr)

    def emit_startup(self, node: Node) -> None:
        t = node.start_delay + 3.0
        if self.fw == "megatron":
            self._megatron_startup(node, t)
        elif self.fw == "deepspeed":
            self._deepspeed_startup(node, t)
        elif self.fw == "hf":
            self._hf_startup(node, t)
        else:
            self._titan_startup(node, t)

    def _megatron_startup(self, node: Node, t: float) -> None:
        if node.index != 0:
            return
        tp = self.rng.choice((1, 2, 4, 8))
        pp = self.rng.choice((1, 2, 4)) if self.spec.nodes >= 4 else 1
        dp = max(1, self.world // (tp * pp))
        self.add(node, t, f"using world size: {self.world}, data-parallel size: {dp}, context-parallel size: 1, tensor-model-parallel size: {tp}, pipeline-model-parallel size: {pp} ", 0)
        self.add(node, t, "------------------------ arguments ------------------------", 0)
        args = {
            "adam_beta1": "0.9", "adam_beta2": "0.95", "bf16": str(not self.fp16), "clip_grad": "1.0",
            "data_parallel_size": str(dp), "eval_interval": "1000", "ffn_hidden_size": "11008",
            "fp16": str(self.fp16), "global_batch_size": "512", "hidden_size": "4096",
            "load": self.ckpt_dir if self.resume else "None", "log_interval": str(self.log_interval),
            "lr": "0.0003", "micro_batch_size": "1", "num_attention_heads": "32", "num_layers": "32",
            "pipeline_model_parallel_size": str(pp), "save": self.ckpt_dir,
            "save_interval": str(self.save_every * self.log_interval), "seq_length": "4096",
            "tensor_model_parallel_size": str(tp), "train_iters": str(self.total_iters), "world_size": str(self.world),
        }
        for key, val in args.items():
            self.add(node, t, f"  {key} {'.' * max(3, 48 - len(key))} {val}", 0)
        self.add(node, t, "-------------------- end of arguments ---------------------", 0)
        self.add(node, t + 0.5, "> initializing torch distributed ...", 0)
        self.add(node, t + 20, f"> initialized tensor model parallel with size {tp}", 0)
        self.add(node, t + 20, f"> initialized pipeline model parallel with size {pp}", 0)
        self.add(node, t + 20, "> setting random seeds to 1234 ...", 0)
        self.add(node, t + 21, "> compiling dataset index builder ...", 0)
        self.add(node, t + 23, ">>> done with dataset index builder. Compilation time: 0.052 seconds", 0)
        self.add(node, t + 24, f"time to initialize megatron (seconds): {24 + self.rng.uniform(0, 9):.3f}", 0)
        self.add(node, t + 24, f"[after megatron is initialized] datetime: {clock.seconds(self.epoch(node, t + 24))} ", 0)
        self.add(node, t + 25, "building GPT model ...", 0)
        self.add(node, t + 26, f" > number of parameters on (tensor, pipeline) model parallel rank (0, 0): {self.rng.randint(10**8, 10**9)}", 0)

    def _deepspeed_startup(self, node: Node, t: float) -> None:
        for lr in range(node.gpus):
            ts = clock.bracket(self.epoch(node, t + 1 + lr * 0.003))
            self.add(node, t + 1, f"{ts} [INFO] [comm.py:637:init_distributed] cdb=None", lr)
        if node.index != 0:
            return
        ts = clock.bracket(self.epoch(node, t + 1))
        self.add(node, t + 1, f"{ts} [INFO] [comm.py:668:init_distributed] Initializing TorchBackend in DeepSpeed with backend nccl", 0)
        ts = clock.bracket(self.epoch(node, t + 25))
        self.add(node, t + 25, f"{ts} [INFO] [logging.py:96:log_dist] [Rank 0] DeepSpeed info: version=0.12.6, git-hash=unknown, git-branch=unknown", 0)
        self.add(node, t + 25, f"{ts} [INFO] [logging.py:96:log_dist] [Rank 0] DeepSpeed Flops Profiler Enabled: False", 0)
        self.add(node, t + 25, f"{ts} [INFO] [config.py:988:print] DeepSpeedEngine configuration:", 0)
        conf = {
            "fp16_enabled": str(self.fp16), "bfloat16_enabled": str(not self.fp16), "gradient_accumulation_steps": "4",
            "gradient_clipping": "1.0", "train_batch_size": str(self.world * 4), "train_micro_batch_size_per_gpu": "1",
            "zero_optimization_stage": str(self.rng.choice((1, 2, 3))), "steps_per_print": str(self.log_interval),
            "wall_clock_breakdown": "False",
        }
        for key, val in conf.items():
            self.add(node, t + 25, f"{ts} [INFO] [config.py:992:print]   {key} {'.' * max(3, 32 - len(key))} {val}", 0)

    def _hf_startup(self, node: Node, t: float) -> None:
        ts = clock.pylog(self.epoch(node, t))
        self.add(node, t, f"[INFO|configuration_utils.py:731] {ts} >> loading configuration file /models/{self.model}/config.json", 0)
        self.add(node, t + 2, f"[INFO|modeling_utils.py:3373] {ts} >> loading weights file /models/{self.model}/model.safetensors.index.json", 0)
        for lr in range(node.gpus):
            self.add(node, t + 9 + lr * 0.05, "Loading checkpoint shards: 100%|██████████| 4/4 [00:06<00:00,  1.61s/it]", lr, stream="stderr")

    def _titan_startup(self, node: Node, t: float) -> None:
        if node.index != 0:
            return
        msgs = (
            f"Starting job: {self.model} training",
            f"Building 1-D device mesh with ['dp_shard'], [{self.world}]",
            "[GC] Initial GC collection. 0.00 seconds.",
            f"Building {self.model} with TransformerModelArgs(_enforced='This field is used to enforce all fields have defaults.', dim=4096, n_layers=32, n_heads=32)",
            f"Model {self.model} size: 8,030,261,248 total parameters",
            "Applied selective activation checkpointing to the model",
            "Applied FSDP to the model",
            "Peak FLOPS used for computing MFU: 9.890e+14",
            "CUDA memory usage for model: 3.77GiB(3.97%)",
            "Checkpointing active. Checkpoints are loaded from and saved to ./outputs/checkpoint",
        )
        for k, msg in enumerate(msgs):
            self.add(node, t + k * 2.0, self.titan(node, t + k * 2.0, msg), 0)

    def titan(self, node: Node, t: float, msg: str, lr: int = 0, level: str = "INFO") -> str:
        return f"[rank{node.rank(lr)}]:[titan] {clock.pylog(self.epoch(node, t))} - root - {level} - {msg}"

    def emit_warnings(self, node: Node) -> None:
        """Benign deprecation/user warnings on some nodes (must not be flagged)."""
        if self.rng.random() < 0.5:
            return
        self.noise.add("warnings")
        first, second = self.rng.choice(BENIGN_WARNINGS)
        t = node.start_delay + self.rng.uniform(25.0, 28.0)
        for lr in range(0, node.gpus, self.rng.choice((1, 2, 4, 8))):
            self.add(node, t + lr * 0.01, first, lr, stream="stderr")
            self.add(node, t + lr * 0.01, second, lr, stream="stderr")

    def emit_benign_retries(self) -> None:
        """A one-off connect retry that then succeeds, on a random node."""
        if self.rng.random() < 0.5:
            return
        self.noise.add("retry")
        node = self.nodes[self.rng.randrange(len(self.nodes))]
        t = node.start_delay + 2.0
        kind = self.rng.choice(("c10d", "nccl", "hub"))
        if kind == "c10d" or node.index == 0:
            head = clock.glog("W", self.epoch(node, t))
            self.add(node, t, f"{self.c10d_tag(node, 0)}[{head} socket.cpp:697] [c10d] The client socket has failed to connect to [{self.master}]:29500 (errno: 111 - Connection refused).", 0, stream="stderr")
        elif kind == "nccl" and self.nccl_debug:
            self.add(node, t + 12, f"{self.nccl(node, 0)} NCCL INFO Call to connect returned Connection refused, retrying", 0)
        else:
            self.add(node, t, f"'(ReadTimeoutError(\"HTTPSConnectionPool(host='huggingface.co', port=443): Read timed out. (read timeout=10)\"), '(Request ID: 4f1c2a7e-{self.seq_base:05d})')' thrown while requesting HEAD https://huggingface.co/meta-llama/Llama-2-7b-hf/resolve/main/tokenizer_config.json", 0, stream="stderr")
            self.add(node, t, "Retrying in 1s [Retry 1/5].", 0, stream="stderr")

    def emit_checkpoint_load(self, node: Node) -> None:
        t = self.load_start + self.rng.uniform(0.0, 1.0)
        it = self.start_iter
        if self.fw == "megatron":
            if node.index == 0:
                self.add(node, t, f" loading checkpoint from {self.ckpt_dir} at iteration {it}", 0)
                self.add(node, self.load_end - 1.0, f"  successfully loaded checkpoint from {self.ckpt_dir} [ t 0, p 0 ] at iteration {it}", 0)
                te = self.load_end - 0.5
                self.add(node, te, f"[after model, optimizer, and learning rate scheduler are built] datetime: {clock.seconds(self.epoch(node, te))} ", 0)
        elif self.fw == "deepspeed":
            for lr in range(node.gpus):
                tl = t + lr * 0.02
                ts = clock.bracket(self.epoch(node, tl))
                path = f"{self.ckpt_dir}/global_step{it}/zero_pp_rank_{node.rank(lr)}_mp_rank_00_optim_states.pt"
                self.add(node, tl, f"{ts} [INFO] [torch_checkpoint_engine.py:27:load] [Torch] Loading checkpoint from {path}...", lr)
                te = self.load_end - 2.0 + lr * 0.02
                self.add(node, te, f"{clock.bracket(self.epoch(node, te))} [INFO] [torch_checkpoint_engine.py:29:load] [Torch] Loaded checkpoint from {path}.", lr)
            if node.index == 0:
                te = self.load_end - 1.0
                self.add(node, te, f"{clock.bracket(self.epoch(node, te))} [INFO] [engine.py:3025:_get_all_zero_checkpoint_state_dicts] successfully read {self.world} ZeRO state_dicts for rank 0", 0)
                self.add(node, te, f"{clock.bracket(self.epoch(node, te))} [INFO] [engine.py:2975:_load_zero_checkpoint] loading {self.world} zero partition checkpoints for rank 0", 0)
        elif self.fw == "hf":
            if node.index == 0:
                ts = clock.pylog(self.epoch(node, t))
                self.add(node, t, f"[INFO|trainer.py:2042] {ts} >> Continuing training from checkpoint, will skip to saved global_step", 0)
                self.add(node, t, f"[INFO|trainer.py:2043] {ts} >>   Continuing training from epoch 0", 0)
                self.add(node, t, f"[INFO|trainer.py:2044] {ts} >>   Continuing training from global step {it}", 0)
        elif node.index == 0:
            self.add(node, t, self.titan(node, t, f"Loading the checkpoint at step {it}."), 0)
            te = self.load_end - 1.0
            self.add(node, te, self.titan(node, te, f"Finished loading the checkpoint in {te - t:.2f} seconds."), 0)

    # ---- training ----------------------------------------------------------

    def loss_at(self, it: int) -> float:
        frac = it / max(1, self.total_iters)
        base = 2.1 + 8.6 * math.exp(-frac * 9.0)
        if self.loss_spike_at is not None and 0 <= it - self.loss_spike_at < 2 * self.log_interval:
            base *= 1.8  # a recovered spike: two logged iterations, then back to the trend
        return base + self.rng.uniform(-0.05, 0.05)

    def emit_training(self) -> None:
        node0 = self.nodes[0]
        self._train_banner(node0)
        skipped_start = self.fp16 and self.rng.random() < 0.7 and not self.resume
        if skipped_start:
            self.noise.add("fp16_skipped_start")
        iters = [e for e in self.events if e.kind == "iter"]
        if self.rng.random() < 0.3 and len(iters) > 20 and self.diverge_at is None:
            self.noise.add("recovered_loss_spike")
            self.loss_spike_at = iters[self.rng.randint(8, len(iters) - 10)].iteration
        prev_t = self.train_start
        for k, ev in enumerate(self.events):
            if ev.kind == "iter":
                skipped = self.log_interval if (skipped_start and k == 0) else 0
                if self.diverge_at is not None and ev.iteration >= self.diverge_at:
                    self.emit_divergent_iteration(ev, prev_t)
                else:
                    self.emit_iteration(ev, prev_t, skipped)
                prev_t = ev.t
            elif ev.kind == "save":
                self.emit_save(ev)
                prev_t = ev.t_end

    def _train_banner(self, node: Node) -> None:
        t = self.train_start - 1.0
        if self.fw == "megatron":
            self.add(node, t, "done with setup ...", 0)
            self.add(node, t, "training ...", 0)
            self.add(node, t, f"[before the start of training step] datetime: {clock.seconds(self.epoch(node, t))} ", 0)
        elif self.fw == "hf":
            ts = clock.pylog(self.epoch(node, t))
            self.add(node, t, f"[INFO|trainer.py:2048] {ts} >> ***** Running training *****", 0)
            for text in ("  Num examples = 1,280,000", "  Num Epochs = 1", "  Instantaneous batch size per device = 4",
                         f"  Total train batch size (w. parallel, distributed & accumulation) = {self.world * 4}",
                         "  Gradient Accumulation steps = 1", f"  Total optimization steps = {self.total_iters:,}",
                         "  Number of trainable parameters = 6,738,415,616"):
                self.add(node, t, f"[INFO|trainer.py:2049] {ts} >> {text}", 0)
        elif self.fw == "torchtitan":
            self.add(node, t, self.titan(node, t, f"Training starts at step {self.start_iter + 1}."), 0)

    def emit_iteration(self, ev: Event, prev_t: float, skipped: int, loss: float | None = None,
                       grad_norm: float | None = None, nan_iters: int = 0, evidence: bool = False) -> Line:
        """The iteration-marker line(s) for one logged iteration on the printer node."""
        node = self.printer
        it = ev.iteration
        slow = 1.25 if node.index == self.slow else 1.0
        dt_ms = (ev.t - prev_t) / self.log_interval * 1000.0 * slow
        if loss is None:
            loss = self.loss_at(it)
        if grad_norm is None:
            grad_norm = self.rng.uniform(0.2, 1.6) * (3.0 if self.loss_spike_at is not None and 0 <= it - self.loss_spike_at < 2 * self.log_interval else 1.0)
        lr_val = 3.0e-4 * min(1.0, it / 2000.0)
        kw = {"iteration": it, "evidence": evidence, "fault": evidence}
        if self.fw == "megatron":
            head = f"[{clock.seconds(self.epoch(node, ev.t))}]" if self.megatron_ts else ""
            loss_s = "" if (skipped or math.isnan(loss)) else f" lm loss: {loss:.6E} |"
            scale = f" loss scale: {2.0 ** (16 - (1 if skipped else 0)):.1f} |" if self.fp16 else " loss scale: 1.0 |"
            gn = "" if skipped else f" grad norm: {grad_norm:.3f} |" if not math.isnan(grad_norm) else " grad norm: nan |"
            text = (f"{head} iteration {it:>8d}/{self.total_iters:>8d} | consumed samples: {it * 512:>12d} | "
                    f"elapsed time per iteration (ms): {dt_ms:.1f} | learning rate: {lr_val:.6E} | global batch size: {512:>5d} |"
                    f"{loss_s}{scale}{gn} number of skipped iterations: {skipped:>3d} | number of nan iterations: {nan_iters:>3d} |")
            return self.add(node, ev.t, text, 0, **kw)
        if self.fw == "deepspeed":
            ts = clock.bracket(self.epoch(node, ev.t))
            if skipped:
                for s in range(min(skipped, 3)):
                    scale = 2 ** (32 - s)
                    self.add(node, ev.t - 0.5, f"{ts} [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: {scale}, reducing to {scale // 2}", 0)
            self.add(node, ev.t, f"{ts} [INFO] [logging.py:96:log_dist] [Rank 0] step={it}, skipped={skipped}, lr=[{lr_val:.6e}], mom=[(0.9, 0.95)]", 0, iteration=it)
            self.add(node, ev.t, f"{ts} [INFO] [timer.py:260:stop] epoch=0/micro_step={it * 4}/global_step={it}, RunningAvgSamplesPerSec={self.world * 4000 / dt_ms:.3f}, CurrSamplesPerSec={self.world * 4000 / dt_ms * self.rng.uniform(0.97, 1.03):.3f}, MemAllocated=21.4GB, MaxMemAllocated=58.91GB", 0)
            return self.add(node, ev.t, f"{ts} - INFO - __main__ - step {it}, loss={_num(loss, 4)}, grad_norm={_num(grad_norm, 3)}, lr={lr_val:.3e}", 0, **kw)
        if self.fw == "hf":
            pct = int(100 * it / self.total_iters)
            rate = 1000.0 / dt_ms
            self.add(node, ev.t, f"{pct:3d}%|{'█' * (pct // 10):<10s}| {it}/{self.total_iters} [{_hms(ev.t - self.train_start)}<{_hms((self.total_iters - it) * dt_ms / 1000)}, {rate:5.2f}it/s]", 0, stream="stderr", iteration=it)
            return self.add(node, ev.t, f"{{'loss': {_num(loss, 4)}, 'grad_norm': {_num(grad_norm, 4)}, 'learning_rate': {lr_val:.4e}, 'epoch': {it / self.total_iters:.2f}}}", 0, **kw)
        msg = (f"step: {it:2d}  loss: {_num(loss, 4):>7s}  grad_norm: {_num(grad_norm, 4):>7s}  memory: 49.66GiB(52.28%)  "
               f"tps: {int(self.world * 4096 * 1000 / dt_ms / 8):,}  tflops: 339.16  mfu: 34.29%")
        line = self.add(node, ev.t, self.titan(node, ev.t, msg), 0, **kw)
        if self.rng.random() < 0.1:
            self.add(node, ev.t + 0.1, self.titan(node, ev.t + 0.1, "[GC] Peforming periodical GC collection. 0.06 seconds."), 0)
        return line

    def emit_divergent_iteration(self, ev: Event, prev_t: float) -> Line:
        """Loss and grad norm blow up for a few logged iterations, then NaN; the first six are evidence."""
        assert self.diverge_at is not None
        k = (ev.iteration - self.diverge_at) // self.log_interval
        if k < self.nan_after:
            loss = self.loss_at(ev.iteration) * (1.9 ** (k + 1))
            grad_norm = 25.0 * (6.0 ** k)
            nan_iters = 0
        else:
            loss = grad_norm = float("nan")
            nan_iters = min(self.log_interval, (k - self.nan_after + 1) * self.log_interval)
        return self.emit_iteration(ev, prev_t, 0, loss=loss, grad_norm=grad_norm, nan_iters=nan_iters, evidence=k < 6)

    def emit_save(self, ev: Event) -> None:
        it, t, te = ev.iteration, ev.t, ev.t_end
        for node in self.nodes:
            if self.fw == "megatron" and node.index == 0:
                self.add(node, t, f"saving checkpoint at iteration {it:>7d} to {self.ckpt_dir}", 0)
                self.add(node, te, f"  successfully saved checkpoint at iteration {it:>7d} to {self.ckpt_dir}", 0)
            elif self.fw == "deepspeed":
                if node.index == 0:
                    self.add(node, t, f"{clock.bracket(self.epoch(node, t))} [INFO] [logging.py:96:log_dist] [Rank 0] Saving model checkpoint: {self.ckpt_dir}/global_step{it}/mp_rank_00_model_states.pt", 0)
                for lr in range(node.gpus):
                    path = f"{self.ckpt_dir}/global_step{it}/zero_pp_rank_{node.rank(lr)}_mp_rank_00_optim_states.pt"
                    tl = t + 1.0 + lr * 0.01
                    self.add(node, tl, f"{clock.bracket(self.epoch(node, tl))} [INFO] [torch_checkpoint_engine.py:21:save] [Torch] Saving {path}...", lr)
                    tl = te - 1.0 + lr * 0.01
                    self.add(node, tl, f"{clock.bracket(self.epoch(node, tl))} [INFO] [torch_checkpoint_engine.py:23:save] [Torch] Saved {path}.", lr)
                    self.add(node, tl, f"{clock.bracket(self.epoch(node, tl))} [INFO] [engine.py:3487:_save_zero_checkpoint] zero checkpoint saved {path}", lr)
            elif self.fw == "hf" and node.index == 0:
                out = f"/output/{self.model}/checkpoint-{it}"
                self.add(node, t, f"[INFO|trainer.py:3410] {clock.pylog(self.epoch(node, t))} >> Saving model checkpoint to {out}", 0)
                self.add(node, te - 2, f"[INFO|configuration_utils.py:472] {clock.pylog(self.epoch(node, te - 2))} >> Configuration saved in {out}/config.json", 0)
                self.add(node, te - 1, f"[INFO|modeling_utils.py:2627] {clock.pylog(self.epoch(node, te - 1))} >> Model weights saved in {out}/model.safetensors", 0)
            elif self.fw == "torchtitan" and node.index == 0:
                self.add(node, t, self.titan(node, t, "Saving the checkpoint (or staging if async is enabled)."), 0)
                self.add(node, te, self.titan(node, te, f"[GC] GC collection invoked by checkpointer. 0.04 seconds."), 0)
                self.add(node, te, self.titan(node, te, f"Finished saving the checkpoint (or staging if async is enabled)in {te - t:.2f} seconds."), 0)

    def emit_shutdown(self, node: Node) -> None:
        t = self.end_t + self.rng.uniform(0.0, 1.5)
        last = self.events[-1].iteration
        if node.index == 0:
            if self.fw == "megatron":
                self.add(node, t, f"[after training is done] datetime: {clock.seconds(self.epoch(node, t))} ", 0)
            elif self.fw == "hf":
                self.add(node, t - 1, f"[INFO|trainer.py:2320] {clock.pylog(self.epoch(node, t - 1))} >> ", 0)
                self.add(node, t - 1, "", 0)
                self.add(node, t - 1, "Training completed. Do not forget to share your model on huggingface.co/models =)", 0)
                self.add(node, t, f"{{'train_runtime': {t - self.train_start:.4f}, 'train_samples_per_second': 512.3, 'train_steps_per_second': 0.25, 'train_loss': {self.loss_at(last):.4f}, 'epoch': 1.0}}", 0)
            elif self.fw == "torchtitan":
                self.add(node, t, self.titan(node, t, "Training completed"), 0)
            elif self.fw == "deepspeed":
                self.add(node, t, f"{clock.bracket(self.epoch(node, t))} - INFO - __main__ - training finished at step {last}", 0)
        t2 = t + 2.0
        ts = clock.bracket(self.epoch(node, t2))
        if self.fw == "deepspeed":
            self.add(node, t2, f"{ts} [INFO] [launch.py:347:main] Process {node.pid(0)} exits successfully.", stream="stderr")
        else:
            self.add(node, t2, f"{ts} torch.distributed.elastic.agent.server.api: [INFO] [default] worker group successfully finished. Waiting 300 seconds for other agents to finish.", stream="stderr")
            self.add(node, t2, f"{ts} torch.distributed.elastic.agent.server.api: [INFO] Local worker group finished (WorkerState.SUCCEEDED). Waiting 300 seconds for other agents to finish", stream="stderr")
            self.add(node, t2 + 0.1, f"{ts} torch.distributed.elastic.agent.server.api: [INFO] Done waiting for other agents. Elapsed: {self.rng.uniform(0.5, 4.0):.4f} seconds", stream="stderr")

    def shift_iterations(self, offset: int) -> None:
        """Renumber the schedule so an excerpt's iteration numbers follow on (call before emitting training)."""
        self.start_iter += offset
        self.total_iters += offset
        for ev in self.events:
            ev.iteration += offset

    # ---- cutting -------------------------------------------------------------

    def cut(self, t_cut: float, nodes: list[Node] | None = None) -> None:
        """Drop every line after ``t_cut``: the job stops making progress at the fault."""
        for node in nodes if nodes is not None else self.nodes:
            node.lines = [ln for ln in node.lines if ln.t <= t_cut]


def _num(x: float, digits: int) -> str:
    return "nan" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.{digits}f}")


def _hms(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
