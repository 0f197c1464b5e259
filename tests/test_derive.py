"""Derived runs (yolomem.trace.derive) on small synthetic traces: what derives exactly, and what is refused.

The traces here are written by hand from a small "program" at each batch, so the expected run at any
batch is known; tests/test_derive_real.py checks derived runs against real traces of real models.
"""

from __future__ import annotations

import pytest

from yolomem.trace.derive import NotDerivable, RunFacts, compare_runs, derive_family
from yolomem.trace.tracer import AllocationEvent, OracleAnswer, Trace


class _Program:
    """Writes a trace the way the tracer does: sequential storage ids, frees carrying their bytes."""

    def __init__(self):
        self.events: list[AllocationEvent] = []
        self.sizes: dict[int, int] = {}
        self.next_id = 100
        self.real: set[int] = set()
        self.bounds: list[int] = []
        self.iteration = 0

    def start(self, iteration: int) -> None:
        self.iteration = iteration
        self.bounds.append(len(self.events))

    def alloc(self, nbytes: int, phase: str = "forward", category: str = "activation", real: bool = False,
              upper: int | None = None) -> int:  # fmt: skip
        sid = self.next_id
        self.next_id += 1
        self.sizes[sid] = nbytes
        if real:
            self.real.add(sid)
        self.events.append(AllocationEvent("alloc", sid, nbytes, "float16", category, "model.1", phase, self.iteration, upper))
        return sid

    def free(self, sid: int, phase: str = "forward") -> None:
        alloc = next(e for e in self.events if e.storage_id == sid and e.op == "alloc")
        self.events.append(AllocationEvent("free", sid, self.sizes[sid], alloc.dtype, alloc.category, alloc.module,
                                           alloc.phase, alloc.iteration, alloc.upper_nbytes))  # fmt: skip


def _run(batch: int, *, per_image_loop: bool = False, square: bool = False, extra_at: int | None = None,
         real_bytes: int = 64, cap: int | None = 1 << 20) -> RunFacts:  # fmt: skip
    program = _Program()
    weights = program.alloc(4096, "setup", "parameter")
    answers = []
    for iteration in range(2):
        program.start(iteration)
        images = program.alloc(3 * 64 * 64 * batch, "preprocess", "input")
        objects = 13 + 8 * (batch - 1)  # the densest image, then typical ones
        targets = program.alloc(24 * objects, "preprocess", "input", real=True)
        act = program.alloc(batch * batch * 16 if square else 1000 * batch + 32)
        program.free(program.alloc(0, category="cudnn_workspace", upper=4096 * batch))  # a kernel's scratch block
        mask = program.alloc(real_bytes * batch, "loss", "loss", real=True)
        positives = min(84 * batch, 10 * objects)
        answers.append(OracleAnswer(f"nonzero(bool[{batch}, 84])", str(positives), "loss", (84 * batch, 10 * objects),
                                    len(program.events)))  # fmt: skip
        fg = program.alloc(16 * positives, "loss", "loss")
        if extra_at == batch:
            program.free(program.alloc(8, "loss", "loss"))
        outputs = []
        if per_image_loop:
            for image in range(2 * batch):  # e.g. NMS over a validation batch of 2 x batch images
                targets_here = 13 if image == 0 else 8  # the densest image first
                answers.append(OracleAnswer(f"nonzero(bool[{targets_here}, 300])", "0", "val_metrics",
                                            (targets_here * 300, 0), len(program.events)))  # fmt: skip
                tmp = program.alloc(756, "val_nms", "other", real=True)
                big = program.alloc(64 * batch, "val_nms", "other")
                program.free(tmp, "val_nms")
                outputs.append(program.alloc(7200, "val_nms", "other", real=True))
                program.free(big, "val_nms")
            for out in reversed(outputs):
                program.free(out, "val_nms")
        for sid in (fg, mask, act, targets, images):
            program.free(sid, "backward")
        program.alloc(4096, "optimizer", "optimizer_state") if iteration == 0 else None
    del weights
    trace = Trace(program.events, answers, program.bounds, frozenset(program.real), cap)
    return RunFacts(trace, 3_000_000, 64, "AdamW", (f"per-rank batch {batch}", "imgsz=64 rounded: 0.05 s"), ())


def _family(batches, **kwargs):
    return derive_family({b: _run(b, **kwargs) for b in batches})


@pytest.mark.parametrize("loop", [False, True])
def test_derived_runs_equal_the_program_at_other_batches(loop):
    family = _family((2, 3, 5), per_image_loop=loop)
    for batch in (4, 9, 12):  # 12: the oracle's answer changes bound past it (see below)
        assert compare_runs(family.run_at(batch), _run(batch, per_image_loop=loop)) is None


