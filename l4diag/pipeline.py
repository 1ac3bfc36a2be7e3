"""Run the pipeline: sources -> map (in a process pool) -> merge -> templates -> diagnosis.

The unit of work is one stream (file, archive member or stdin); with ``--jobs N`` > 1 there are
N - 1 worker processes, each handed a few streams at a time, and this process maps streams too
(``_map_shared``). The map of a stream is
``fastmap.Folder`` (block at a time, exactly the Partial of the reference ``mask.SlowFolder``).
Partials merge in any order: ``KeyNodeStats`` keeps first/last by (file, seq), node stats take
min/max/sorted unions, so the report does not depend on ``--jobs`` (tests/test_pipeline.py).

With more than one process, a large plain file is also cut into chunks at line starts, each a
unit of work like a stream (``chunks.py``): their Partials join into exactly the Partial of one
sequential fold, so one huge combined log uses every core too.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from . import baseline as baseline_mod
from .chunks import CHUNK_BYTES, CHUNKS_PER_JOB, ChunkSpec, join_chunks, map_chunk, plan_chunks
from .lines import collapse_warnings, no_usable_input_message
from .mask import MapOptions, map_stream
from .model import Diagnosis, Partial
from .rules import DIAGNOSIS_KINDS, TIMED_OUT, RuleSet, load_rules, timeout_warnings
from .sources import InputError, discover

# The diagnosis and its modules (drain3, scoring) are imported while the workers map
# (``_prepare_diagnosis``), not before the pool forks.


@dataclass
class RunOptions:
    jobs: int = 0  # 0: all cores
    node_regex: str | None = None
    max_line_bytes: int = 1 << 20
    max_decompressed_bytes: int | None = 4 << 30  # per compressed file / archive member
    max_total_decompressed_bytes: int | None = 20 << 30  # per archive
    follow_symlinks: bool = False  # follow symlinks that leave an input directory
    rule_files: list = field(default_factory=list)
    baseline: str | None = None
    top: int = 20
    progress: object = None  # callable(done, total) or None
    chunk_bytes: int = CHUNK_BYTES  # with more than one process, a plain file of 2x this is cut in chunks


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_WORKER_RULES: RuleSet | None = None
_WORKER_FILES: tuple = ()


def _worker_map(args: tuple) -> list:
    """Map a few streams or chunks in a worker and hand back their results (see ``_map_shared``)."""
    global _WORKER_RULES, _WORKER_FILES
    units, rule_files, map_options = args
    if _WORKER_RULES is None or _WORKER_FILES != tuple(rule_files):
        _WORKER_RULES, _WORKER_FILES = load_rules(rule_files), tuple(rule_files)
    return [map_unit(unit, _WORKER_RULES, map_options) for unit in units]


def map_unit(unit, rules: RuleSet, map_options: MapOptions):
    """The map of one unit of work: a stream's Partial, or a chunk's ChunkResult."""
    if isinstance(unit, ChunkSpec):
        return map_chunk(unit, rules, map_options)
    return map_stream(unit, rules, map_options)


def map_all(paths: list, options: RunOptions, rules: RuleSet, while_mapping: Callable[[], None] | None = None) -> Partial:
    """Discover inputs and fold every stream into one merged Partial.

    ``while_mapping`` is called once, in this process, when the workers have their first streams
    and before this process maps its own: work that only needs doing later overlaps the map there.
    """
    found = discover(paths, options.node_regex, max_member_bytes=options.max_decompressed_bytes,
                     max_total_bytes=options.max_total_decompressed_bytes,
                     follow_symlinks=options.follow_symlinks)
    merged = Partial()
    merged.accounting.warnings.extend(found.warnings)
    merged.accounting.inputs_skipped.update(found.skipped_inputs)
    map_options = MapOptions(max_line_bytes=options.max_line_bytes, node_regex=options.node_regex)
    specs = found.streams
    jobs = options.jobs or default_jobs()
    units = _units(specs, jobs, options)
    pooled = [u for u in units if _path_of(u) != "-"]
    results: list = [None] * len(units)
    progress = _Progress(options, len(units))
    if jobs > 1 and len(pooled) > 1:
        _map_shared(units, min(jobs, len(pooled)), options, rules, map_options, results, progress, while_mapping)
    else:
        if while_mapping is not None:
            while_mapping()
        for i, unit in enumerate(units):
            results[i] = map_unit(unit, rules, map_options)
            progress.one_done()
    parts = _stream_partials(units, results, rules, map_options)
    for part in parts:  # in stream order, as one process would (merging does not depend on it)
        merged.merge(part)
    merged.accounting.warnings = collapse_warnings(merged.accounting.warnings)
    return merged


def _units(specs: list, jobs: int, options: RunOptions) -> list:
    """The units of work: streams, and with more than one process the chunks of large plain files."""
    if jobs <= 1:
        return list(specs)
    units = []
    for spec in specs:
        units.extend(plan_chunks(spec, options.chunk_bytes, options.max_line_bytes, CHUNKS_PER_JOB * jobs) or [spec])
    return units


def _stream_partials(units: list, results: list, rules: RuleSet, map_options: MapOptions) -> list:
    """Per stream, in order: its Partial, the chunks of one joined (or, where they cannot be
    joined exactly, the stream folded again as a whole: see chunks.py)."""
    parts, pending = [], []
    for i, unit in enumerate(units):
        if not isinstance(unit, ChunkSpec):
            parts.append(results[i])
            continue
        pending.append(results[i])
        if i + 1 == len(units) or not isinstance(units[i + 1], ChunkSpec) or units[i + 1].index == 0:
            spec = unit.spec
            joined = join_chunks(pending, spec.display, map_options.max_line_bytes)
            parts.append(joined if joined is not None else map_stream(spec, rules, map_options))
            pending = []
    return parts


def _path_of(unit) -> str:
    return unit.spec.path if isinstance(unit, ChunkSpec) else unit.path


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector in this process while it maps and gathers the Partials.

    They hold no cycles (the passes found next to nothing), but as they piled up the collector
    walked them over and over: two full passes of 0.1 s each here on 128 streams of 2M lines.
    Then what survived goes to the oldest generation without a pass (freeze, unfreeze; objects
    frozen before are thawed too): one pass over it would cost as much. Workers forked meanwhile
    keep it paused: they hold no more than a few Partials at a time, and only live for the map
    (0.1 s of collection each otherwise).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


class _Progress:
    """Calls ``options.progress(done, total)`` after each stream."""

    def __init__(self, options: RunOptions, total: int) -> None:
        self.callback, self.done, self.total = options.progress, 0, total

    def one_done(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def _map_shared(units: list, jobs: int, options: RunOptions, rules: RuleSet, map_options: MapOptions, results: list,
                progress: _Progress, while_mapping: Callable[[], None] | None = None) -> None:
    """Map ``units`` (streams and chunks) into ``results`` (same order) with ``jobs - 1`` worker
    processes and this one.

    This process maps too instead of waiting: one process fewer (each holds ~150 MB of interpreter,
    libraries and caches) and half the Partials need no pickling. Largest streams first; stdin is
    always read here.

    While this process maps, it holds the GIL, and the pool's threads that feed the workers and
    read their results wait for it: with one stream per task, a worker spent a quarter of its time
    (5-7 ms a task, 128 streams of 2M lines) waiting between tasks. So a worker gets a few streams
    per task, fewer as the work runs out (guided scheduling, so the processes still finish
    together). What is left between tasks is mostly pickling the Partials (2-5 ms a stream).

    ``while_mapping`` runs once the workers have tasks; the dynamic scheduling gives them more of
    the streams to make up for the time this process spends on it.
    """
    _prepare_workers(rules, options.rule_files)
    sizes = {i: _unit_size(u) for i, u in enumerate(units) if _path_of(u) != "-"}
    order = sorted(sizes, key=lambda i: -sizes[i])
    pending = deque(order)
    here_only = [i for i, u in enumerate(units) if _path_of(u) == "-"]
    running: dict = {}
    with ProcessPoolExecutor(max_workers=jobs - 1) as pool:

        def collect(block: bool) -> None:
            finished, _ = wait(running, return_when=FIRST_COMPLETED) if block else (
                [f for f in running if f.done()], None)
            for fut in finished:
                for i, result in zip(running.pop(fut), fut.result()):
                    results[i] = result
                    progress.one_done()

        def feed() -> None:
            while pending and len(running) < 2 * (jobs - 1):  # two queued per worker: none waits for work
                task = _next_task(pending, sizes, jobs)
                args = ([units[i] for i in task], options.rule_files, map_options)
                running[pool.submit(_worker_map, args)] = task

        feed()
        if while_mapping is not None:
            while_mapping()
            collect(block=False)
            feed()
        for i in here_only:
            results[i] = map_unit(units[i], rules, map_options)
            progress.one_done()
        while pending:
            i = pending.pop()  # this process takes from the small end; the workers from the large one
            results[i] = map_unit(units[i], rules, map_options)
            progress.one_done()
            collect(block=False)
            feed()
        while running:
            collect(block=True)


def _next_task(pending: deque, sizes: dict, jobs: int) -> list:
    """Stream indices for a worker's next task, from the large end of ``pending``: a share of what
    is left (1 / (4 x jobs) of its bytes), at least one stream."""
    share = sum(sizes[i] for i in pending) / (4 * jobs)
    task = [pending.popleft()]
    size = sizes[task[0]]
    while pending and size + sizes[pending[0]] <= share:
        task.append(pending.popleft())
        size += sizes[task[-1]]
    return task


def _prepare_workers(rules: RuleSet, rule_files: list) -> None:
    """Load what every worker needs before they are forked, so that they inherit it: the rules and
    the map code with its compiled patterns (0.4 s of CPU per worker otherwise). Under a start
    method that does not fork, the workers load them themselves (``_worker_map``)."""
    global _WORKER_RULES, _WORKER_FILES
    from . import fastmap

    _WORKER_RULES, _WORKER_FILES = rules, tuple(rule_files)
    fastmap.Folder(rules, MapOptions())  # compiles the rules' map patterns once per process


def _unit_size(unit) -> int:
    """Bytes of a chunk, or of the file behind a stream (0 when unknown): the work it is likely to take."""
    if isinstance(unit, ChunkSpec):
        return unit.size
    try:
        return os.stat(unit.path).st_size
    except OSError:
        return 0


def check_usable(partial: Partial) -> None:
    """Raise InputError when nothing at all could be read."""
    acct = partial.accounting
    if acct.lines_parsed == 0:
        raise InputError(no_usable_input_message(acct))


def _prepare_diagnosis(rules: RuleSet, then: Callable[[], None] | None) -> None:
    """What only the diagnosis needs, done while the workers map: its rules compiled, its modules
    imported; then the caller's own preparation."""
    rules.prepare(DIAGNOSIS_KINDS)
    from . import diagnosis, templates  # noqa: F401 - imported now for their load time

    if then is not None:
        then()


