"""Where an estimate's traced run comes from: the trace cache, a stream derived from runs at other
batch sizes, or a new trace.

1. The cache (``yolomem.trace.store``): the same configuration traced before, in this process or on
   this machine, at this batch.
2. A derived stream (``yolomem.trace.derive``): the same configuration traced at ``MIN_TRACED`` (2)
   or more other batches, 3 where the stream repeats a block per image (a family; its runs wait in
   the cache). ``derive_family`` checks the traced runs against each other, event for event, before
   any run is derived from them; at batches past the traced ones it also refuses where the tracer or
   its oracle would decide differently. A family it refuses is not asked again in this process.
3. A DDP rank's run (``world_size`` > 1): the one-GPU run at the rank's share from 1, 2 or 4, with DDP's
   allocations inserted where the trainer wraps the model (``yolomem.loops.ddp.rank_trace``).
4. Otherwise the run is traced, and stored for 1 and 2.
Runs that differ in more than their sizes are kept apart: which iterations step the optimizer
(gradient accumulation switches with the batch), and, for whole epochs, what the plan traces (its
levels and validation shapes, ``yolomem.result.epochs.plan_shape``).

Where each run came from is logged (``logging`` name ``yolomem.runs``; ``--verbose`` shows it); the
estimate itself does not depend on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.loops.base import TracedRun, rank_batch
from yolomem.recent import Recent
from yolomem.trace.derive import NotDerivable, RunFacts, StreamFamily, derive_family
from yolomem.trace.packed import PackedTrace, pack, unpack
from yolomem.result.store_keys import family_key
from yolomem.trace.store import TraceStore, activate, canonical, key_digest
from yolomem.trace.tracer import real_cap_is_fixed

# traced runs before any is derived: two draw the line. ``derive_family`` asks for a third where the
# stream repeats a block per image (segmentation's mask loss, validation's NMS, RT-DETR's matcher), whose
# numbers need three points; a family with more members is checked against all of them. Two suffice
# elsewhere: each size is one batch-sized dimension times fixed ones, so a line through two runs holds
# at every batch (tests/test_derive_real.py: two-run families of every task and both loops, derived
# past the traced batches, equal their traces event for event)
MIN_TRACED = 2
RECENT_DERIVED = 16  # derived runs kept in memory: a sweep's check that a run derives, then its estimate
RECENT_UNPACKED = 12  # stored runs kept read back: an explain ladder's 5 families of 2 traced runs each
MAX_MEMBERS = 5  # traced runs a family is built from, the nearest to the batch asked for

log = logging.getLogger("yolomem.runs")
_watchers: ContextVar[tuple[Callable[[str], None], ...]] = ContextVar("yolomem_run_watchers", default=())


@contextlib.contextmanager
def watching(callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(text)`` whenever a run is traced or derived inside the block (progress displays)."""
    token = _watchers.set(_watchers.get() + (callback,))
    try:
        yield
    finally:
        _watchers.reset(token)


def _tell(text: str) -> None:
    for callback in _watchers.get():
        callback(text)


@dataclass(frozen=True)
class StoredRun:
    """A traced run as the cache keeps it."""

    trace: PackedTrace
    params: int
    imgsz: int
    optimizer: str
    notes: tuple[str, ...]
    probe_failures: tuple[str, ...]
    stride: int | None  # the model's largest stride (plans for whole epochs need it)
    first_level_iteration: int | None = None  # where whole epochs' level iterations start

    def facts(self) -> RunFacts:
        return RunFacts(unpack(self.trace), self.params, self.imgsz, self.optimizer, self.notes, self.probe_failures)


def _name(batch: int, apart: dict) -> str:
    """A run's file name in its family: what keeps runs apart (``RunSource._apart``), then its batch."""
    return f"{hashlib.sha256(canonical(apart).encode()).hexdigest()[:12]}-b{batch}"