def test_numbers_in_notes_and_oracle_answers_are_derived():
    derived = _family((2, 3, 5)).run_at(7)
    assert derived.notes == ("per-rank batch 7", "imgsz=64 rounded: 0.05 s")
    assert derived.trace.oracle_answers[0].question == "nonzero(bool[7, 84])"


def test_without_repeated_blocks_two_batches_draw_the_line():
    family = _family((2, 5))
    assert compare_runs(family.run_at(11), _run(11)) is None


def test_a_size_off_the_line_is_refused_and_said_where():
    with pytest.raises(NotDerivable, match="batch 3, the run differs from its trace: event 3"):
        _family((2, 3, 5), square=True)


def test_an_event_only_some_batches_have_is_refused():
    with pytest.raises(NotDerivable):
        _family((2, 3, 5), extra_at=3)


def test_repeated_blocks_need_a_third_batch():
    with pytest.raises(NotDerivable, match="three batch sizes"):
        _family((2, 5), per_image_loop=True)


def test_repeated_blocks_are_not_derived_below_the_smallest_traced_batch():
    with pytest.raises(NotDerivable, match="below the smallest"):
        _family((3, 4, 6), per_image_loop=True).run_at(2)


def test_an_oracle_answer_that_would_switch_bound_is_refused():
    # min(84 B, 10 (13 + 8 (B - 1))): 84 B up to B = 12, the positives beyond
    family = _family((2, 3, 5))
    assert compare_runs(family.run_at(12), _run(12)) is None
    with pytest.raises(NotDerivable, match="bounds"):
        family.run_at(13)


def test_a_real_storage_past_the_tracers_cap_is_refused():
    family = _family((2, 3, 5), real_bytes=1000, cap=10_500)
    assert compare_runs(family.run_at(10), _run(10, real_bytes=1000, cap=10_500)) is None
    with pytest.raises(NotDerivable, match="cap"):
        family.run_at(11)


def test_compare_runs_names_the_first_difference():
    a, b = _run(3), _run(4)
    assert "event" in compare_runs(a, b)
    assert compare_runs(a, _run(3)) is None


def test_answers_asked_once_per_image_repeat_with_the_images():
    derived = _family((2, 3, 5), per_image_loop=True).run_at(8)
    per_image = [a for a in derived.trace.oracle_answers if a.phase == "val_metrics"]
    assert len(per_image) == 2 * 2 * 8  # two iterations, 2 x batch images each
    assert compare_runs(derived, _run(8, per_image_loop=True)) is None


def test_answers_without_a_place_are_derived_as_texts():
    def unplaced(batch):
        run = _run(batch)
        answers = [OracleAnswer(a.question, a.answer, a.phase, a.bounds) for a in run.trace.oracle_answers]
        trace = Trace(run.trace.events, answers, run.trace.iteration_bounds, run.trace.real_ids, run.trace.real_bytes_cap)
        return RunFacts(trace, run.params, run.imgsz, run.optimizer, run.notes, run.probe_failures)

    family = derive_family({b: unplaced(b) for b in (2, 3, 5)})
    assert compare_runs(family.run_at(9), unplaced(9)) is None


def _steps_ending_in_a_read(batch: int) -> RunFacts:
    """Iterations whose kernels have upper-figure sizes (one more token each) and that end by reading a
    scalar (the yolov5 loop's optimizer step asks ``item()`` of the loss scale near its end)."""
    program = _Program()
    answers = []
    for iteration in range(3):
        program.start(iteration)
        images = program.alloc(3 * 64 * 64 * batch, "preprocess", "input")
        for _ in range(4):  # convolutions with a workspace whose upper rule differs
            program.free(program.alloc(512 * batch, category="cudnn_workspace", upper=4096 * batch))
        scale = program.alloc(4, "optimizer", "other")
        answers.append(OracleAnswer("item(float32[])", "0.0", "optimizer", (), len(program.events)))
        program.free(scale, "optimizer")
        program.free(images, "optimizer")
    trace = Trace(program.events, answers, program.bounds, frozenset(), None)
    return RunFacts(trace, 3_000_000, 64, "SGD", (), ())


def test_iteration_bounds_count_the_upper_sizes_before_them():
    # A bound is an event index; the family finds it among tokens, where each upper-figure size is a
    # token too. yolov5s whole epochs (fit gpu=T4): counted without them, the bounds of a derived run
    # came out 3 events late once an item() answer lay within the upper tokens before a bound.
    family = derive_family({b: _steps_ending_in_a_read(b) for b in (2, 3, 5)})
    derived = family.run_at(7)
    assert derived.trace.iteration_bounds == _steps_ending_in_a_read(7).trace.iteration_bounds == [0, 12, 24]
    assert compare_runs(derived, _steps_ending_in_a_read(7)) is None
