"""Faults: cut a healthy timeline at the fault, add the culprit's root-cause lines and the
collateral the other nodes print (watchdog timeouts, launcher SIGTERM, ChildFailedError).

Every text shape here is copied from real logs (see data/real_excerpts and FORMATS.md);
numbers, hosts, paths and pids vary with the run's random stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import clock
from .records import Line, Node
from .simulate import Event, Simulation

STAGES_FOR = {
    "hardware": ("train", "train", "train", "checkpoint_save", "init"),
    "network": ("train", "train", "init", "init"),
    "storage": ("checkpoint_save", "checkpoint_save", "train", "checkpoint_load"),
    "checkpoint_load": ("checkpoint_load",),
    "oom": ("train", "train", "init", "checkpoint_load", "checkpoint_save"),
    "software": ("train", "train", "init"),
    "hang": ("train", "train", "checkpoint_save"),
    "divergence": ("train",),
}
SCRIPTS = {"megatron": "pretrain_gpt.py", "deepspeed": "train.py", "hf": "run_clm.py", "torchtitan": "torchtitan/train.py"}
SITE = "/usr/local/lib/python3.10/dist-packages"


class SynthError(ValueError):
    """A run cannot be built from the given options."""


@dataclass
class FaultOutcome:
    """What the fault did: enough to write truth.json."""

    category: str
    subcategory: str
    stage: str
    culprit: Node
    t_fault: float
    evidence: list[Line] = field(default_factory=list)


def pick_stage_for(rng, category: str, stage: str | None) -> str:
    allowed = STAGES_FOR[category]
    if stage is None:
        return rng.choice(allowed)
    if stage not in allowed:
        raise SynthError(f"fault {category!r} is not simulated at stage {stage!r}; choose one of {sorted(set(allowed))}")
    return stage


def pick_fault_time(sim: Simulation, stage: str) -> tuple[float, Event | None]:
    """A time inside the stage, well away from iteration lines so the truth iteration is unambiguous."""
    rng = sim.rng
    if stage == "init":
        lo = max(n.start_delay for n in sim.nodes) + 22.0
        return rng.uniform(lo, max(lo + 1.0, sim.init_end - 4.0)), None
    if stage == "checkpoint_load":
        return rng.uniform(sim.load_start + 2.0, sim.load_end - 4.0), None
    if stage == "checkpoint_save":
        saves = [e for e in sim.events if e.kind == "save"]
        ev = rng.choice(saves[:-1] or saves)
        return rng.uniform(ev.t + 2.0, ev.t_end - 2.5), ev
    iters = [i for i, e in enumerate(sim.events) if e.kind == "iter"]
    candidates = [i for i in iters[3:-3] if sim.events[i + 1].kind == "iter"]
    i = rng.choice(candidates)
    a, b = sim.events[i].t, sim.events[i + 1].t
    return a + (b - a) * rng.uniform(0.3, 0.7), sim.events[i]


def worker(sim: Simulation, node: Node, lr: int, t: float, texts: list[str], evidence: set[int] | None = None,
           stream: str = "stderr") -> list[Line]:
    """Lines a worker process prints (tracebacks get the PyTorch >= 2.2 ``[rankN]:`` tag when the run uses it)."""
    tag = f"[rank{node.rank(lr)}]: " if sim.rank_tag else ""
    out = []
    for k, text in enumerate(texts):
        ev = evidence is not None and k in evidence
        out.append(sim.add(node, t + k * 0.001, tag + text if text else text, lr, stream=stream, evidence=ev, fault=True))
    return out


def kernel(sim: Simulation, node: Node, t: float, texts: list[str], evidence: bool = True) -> list[Line]:
    """dmesg-ish lines (uptime stamp) or journald lines carrying the host name."""
    uptime = 86400.0 * 3 + t + node.index * 1234.5
    out = []
    for k, text in enumerate(texts):
        if sim.journald:
            line = f"[{uptime + k * 0.000013:.6f}] {text}"
        else:
            line = f"{clock.syslog(sim.epoch(node, t))} {node.host} kernel: [{uptime:.6f}] {text}"
        out.append(sim.add(node, t + k * 0.001, line, None, stream="stderr", evidence=evidence, fault=True))
    return out


def traceback(sim: Simulation, frames: list[tuple[str, int, str, str]]) -> list[str]:
    lines = ["Traceback (most recent call last):"]
    for path, lineno, func, code in frames:
        lines.append(f'  File "{path}", line {lineno}, in {func}')
        lines.append(f"    {code}")
    return lines


def train_frames(sim: Simulation) -> list[tuple[str, int, str, str]]:
    script = "/workspace/" + SCRIPTS[sim.fw]
    if sim.fw == "megatron":
        return [(script, 231, "<module>", "pretrain(train_valid_test_datasets_provider,"),
                ("/workspace/megatron/training/training.py", 352, "pretrain", "iteration, num_floating_point_operations_so_far = train("),
                ("/workspace/megatron/training/training.py", 1284, "train", "train_step(forward_step_func,"),
                ("/workspace/megatron/training/training.py", 692, "train_step", "losses_reduced = forward_backward_func(")]
    if sim.fw == "hf":
        return [(script, 642, "<module>", "main()"), (script, 590, "main", "train_result = trainer.train(resume_from_checkpoint=checkpoint)"),
                (f"{SITE}/transformers/trainer.py", 1938, "train", "return inner_training_loop("),
                (f"{SITE}/transformers/trainer.py", 2279, "_inner_training_loop", "tr_loss_step = self.training_step(model, inputs)")]
    if sim.fw == "deepspeed":
        return [(script, 412, "<module>", "main()"), (script, 377, "main", "loss = engine(batch)"),
                (f"{SITE}/deepspeed/utils/nvtx.py", 15, "wrapped_fn", "ret_val = func(*args, **kwargs)"),
                (f"{SITE}/deepspeed/runtime/engine.py", 1855, "forward", "loss = self.module(*inputs, **kwargs)")]
    return [(f"{SITE}/torch/distributed/elastic/multiprocessing/errors/__init__.py", 355, "wrapper", "return f(*args, **kwargs)"),
            ("/workspace/torchtitan/train.py", 541, "train", "self.train_step(data_iterator)"),
            ("/workspace/torchtitan/train.py", 438, "train_step", "loss = self.forward_backward_step(input_dict, labels)")]


def save_frames(sim: Simulation) -> list[tuple[str, int, str, str]]:
    if sim.fw == "megatron":
        head = [("/workspace/megatron/training/checkpointing.py", 416, "save_checkpoint", "torch.save(state_dict, checkpoint_name)")]
    elif sim.fw == "deepspeed":
        head = [(f"{SITE}/deepspeed/runtime/engine.py", 3380, "save_checkpoint", "self._save_zero_checkpoint(save_dir, tag)"),
                (f"{SITE}/deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py", 22, "save", "torch.save(state_dict, path)")]
    elif sim.fw == "hf":
        head = [(f"{SITE}/transformers/trainer.py", 2807, "_save_checkpoint", "self._save_optimizer_and_scheduler(output_dir)"),
                (f"{SITE}/transformers/trainer.py", 2921, "_save_optimizer_and_scheduler", "torch.save(self.optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME))")]
    else:
        head = [("/workspace/torchtitan/components/checkpoint.py", 512, "save", "self.dcp_save(self.states, checkpoint_id)"),
                (f"{SITE}/torch/distributed/checkpoint/filesystem.py", 328, "_write_files_from_queue", "torch.save(data, stream)")]
    return train_frames(sim)[:2] + head + [(f"{SITE}/torch/serialization.py", 628, "save", "with _open_zipfile_writer(f) as opened_zipfile:")]


def load_frames(sim: Simulation) -> list[tuple[str, int, str, str]]:
    if sim.fw == "deepspeed":
        return [("/workspace/train.py", 301, "main", "engine.load_checkpoint(args.load)"),
                (f"{SITE}/deepspeed/runtime/engine.py", 2724, "load_checkpoint", "load_path, client_states = self._load_checkpoint(load_dir,"),
                (f"{SITE}/deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py", 28, "load", "partition = torch.load(path, map_location=map_location)")]
    if sim.fw == "megatron":
        return [("/workspace/megatron/training/training.py", 265, "pretrain", "model, optimizer, opt_param_scheduler = setup_model_and_optimizer("),
                ("/workspace/megatron/training/checkpointing.py", 1015, "load_checkpoint", "state_dict, checkpoint_name, release = _load_base_checkpoint("),
                ("/workspace/megatron/training/checkpointing.py", 757, "_load_base_checkpoint", "state_dict = torch.load(checkpoint_name, map_location='cpu')")]
    if sim.fw == "hf":
        return [(f"{SITE}/transformers/trainer.py", 1907, "train", "self._load_from_checkpoint(resume_from_checkpoint)"),
                (f"{SITE}/transformers/trainer.py", 2505, "_load_from_checkpoint", "state_dict = torch.load(weights_file, map_location=\"cpu\")")]
    return [("/workspace/torchtitan/components/checkpoint.py", 601, "load", "self.dcp_load(states, checkpoint_id=checkpoint_id)"),
            (f"{SITE}/torch/distributed/checkpoint/state_dict_loader.py", 172, "load", "_load_state_dict(")]


def init_frames(sim: Simulation) -> list[tuple[str, int, str, str]]:
    script = "/workspace/" + SCRIPTS[sim.fw]
    return [(script, 12, "<module>", "from model import build_model"),
            ("/workspace/model/__init__.py", 3, "<module>", "from .attention import FlashSelfAttention"),
            ("/workspace/model/attention.py", 9, "<module>", "from flash_attn import flash_attn_varlen_func")]


# ---- culprit root-cause lines, per category ---------------------------------------------


def gpu_bus(sim: Simulation, lr: int) -> str:
    return ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")[lr % 8]


def fault_hardware(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    kinds = ["xid79", "xid48", "xid74", "ecc", "cuda_unknown"]
    if sim.per_rank_nodes:
        kinds = ["ecc", "cuda_unknown", "xid79"]
    if stage == "init":
        kinds = ["ecc", "cuda_unknown"]
    kind = rng.choice(kinds)
    bus = gpu_bus(sim, lr)
    pid = node.pid(lr)
    if kind == "xid79":
        kernel(sim, node, t, [f"NVRM: Xid (PCI:0000:{bus}:00): 79, pid={pid}, name=python, GPU has fallen off the bus.",
                              f"NVRM: GPU 0000:{bus}:00.0: GPU has fallen off the bus."])
        worker(sim, node, lr, t + 0.8, ["terminate called after throwing an instance of 'c10::Error'",
                                        "  what():  CUDA error: unknown error",
                                        "Exception raised from c10_cuda_check_implementation at ../c10/cuda/CUDAException.cpp:44 (most recent call first):",
                                        f"frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x57 (0x7f{rng.getrandbits(36):09x} in {SITE}/torch/lib/libc10.so)"],
               evidence={1})
        return "gpu_xid_79", -6
    if kind == "xid48":
        kernel(sim, node, t, [f"NVRM: Xid (PCI:0000:{bus}:00): 48, pid={pid}, name=python, Ch 00000010, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 2, subpartition 0."])
        tb = traceback(sim, train_frames(sim))
        worker(sim, node, lr, t + 0.3, tb + ["RuntimeError: CUDA error: uncorrectable ECC error encountered",
                                             "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.",
                                             "For debugging consider passing CUDA_LAUNCH_BLOCKING=1."],
               evidence={len(tb)})
        return "gpu_xid_48", 1
    if kind == "xid74":
        kernel(sim, node, t, [f"NVRM: Xid (PCI:0000:{bus}:00): 74, pid={pid}, name=python, NVLink: fatal error detected on link {rng.randint(0, 11)}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)"])
        tid = node.pid(lr) + rng.randint(100, 900)
        sim.add(node, t + 0.4, f"{sim.nccl(node, lr, tid)} enqueue.cc:1556 NCCL WARN Cuda failure 'unspecified launch failure'", lr, stream="stderr", evidence=True, fault=True)
        return "gpu_xid_74_nvlink", -6
    if kind == "ecc":
        tb = traceback(sim, train_frames(sim) if stage != "init" else init_frames(sim)[:1])
        worker(sim, node, lr, t, tb + ["RuntimeError: CUDA error: uncorrectable ECC error encountered",
                                       "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.",
                                       "For debugging consider passing CUDA_LAUNCH_BLOCKING=1.",
                                       "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."],
               evidence={len(tb)})
        return "gpu_ecc_uncorrectable", 1
    worker(sim, node, lr, t, ["terminate called after throwing an instance of 'c10::CUDAError'",
                              "  what():  CUDA error: unknown error",
                              "Exception raised from query at ../aten/src/ATen/cuda/CUDAEvent.h:95 (most recent call first):",
                              f"frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x42 (0x15{rng.getrandbits(40):010x} in {SITE}/torch/lib/libc10.so)",
                              f"frame #1: c10d::ProcessGroupNCCL::WorkNCCL::finishedGPUExecutionInternal() const + 0x11a (0x15{rng.getrandbits(40):010x} in {SITE}/torch/lib/libtorch_cuda.so)"],
           evidence={0, 1})
    return "cuda_unknown_error", -6


def fault_network(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    peer = rng.choice([i for i in range(len(sim.nodes)) if i != node.index] or [node.index])
    peer_ip = sim.ips[peer]
    tid = node.pid(lr) + rng.randint(100, 900)
    p = sim.nccl(node, lr, tid)
    kind = rng.choice(("ib_completion", "conn_reset")) if stage == "train" else "ibv"
    if kind == "ib_completion":
        status = rng.choice((12, 5, 4))
        sim.add(node, t, f"{p} transport/net_ib.cc:1696 NCCL WARN NET/IB : Got completion from peer {peer_ip}<{rng.randint(30000, 60000)}> with status={status} opcode=0 len=0 vendor err {rng.choice((129, 81, 244))} (Recv) localGid ::ffff:{sim.ips[node.index]} remoteGids::ffff:{peer_ip}", lr, stream="stderr", evidence=True, fault=True)
        for src in ("transport/net.cc:1298 -> 6", "proxy.cc:698 -> 6", "proxy.cc:868 -> 6 [Progress Thread]"):
            sim.add(node, t + 0.001, f"{p} NCCL INFO {src}", lr, stream="stderr", fault=True)
        sub = "nccl_ib_completion_error"
    elif kind == "conn_reset":
        sim.add(node, t, f"{p} misc/socket.cc:538 NCCL WARN Net : Call to recv from {peer_ip}<{rng.randint(30000, 60000)}> failed : Connection reset by peer", lr, stream="stderr", evidence=True, fault=True)
        sim.add(node, t + 0.001, f"{p} NCCL INFO misc/socket.cc:549 -> 6", lr, stream="stderr", fault=True)
        sub = "nccl_connection_reset"
    else:
        sim.add(node, t, f"{p} misc/ibvwrap.cc:239 NCCL WARN Call to ibv_modify_qp failed with error Connection timed out", lr, stream="stderr", evidence=True, fault=True)
        sim.add(node, t + 0.001, f"{p} NCCL INFO transport/net_ib.cc:1021 -> 2", lr, stream="stderr", fault=True)
        sub = "ibv_error"
    tag = sim.c10d_tag(node, lr)
    head = clock.glog("E", sim.epoch(node, t + 0.05))
    what = "remote process exited or there was a network error" if kind != "ibv" else "unhandled system error (run with NCCL_DEBUG=INFO for details)"
    sim.add(node, t + 0.05, f"{tag}[{head} ProcessGroupNCCL.cpp:1536] [PG 0 (default_pg) Rank {node.rank(lr)}] Process group watchdog thread terminated with exception: NCCL error: {what}, NCCL version 2.18.5", lr, stream="stderr", evidence=True, fault=True)
    worker(sim, node, lr, t + 0.1, [
        "terminate called after throwing an instance of 'c10::DistBackendError'",
        f"  what():  [PG 0 (default_pg) Rank {node.rank(lr)}] Process group watchdog thread terminated with exception: NCCL error: {what}, NCCL version 2.18.5",
        "ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely." if kind != "ibv"
        else "ncclSystemError: System call (e.g. socket, malloc) or external library call failed or device error. ",
        "Last error:"])
    return sub, -6


def fault_rendezvous(sim: Simulation, node: Node, t: float) -> tuple[str, int]:
    """The culprit cannot reach the c10d store; every other node times out in rendezvous."""
    rng = sim.rng
    errno = rng.choice(("101 - Network is unreachable", "113 - No route to host"))
    for k in range(3):
        tk = t + k * 60.0
        head = clock.glog("W", sim.epoch(node, tk))
        sim.add(node, tk, f"[{head} socket.cpp:697] [c10d] The client socket has failed to connect to [{sim.master}]:29500 (errno: {errno}).", None, stream="stderr", evidence=k == 0, fault=True)
    te = t + 600.0
    lines = traceback(sim, [("/usr/local/bin/torchrun", 8, "<module>", "sys.exit(main())"),
                            (f"{SITE}/torch/distributed/elastic/rendezvous/dynamic_rendezvous.py", 1091, "next_rendezvous", "self._op_executor.run(join_op, deadline)")])
    lines.append("torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d store has failed. See inner exception for details.")
    for k, text in enumerate(lines):
        sim.add(node, te + k * 0.001, text, None, stream="stderr", evidence=k == len(lines) - 1, fault=True)
    for other in sim.nodes:
        if other is node:
            continue
        tt = t + 900.0 + rng.uniform(0.0, 3.0)
        tb = traceback(sim, [("/usr/local/bin/torchrun", 8, "<module>", "sys.exit(main())"),
                             (f"{SITE}/torch/distributed/elastic/rendezvous/dynamic_rendezvous.py", 1123, "next_rendezvous", "self._op_executor.run(join_op, deadline)"),
                             (f"{SITE}/torch/distributed/elastic/rendezvous/dynamic_rendezvous.py", 663, "run", "raise RendezvousTimeoutError()")])
        for k, text in enumerate(tb + ["torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError"]):
            sim.add(other, tt + k * 0.001, text, None, stream="stderr", fault=True)
    return "c10d_rendezvous_connect_failed", 1


def fault_storage(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    rank = node.rank(lr)
    if stage == "checkpoint_save":
        kind = rng.choice(("enospc", "enospc_enforce", "eio", "stale"))
        path = f"{sim.ckpt_dir}/iter_{sim.events[0].iteration:07d}/mp_rank_{rank:02d}/model_optim_rng.pt"
        frames = save_frames(sim)
    elif stage == "checkpoint_load":
        kind = rng.choice(("eio", "stale"))
        path = f"{sim.ckpt_dir}/iter_{sim.start_iter:07d}/mp_rank_{rank:02d}/model_optim_rng.pt"
        frames = load_frames(sim)
    else:
        kind = rng.choice(("eio", "stale"))
        path = f"/lustre/data/pile/pile_text_document_{rng.randint(0, 29):02d}.bin"
        frames = train_frames(sim)[:3] + [("/workspace/megatron/core/datasets/indexed_dataset.py", 311, "read", "return self.mmap[offset:offset + size]")]
    tb = traceback(sim, frames)
    if kind == "enospc":
        tail, sub = [f"OSError: [Errno 28] No space left on device: '{path}'"], "disk_full"
    elif kind == "enospc_enforce":
        pos = rng.randint(10**8, 10**10)
        tail = [f"RuntimeError: [enforce fail at inline_container.cc:595] . unexpected pos {pos} vs {pos - rng.randint(64, 4096)}",
                "", "During handling of the above exception, another exception occurred:", "",
                "OSError: [Errno 28] No space left on device"]
        sub = "disk_full"
    elif kind == "eio":
        tail, sub = [f"OSError: [Errno 5] Input/output error: '{path}'"], "io_error"
    else:
        tail, sub = [f"OSError: [Errno 116] Stale file handle: '{path}'"], "stale_file_handle"
    ev = {len(tb)} | ({len(tb) + 4} if kind == "enospc_enforce" else set())
    worker(sim, node, lr, t, tb + tail, evidence=ev)
    return sub, 1


def fault_checkpoint_load(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    kinds = ["zip", "missing_keys", "size_mismatch", "missing_file"] + (["zero_dp"] if sim.fw == "deepspeed" else [])
    kind = rng.choice(kinds)
    tb = traceback(sim, load_frames(sim))
    if kind == "zip":
        tail, sub = ["RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"], "corrupt_checkpoint"
        ev = {0}
    elif kind == "missing_keys":
        tail = ["RuntimeError: Error(s) in loading state_dict for GPTModel:",
                '\tMissing key(s) in state_dict: "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight", "decoder.layers.0.mlp.linear_fc1.layer_norm_weight". ',
                '\tUnexpected key(s) in state_dict: "decoder.layers.0.input_layernorm.weight", "decoder.layers.0.pre_mlp_layernorm.weight". ']
        sub, ev = "state_dict_key_mismatch", {0, 1, 2}
    elif kind == "size_mismatch":
        tail = ["RuntimeError: Error(s) in loading state_dict for GPTModel:",
                "\tsize mismatch for embedding.word_embeddings.weight: copying a param with shape torch.Size([50304, 4096]) from checkpoint, the shape in current model is torch.Size([50432, 4096])."]
        sub, ev = "state_dict_size_mismatch", {0, 1}
    elif kind == "missing_file":
        tail = [f"FileNotFoundError: [Errno 2] No such file or directory: '{sim.ckpt_dir}/global_step{sim.start_iter}/zero_pp_rank_{node.rank(lr)}_mp_rank_00_optim_states.pt'"]
        sub, ev = "checkpoint_file_missing", {0}
    else:
        tail = [f"deepspeed.runtime.zero.utils.ZeRORuntimeException: The checkpoint being loaded used a DP world size of {sim.world // 2} but the current world size is {sim.world}. Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is not currently supported."]
        sub, ev = "zero_dp_world_size_mismatch", {0}
    worker(sim, node, lr, t, tb + tail, evidence={len(tb) + k for k in ev})
    return sub, 1


def fault_oom(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    kinds = {"train": ("cuda_oom", "cuda_oom", "host_oom_kill", "dataloader_killed"), "init": ("cuda_oom",),
             "checkpoint_load": ("cuda_oom", "host_oom_kill"), "checkpoint_save": ("host_oom_kill",)}[stage]
    kind = rng.choice(kinds)
    if kind == "cuda_oom":
        frames = {"train": train_frames, "init": init_frames, "checkpoint_load": load_frames}[stage](sim)
        tb = traceback(sim, frames)
        free = rng.uniform(0.1, 1.5)
        if rng.random() < 0.5:
            msg = (f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {rng.choice((1.0, 2.0, 3.5, 7.82)):.2f} GiB. GPU {lr} has a total capacity of 79.15 GiB "
                   f"of which {free:.2f} GiB is free. Including non-PyTorch memory, this process has {79.15 - free:.2f} GiB memory in use. Of the allocated memory "
                   f"{74.0 - free:.2f} GiB is allocated by PyTorch, and 2.45 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
                   "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  "
                   "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")
        else:
            msg = (f"torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU {lr}; 79.35 GiB total capacity; 75.10 GiB already allocated; "
                   f"{free:.2f} GiB free; 76.80 GiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb to avoid "
                   "fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF")
        worker(sim, node, lr, t, tb + [msg], evidence={len(tb)})
        return "cuda_oom", 1
    if kind == "dataloader_killed":
        tb = traceback(sim, train_frames(sim)[:3] + [(f"{SITE}/torch/utils/data/_utils/signal_handling.py", 66, "handler", "_error_if_any_worker_fails()")])
        pid = rng.randint(100000, 900000)
        worker(sim, node, lr, t, tb + [f"RuntimeError: DataLoader worker (pid {pid}) is killed by signal: Killed. "], evidence={len(tb)})
        return "dataloader_worker_killed", 1
    pid = node.pid(lr)
    if rng.random() < 0.6 or sim.per_rank_nodes:
        kernel(sim, node, t, [f"Out of memory: Killed process {pid} (python) total-vm:{rng.randint(10**8, 9 * 10**8)}kB, anon-rss:{rng.randint(10**8, 4 * 10**8)}kB, file-rss:0kB, shmem-rss:{rng.randint(10**5, 10**7)}kB, UID:1000 pgtables:{rng.randint(10**5, 10**6)}kB oom_score_adj:0"])
    if rng.random() < 0.5:
        sim.add(node, t + 1.0, f"slurmstepd: error: Detected 1 oom-kill event(s) in StepId={rng.randint(10**5, 10**6)}.0. Some of your processes may have been killed by the cgroup out-of-memory handler.", None, stream="stderr", evidence=True, fault=True)
    return "host_oom_kill", -9


def fault_software(sim: Simulation, node: Node, lr: int, t: float, stage: str) -> tuple[str, int]:
    rng = sim.rng
    if stage == "init":
        tb = traceback(sim, init_frames(sim))
        worker(sim, node, lr, t, tb + [f"ImportError: {SITE}/flash_attn_2_cuda.cpython-310-x86_64-linux-gnu.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"], evidence={len(tb)})
        return "import_error", 1
    if rng.random() < 0.35:
        thread = rng.randint(0, 127)
        asserts = [f"../aten/src/ATen/native/cuda/Indexing.cu:1236: indexSelectSmallIndex: block: [{rng.randint(0, 40)},0,0], thread: [{(thread + k) % 128},0,0] Assertion `srcIndex < srcSelectDimSize` failed."
                   for k in range(3)]
        tb = traceback(sim, train_frames(sim))
        worker(sim, node, lr, t, asserts + tb + ["RuntimeError: CUDA error: device-side assert triggered",
                                                 "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.",
                                                 "For debugging consider passing CUDA_LAUNCH_BLOCKING=1."],
               evidence={0, 1, 2, 3 + len(tb)})
        return "device_side_assert", -6
    tb = traceback(sim, train_frames(sim) + [("/workspace/data/collate.py", rng.randint(20, 200), "__call__", "tokens = batch[\"input_ids\"][:, : self.seq_length]")])
    msg = rng.choice(("KeyError: 'input_ids'",
                      "TypeError: forward() got an unexpected keyword argument 'position_ids'",
                      "AttributeError: 'NoneType' object has no attribute 'size'",
                      "IndexError: index 4096 is out of bounds for dimension 0 with size 4096",
                      "ValueError: Expected input batch_size (4) to match target batch_size (3)."))
    worker(sim, node, lr, t, tb + [msg], evidence={len(tb)})
    return "python_exception", 1


def fault_divergence_crash(sim: Simulation, node: Node, lr: int, t: float) -> tuple[str, int]:
    """Megatron's NaN check or DeepSpeed's minimum loss scale ends the run."""
    if sim.fw == "megatron":
        tb = traceback(sim, train_frames(sim) + [("/workspace/megatron/core/distributed/distributed_data_parallel.py", 311, "finish_grad_sync",
                                                  "bucket_group.finish_grad_sync()")])
        worker(sim, node, lr, t, tb + [f"AssertionError: Rank {node.rank(lr)}: found NaN in local grad norm in backwards pass. Device: {lr}, node: {node.host}"],
               evidence={len(tb)})
        return "nan_grad_norm", 1
    ts = clock.bracket(sim.epoch(node, t))
    for k, scale in enumerate((4, 2, 1)):
        sim.add(node, t - 0.3 + k * 0.1, f"{ts} [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: {scale}, reducing to {max(1, scale // 2)}", lr, evidence=True, fault=True)
    tb = traceback(sim, train_frames(sim) + [(f"{SITE}/deepspeed/runtime/fp16/loss_scaler.py", 175, "update_scale", "raise Exception(")])
    worker(sim, node, lr, t, tb + ["Exception: Current loss scale already at minimum - cannot decrease scale anymore. Exiting run."], evidence={len(tb)})
    return "loss_scale_underflow", 1


# ---- launcher output and collateral --------------------------------------------------------


def child_failed_block(sim: Simulation, node: Node, lr: int, t: float, code: int) -> list[str]:
    """torchelastic's ChildFailedError summary, as the launcher prints it."""
    script = SCRIPTS[sim.fw].split("/")[-1]
    signals = {-6: "Signal 6 (SIGABRT)", -7: "Signal 7 (SIGBUS)", -9: "Signal 9 (SIGKILL)", -15: "Signal 15 (SIGTERM)"}
    pid = node.pid(lr)
    tb = f"{signals[code]} received by PID {pid}" if code in signals else "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html"
    return ["Traceback (most recent call last):",
            '  File "/usr/local/bin/torchrun", line 8, in <module>',
            "    sys.exit(main())",
            f'  File "{SITE}/torch/distributed/elastic/multiprocessing/errors/__init__.py", line 347, in wrapper',
            "    return f(*args, **kwargs)",
            f'  File "{SITE}/torch/distributed/launcher/api.py", line 263, in launch_agent',
            "    raise ChildFailedError(",
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
            "============================================================",
            f"{script} FAILED",
            "------------------------------------------------------------",
            "Failures:",
            "  <NO_OTHER_FAILURES>",
            "------------------------------------------------------------",
            "Root Cause (first observed failure):",
            "[0]:",
            f"  time      : {clock.elastic_time(sim.epoch(node, t))}",
            f"  host      : {node.host}",
            f"  rank      : {node.rank(lr)} (local_rank: {lr})",
            f"  exitcode  : {code} (pid: {pid})",
            "  error_file: <N/A>",
            f"  traceback : {tb}",
            "============================================================"]