class RunSource:
    """Traced runs for estimates: from ``store`` (and this process's memory), derived, or traced."""

    def __init__(self, store: TraceStore, derive: bool = True):
        self.store = store
        self.derive = derive  # False: trace every batch not in the cache (to compare with derived runs)
        self.recording: list | None = None  # set by prefetch workers: every run traced, to hand back
        self._memory: dict[tuple[str, str], StoredRun] = {}
        self._families: dict[tuple, StreamFamily | str] = {}  # a family, or why it was refused
        self._traced_here: set[tuple[str, str]] = set()  # runs traced by this process or its workers
        self._derived: Recent = Recent(RECENT_DERIVED)  # the last runs derived (a sweep asks for each twice)
        self._unpacked: Recent = Recent(RECENT_UNPACKED)  # the last stored runs read back (a sweep reads each often)

    def obtain(self, config: EstimateConfig, resolved: ResolvedModel, request=None, density=None) -> TracedRun:
        """The traced run of ``config``. ``request``: its whole-epoch request (its ``hook.plan`` is set);
        ``density``: the density plan of a dataset's labels (``yolomem.loops.density``)."""
        from yolomem.loops import trace_run

        found = self.lookup(config, resolved, request, density)
        if found is not None:
            return found
        share = self._one_gpu_share(config)
        if share is not None:  # trace the one-GPU run at the rank's share: it joins that family
            rank = self._as_rank(self.obtain(share, resolved, None, density), config, resolved, say=True)
            if rank is not None:
                return rank
        label = run_label(config)
        _tell(f"tracing {label}")
        run = trace_run(config, resolved, after_iterations=request.hook if request is not None else None,
                        density=density)  # fmt: skip
        key = family_key(config, resolved)
        digest = key_digest(key)
        first_level = request.hook.plan.first_level_iteration if request is not None else None
        stored = StoredRun(pack(run.trace), run.params, run.imgsz, run.optimizer, run.notes, run.probe_failures,
                           request.hook.stride if request is not None else None, first_level)  # fmt: skip
        name = _name(rank_batch(config), self._apart(config, resolved, density, request.hook.plan if request else None))
        self._memory[(digest, name)] = stored
        self._traced_here.add((digest, name))
        self.store.save(key, name, stored)
        if self.recording is not None:
            self.recording.append((digest, name, stored))
        log.info("%s: traced", label)
        return run

    def stored_runs(self) -> list[tuple[str, str, StoredRun]]:
        """The runs this process or its workers traced, as ``adopt`` takes them (for another worker)."""
        return [(digest, name, self._memory[digest, name]) for digest, name in sorted(self._traced_here)
                if (digest, name) in self._memory]  # fmt: skip

    def adopt(self, runs: list[tuple[str, str, StoredRun]]) -> None:
        """Runs another process traced for this one (a prefetch worker's, or the command's handed to a
        worker), as ``stored_runs`` and ``recording`` list them."""
        for digest, name, stored in runs:
            self._memory.setdefault((digest, name), stored)
            self._traced_here.add((digest, name))

    def lookup(self, config: EstimateConfig, resolved: ResolvedModel, request=None, density=None, *,
               say: bool = True) -> TracedRun | None:  # fmt: skip
        """The run from the cache or derived from traced ones; None when it has to be traced. ``say``:
        log where it came from (and tell the watchers)."""
        key = family_key(config, resolved)
        digest = key_digest(key)
        batch = rank_batch(config)
        known = self._any_member(key, digest)
        plan = None
        if request is not None:
            if known is None or known.stride is None:  # the plan needs the model's stride: trace
                return None
            plan = request.hook.plan_for(resolved.task, batch, known.imgsz, known.stride, known.first_level_iteration)
        label = run_label(config)
        name = _name(batch, self._apart(config, resolved, density, plan))
        stored = self._load(key, digest, name)
        if stored is not None:
            if say and (digest, name) in self._traced_here:
                log.info("%s: traced earlier, kept in memory", label)
            elif say:
                log.info("%s: traced run from the cache (%s)", label, self.store.root / digest)
            return self._use(self._facts(digest, name, stored), config, resolved, density, request, plan, stored.stride)
        derived = self._derived.get((digest, name))
        if derived is None and self.derive:
            derived = self._derive(key, digest, name.rsplit("-b", 1)[0], batch, label, say)
            if derived is not None:
                self._derived[(digest, name)] = derived
        elif derived is not None and say:
            log.info("%s: derived earlier, kept in memory", label)
        if derived is None:
            share = self._one_gpu_share(config)
            single = self.lookup(share, resolved, None, density, say=say) if share is not None else None
            return self._as_rank(single, config, resolved, say) if single is not None else None
        return self._use(derived, config, resolved, density, request, plan, known.stride if known else None)

    def known(self, config: EstimateConfig) -> bool:
        """Whether ``config``'s run needs no trace (it is in the cache, or derives)."""
        from yolomem.result.prepare import prepare

        prepared = prepare(config)
        return self.lookup(prepared.config, prepared.resolved, prepared.request, prepared.density, say=False) is not None

    def _one_gpu_share(self, config: EstimateConfig) -> EstimateConfig | None:
        """The one-GPU config a DDP rank's run is made from (``one_gpu_share``, which also leaves whole
        epochs to a trace); None where it is traced."""
        return one_gpu_share(config) if self.derive else None

    @staticmethod
    def _as_rank(single: TracedRun, config: EstimateConfig, resolved: ResolvedModel, say: bool) -> TracedRun | None:
        """The DDP rank's run: the one-GPU run at its share with DDP's blocks inserted (``rank_trace``)."""
        from dataclasses import replace

        from yolomem.loops import get_loop
        from yolomem.loops.ddp import rank_trace

        trace = rank_trace(single.trace)
        if trace is None:
            return None
        if say:
            log.info("%s: the one-GPU run at batch %d, plus DDP's state", run_label(config), rank_batch(config))
        note = get_loop(resolved.framework).ddp_note(config.world_size, rank_batch(config))
        return replace(single, trace=trace, notes=(*single.notes, note))

    @staticmethod
    def _apart(config: EstimateConfig, resolved: ResolvedModel, density, plan) -> dict:
        """What keeps runs of one family apart, besides their batch: which traced iterations step the
        optimizer, what each traced batch holds (its densest and typical samples), the epoch plan."""
        from yolomem.loops.base import traced_batches

        _, counts, upper = traced_batches(config, resolved.task, rank_batch(config), density, True)
        held = [c[:2] if c is not None else None for c in counts]
        return {"steps": _steps(config, resolved, len(counts)), "batches": held, "upper": upper,
                "plan": _plan_shape(plan) if plan is not None else None}  # fmt: skip

    # -- pieces ----------------------------------------------------------------------------------
    def _load(self, key: dict, digest: str, name: str) -> StoredRun | None:
        stored = self._memory.get((digest, name))
        if stored is None:
            stored = self.store.load(key, name)
            if isinstance(stored, StoredRun):
                self._memory[(digest, name)] = stored
            else:
                stored = None
        return stored

    def _facts(self, digest: str, name: str, stored: StoredRun) -> RunFacts:
        """``stored.facts()``, unpacked once while it is among the last few read: an explain ladder reads
        its traced runs back for every probe and family check (~35 ms each for yolov8x)."""
        facts = self._unpacked.get((digest, name))
        if facts is None:
            facts = self._unpacked[(digest, name)] = stored.facts()
        return facts

    def _any_member(self, key: dict, digest: str) -> StoredRun | None:
        for (family, _name_), stored in self._memory.items():
            if family == digest:
                return stored
        for name in self.store.names(key):
            stored = self._load(key, digest, name)
            if stored is not None:
                return stored
        return None

    def _members(self, key: dict, digest: str, prefix: str) -> list[int]:
        names = {n for (family, n) in self._memory if family == digest} | set(self.store.names(key))
        return sorted(int(n.rsplit("-b", 1)[1]) for n in names if n.rsplit("-b", 1)[0] == prefix)

    def _derive(self, key: dict, digest: str, prefix: str, batch: int, label: str, say: bool) -> RunFacts | None:
        batches = self._members(key, digest, prefix)
        reasons = []
        for chosen in _candidates(batches, batch):
            family = self._family(key, digest, prefix, chosen)
            if family is None:
                return None
            try:
                if isinstance(family, str):
                    raise NotDerivable(family)
                derived = family.run_at(batch)
            except NotDerivable as error:
                reasons.append(f"not from batches {', '.join(map(str, chosen))} ({error})")
                continue
            if say:
                log.info("%s: derived from traced batches %s", label, ", ".join(map(str, chosen)))
                _tell(f"derived {label}")
            return derived
        if reasons and say:
            log.info("%s: %s; tracing it", label, "; ".join(reasons))
        return None

    def _family(self, key: dict, digest: str, prefix: str, chosen: tuple[int, ...]) -> StreamFamily | str | None:
        """The family of these traced runs (or why it is none), built once per process; None when a
        run listed has vanished from the cache since."""
        memo = (digest, prefix, chosen)
        if memo not in self._families:
            runs = {}
            for member in chosen:
                name = f"{prefix}-b{member}"
                stored = self._load(key, digest, name)
                if stored is None:
                    return None
                runs[member] = self._facts(digest, name, stored)
            _tell(f"checking traced batches {', '.join(map(str, chosen))}")
            try:
                self._families[memo] = derive_family(runs)
            except NotDerivable as error:
                self._families[memo] = str(error)
        return self._families[memo]

    @staticmethod
    def _use(facts: RunFacts, config, resolved, density, request, plan, stride) -> TracedRun:
        """The run as the loop's trace would return it (its density plan and upper iteration are
        computed, as the loop computes them: they do not come from the trace)."""
        from yolomem.loops.base import traced_batches

        if request is not None:
            request.hook.plan, request.hook.stride = plan, stride
        plan_of_batches, _, upper = traced_batches(config, resolved.task, rank_batch(config), density, True)
        return TracedRun(facts.trace, facts.params, facts.imgsz, facts.optimizer, facts.notes, facts.probe_failures,
                         plan_of_batches, upper)  # fmt: skip