def run_diagnosis(paths: list, options: RunOptions, while_mapping: Callable[[], None] | None = None) -> Diagnosis:
    """The whole pipeline for ``l4diag diagnose``; ``while_mapping``: the caller's work to overlap
    the map (see ``map_all``), such as importing its report renderer."""
    timings = {}
    t0 = time.perf_counter()
    rules = load_rules(options.rule_files)
    base = baseline_mod.load(options.baseline) if options.baseline else None
    with _collector_paused():
        partial = map_all(paths, options, rules, lambda: _prepare_diagnosis(rules, while_mapping))
    timings["map"] = time.perf_counter() - t0
    check_usable(partial)
    from .diagnosis import DiagnoseOptions, diagnose
    from .templates import build_templates

    t1 = time.perf_counter()
    templates = build_templates(partial)
    timings["templates"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    before = Counter(TIMED_OUT)
    result = diagnose(partial, templates, rules, base, DiagnoseOptions(top=options.top), paths)
    result.accounting.warnings.extend(timeout_warnings(TIMED_OUT - before))
    timings["diagnosis"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    result.timings = {k: round(v, 4) for k, v in timings.items()}
    result.baseline = options.baseline
    return result


def learn_baseline(paths: list, options: RunOptions, existing: str | None = None) -> baseline_mod.Baseline:
    """Fold healthy runs (one path per run) into a baseline."""
    from .templates import build_templates

    rules = load_rules(options.rule_files)
    base = baseline_mod.load(existing) if existing else baseline_mod.Baseline()
    for path in paths:
        partial = map_all([path], options, rules)
        check_usable(partial)
        base.add_run(partial, build_templates(partial))
    return base