def launcher_failure(sim: Simulation, node: Node, lr: int, t: float, code: int, evidence: bool = False) -> None:
    """The node's launcher notices a dead worker, stops the others and reports the exit code."""
    if sim.fw == "deepspeed":
        for other in range(node.gpus):
            ts = clock.bracket(sim.epoch(node, t + other * 0.3))
            sim.add(node, t + other * 0.3, f"{ts} [INFO] [launch.py:315:sigkill_handler] Killing subprocess {node.pid(other)}", None, stream="stderr", fault=True)
        ts = clock.bracket(sim.epoch(node, t + 3.0))
        sim.add(node, t + 3.0, f"{ts} [ERROR] [launch.py:321:sigkill_handler] ['/usr/bin/python3', '-u', 'train.py', '--local_rank={lr}', '--deepspeed', '--deepspeed_config', 'ds_config.json'] exits with return code = {code}",
                None, stream="stderr", fault=True, evidence=evidence)
        return
    for other in range(node.gpus):
        if other != lr:
            ts = clock.bracket(sim.epoch(node, t))
            sim.add(node, t, f"{ts} torch.distributed.elastic.multiprocessing.api: [WARNING] Sending process {node.pid(other)} closing signal SIGTERM", None, stream="stderr", fault=True)
    ts = clock.bracket(sim.epoch(node, t + 1.0))
    sim.add(node, t + 1.0, f"{ts} torch.distributed.elastic.multiprocessing.api: [ERROR] failed (exitcode: {code}) local_rank: {lr} (pid: {node.pid(lr)}) of binary: /usr/bin/python3",
            None, stream="stderr", fault=True, evidence=evidence)
    for k, text in enumerate(child_failed_block(sim, node, lr, t + 1.0, code)):
        is_ev = evidence and text.startswith("  exitcode  :")
        sim.add(node, t + 1.1 + k * 0.0001, text, None, stream="stderr", fault=True, evidence=is_ev)