def one_gpu_share(config: EstimateConfig) -> EstimateConfig | None:
    """The one-GPU config whose run a DDP rank's run is made from: the same training step at the per-rank
    batch, plus DDP's allocations where the trainer wraps the model (``yolomem.loops.ddp.rank_trace``;
    tests/test_ddp.py: equal to the rank's own trace). None for one GPU, and where the rank is traced
    itself: AutoBatch probes, and whole epochs (validation runs on rank 0 only)."""
    if config.world_size <= 1 or config.step != "train" or (config.epochs or 0) >= 2 or config.data:
        return None
    return config.with_changes(world_size=1, batch=rank_batch(config))


def run_label(config: EstimateConfig) -> str:
    return f"{config.model} batch={config.batch} imgsz={config.imgsz}"


def _steps(config: EstimateConfig, resolved: ResolvedModel, iterations: int) -> tuple[bool, ...]:
    """Which traced iterations step the optimizer (what gradient accumulation switches with the batch)."""
    from yolomem.loops import get_loop

    if config.step != "train":
        return ()
    return get_loop(resolved.framework).optimizer_steps(iterations, rank_batch(config), config.nbs)


def _plan_shape(plan) -> tuple:
    from yolomem.result.epochs import plan_shape

    return plan_shape(plan)


def _candidates(batches: list[int], target: int) -> list[tuple[int, ...]]:
    """Sets of traced runs to derive ``target`` from, nearest first: up to ``MAX_MEMBERS``, then the
    nearest three (what a block repeated per image needs), then the nearest ``MIN_TRACED`` alone (past
    some batch the tracer decides otherwise, e.g. a target tensor grows past its real-tensor cap: runs on
    either side of it are two families). Only runs on the target's side of the batch where the tracer's
    cap stops growing (``real_cap_is_fixed``): a set across it never derives, and with them among the
    nearest, ``fit yolov8n-seg.yaml gpu=H200`` traced batch 648 beside traced 571, 659, 703 and 725."""
    fixed = real_cap_is_fixed(target)
    batches = [b for b in batches if real_cap_is_fixed(b) == fixed]
    if len(batches) < MIN_TRACED:
        return []
    nearest = sorted(batches, key=lambda b: (abs(b - target), -b))
    sets = [tuple(sorted(nearest[:size])) for size in (MAX_MEMBERS, MIN_TRACED + 1, MIN_TRACED)]
    return list(dict.fromkeys(sets))


