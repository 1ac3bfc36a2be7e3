"""Records of a synthetic run: the lines each node prints, the run's parameters and its truth."""

from __future__ import annotations

from dataclasses import dataclass, field

FRAMEWORKS = ("megatron", "deepspeed", "hf", "torchtitan")
LAYOUTS = (
    "dir-per-node",
    "file-per-node",
    "torchrun",
    "combined-host",
    "combined-rank",
    "file-per-node-gz",
    "file-per-node-bz2",
    "file-per-node-xz",
    "tar.gz",
    "zip",
)
FAULTS = ("hardware", "network", "storage", "checkpoint_load", "oom", "software", "hang", "divergence")


@dataclass
class Line:
    """One line a node prints. ``t`` is true seconds since launch; the text already holds native timestamps."""

    t: float
    text: str
    local_rank: int | None = None  # None: printed by the node (launcher, kernel), not by a worker
    stream: str = "stdout"
    iteration: int | None = None  # set on iteration-marker lines
    evidence: bool = False  # a root-cause, failure-indicating line
    fault: bool = False  # printed because of the fault (root cause or collateral)
    raw: bool = False  # verbatim text (real excerpt): never add a collector timestamp


@dataclass
class Node:
    """A simulated node: where its lines come from and how its clock is off."""

    index: int
    name: str  # node id as l4diag should name it
    host: str  # host name printed inside lines
    gpus: int
    first_rank: int
    clock_offset: float
    start_delay: float
    pid_base: int
    lines: list[Line] = field(default_factory=list)

    def rank(self, local_rank: int) -> int:
        return self.first_rank + local_rank

    def pid(self, local_rank: int) -> int:
        return self.pid_base + local_rank


@dataclass
class RunSpec:
    """Everything that determines one synthetic run (besides the seed's random stream)."""

    fault: str  # a fault category or "healthy"
    nodes: int
    framework: str
    layout: str
    seed: int
    stage: str | None = None
    excerpt: str | None = None  # path of a real excerpt to inject
    name: str = ""


@dataclass
class Truth:
    """The label eval scores against (written as truth.json)."""

    verdict: str
    category: str | None
    subcategory: str | None
    node: str | None
    stage: str | None
    iteration: int | None
    log_interval: int
    framework: str
    layout: str
    source: str
    excerpt: str | None
    evidence: list[str]
    nodes: int
    seed: int
    node_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "category": self.category,
            "subcategory": self.subcategory,
            "node": self.node,
            "stage": self.stage,
            "iteration": self.iteration,
            "log_interval": self.log_interval,
            "framework": self.framework,
            "layout": self.layout,
            "source": self.source,
            "excerpt": self.excerpt,
            "evidence": self.evidence,
            "nodes": self.nodes,
            "seed": self.seed,
            "node_ids": self.node_ids,
        }