def watchdog_timeout(sim: Simulation, node: Node, t: float) -> float:
    """A peer's NCCL watchdog gives up on the collective the culprit never joined; returns when it is done."""
    rng = sim.rng
    seq = sim.seq_base + rng.randint(0, 3)
    numel = rng.choice((1048576, 65536000, 544997376, 131072))
    op = rng.choice(("ALLREDUCE", "ALLREDUCE", "_ALLGATHER_BASE", "_REDUCE_SCATTER_BASE", "BROADCAST"))
    ranks = range(node.gpus) if rng.random() < 0.6 else sorted(rng.sample(range(node.gpus), max(1, node.gpus // 2)))
    for lr in ranks:
        tl = t + rng.uniform(0.0, 1.5)
        tag = sim.c10d_tag(node, lr)
        r = node.rank(lr)
        head = lambda dt: clock.glog("E", sim.epoch(node, tl + dt))  # noqa: E731
        sim.add(node, tl, f"{tag}[{head(0)} ProcessGroupNCCL.cpp:607] [Rank {r}] Watchdog caught collective operation timeout: WorkNCCL(SeqNum={seq}, OpType={op}, NumelIn={numel}, NumelOut={numel}, Timeout(ms)={sim.timeout_ms}) ran for {sim.timeout_ms + rng.randint(5, 120)} milliseconds before timing out.", lr, stream="stderr", fault=True)
        sim.add(node, tl, f"{tag}[{head(0.0002)} ProcessGroupNCCL.cpp:1664] [PG 0 (default_pg) Rank {r}] Exception (either an error or timeout) detected by watchdog at work: {seq}, last enqueued NCCL work: {seq + 2}, last completed NCCL work: {seq - 1}.", lr, stream="stderr", fault=True)
        sim.add(node, tl + 4.0, f"{tag}[{head(4.0)} ProcessGroupNCCL.cpp:621] [Rank {r}] Some NCCL operations have failed or timed out. Due to the asynchronous nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete data.", lr, stream="stderr", fault=True)
        sim.add(node, tl + 4.0, f"{tag}[{head(4.0)} ProcessGroupNCCL.cpp:627] [Rank {r}] To avoid data inconsistency, we are taking the entire process down.", lr, stream="stderr", fault=True)
    return t + 6.0


def collateral(sim: Simulation, culprit: Node, t_fault: float) -> None:
    """What every other node prints after the culprit fails or stops."""
    rng = sim.rng
    mode = rng.choice(("watchdog", "watchdog", "sigterm"))
    for node in sim.nodes:
        if node is culprit:
            continue
        if mode == "watchdog":
            t = t_fault + sim.timeout_ms / 1000.0 + rng.uniform(0.0, 2.0)
            t_done = watchdog_timeout(sim, node, t)
            launcher_failure(sim, node, rng.randrange(node.gpus), t_done, -6)
        else:
            t = t_fault + rng.uniform(5.0, 40.0)
            ts = clock.bracket(sim.epoch(node, t))
            if sim.fw == "deepspeed":
                launcher_failure(sim, node, 0, t, -15)
                continue
            sim.add(node, t, f"{ts} torch.distributed.elastic.agent.server.api: [WARNING] Received Signals.SIGTERM death signal, shutting down workers", None, stream="stderr", fault=True)
            for lr in range(node.gpus):
                sim.add(node, t, f"{ts} torch.distributed.elastic.multiprocessing.api: [WARNING] Sending process {node.pid(lr)} closing signal SIGTERM", None, stream="stderr", fault=True)
            tb = child_failed_block(sim, node, 0, t + 1.0, -15)
            tb[7] = f"torch.distributed.elastic.multiprocessing.api.SignalException: Process {node.pid_base - 7} got signal: 15"
            for k, text in enumerate(tb[:8]):
                sim.add(node, t + 1.0 + k * 0.0001, text, None, stream="stderr", fault=True)