_SOURCE: RunSource | None = None


def default_source() -> RunSource:
    """The process's run source: the user cache folder unless ``configure(cache=False)`` or
    ``YOLOMEM_NO_CACHE=1``."""
    global _SOURCE
    if _SOURCE is None:
        import os

        from yolomem.trace.store import OFF_ENV

        _SOURCE = RunSource(TraceStore(enabled=os.environ.get(OFF_ENV, "") in ("", "0")))
    activate(_SOURCE.store)  # what else the process keeps (yolomem.loops.ultralytics.release) goes there too
    return _SOURCE


def configure(*, cache: bool | None = None, root: Path | None = None, derive: bool | None = None) -> RunSource:
    """Replace the process's run source (the CLI's ``--no-cache``; tests point ``root`` at a temp
    folder; ``derive=False`` traces every batch, to compare)."""
    global _SOURCE
    current = default_source()
    store = TraceStore(root if root is not None else current.store.root,
                       enabled=current.store.enabled if cache is None else cache)  # fmt: skip
    _SOURCE = RunSource(store, derive=current.derive if derive is None else derive)
    activate(store)
    return _SOURCE


@dataclass(frozen=True)
class _SourceSetting:
    """A run source's settings, handed to worker processes (they start from the defaults)."""

    root: Path
    cache: bool
    derive: bool

    def adopt(self) -> None:
        """This process's run source from now on; kept as it is (with what it holds) when it already is."""
        current = default_source()
        if (current.store.root, current.store.enabled, current.derive) != (self.root, self.cache, self.derive):
            configure(cache=self.cache, root=self.root, derive=self.derive)


def worker_pool(jobs: int):
    """Worker processes (``yolomem.workers``: the command's warm ones, or new ones) whose run source is
    this process's: its cache folder, ``--no-cache`` and ``derive`` (a test's or ``configure()``'s, not
    the defaults). Sweeps that trace side by side (the table, prefetch, the calculator page) all take
    theirs here."""
    from yolomem import workers

    source = default_source()
    return workers.worker_pool(jobs, _SourceSetting(source.store.root, source.store.enabled, source.derive))


@contextlib.contextmanager
def cache_off():
    """The CLI's ``--no-cache`` for one command: no cache reads or writes, here or in worker processes
    (``worker_pool`` hands them this source's settings). The source before is restored after."""
    global _SOURCE
    saved = default_source()
    configure(cache=False)
    try:
        yield
    finally:
        _SOURCE = saved
        activate(saved.store)


def obtain_run(config: EstimateConfig, resolved: ResolvedModel, request=None, density=None) -> TracedRun:
    return default_source().obtain(config, resolved, request, density)
