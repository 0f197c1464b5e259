"""The event stream at any batch size, from traces at a few: the same ops, each size a·B + c.

Why: a trace costs seconds, a replay of its events through the allocator model a fraction of one.
Sweeps (``fit``, ``--explain``, plots, the report) ask for the same training step at many batch sizes.

When it holds: with the batches of ``yolomem.loops.batches`` (one densest image and identical typical
images, the densest one independent of the batch), a training step runs the same ops in the same
order at every batch, and each allocation's size is an integer affine function of the batch: tensor
dimensions are the batch, the objects in it (densest + (B - 1) x typical), the anchors and fixed
sizes. Loops over the images of a batch (NMS in the validation pass, older Ultralytics' target
padding) repeat one block per image: more blocks at a larger batch, each block alike.

How: each traced run becomes one sequence of tokens (what must match exactly: alloc or free, dtype,
category, module, phase, iteration, real or fake; for a free, the same of the storage it frees) and
one whole number per token (an allocation's bytes; for a free, how many allocations ago its storage
was allocated). Numbers inside the texts that go with a trace (oracle answers such as
``nonzero(bool[16, 8400])``, notes) are tokens too. The run at the smallest traced batch is the
template; the run at the largest must equal it but for inserted blocks, each one chunk per extra
batch unit, the chunks alike. At a batch B the template gets B - B_low chunks at each insertion;
every number lies on the line through the traced batches, in integers (the allocator's 512-byte
rounding happens later, in the replay); a number inside inserted chunks may also step with the chunk
(a free of the j-th image's output after the loop). Every other traced run is then derived and must
equal its trace exactly. Anything else raises ``NotDerivable`` with the reason; the caller traces.

Why not imgsz: the model's tensors are polynomial in the feature-map sides, but the data-dependent
sizes are not. Which anchors lie inside a box (the assigner's candidates, the yolov5 loop's anchor
matches) counts lattice points inside boxes given as fractions of the image: a step function of the
side. So do the letterbox and rect shapes of validation (``ceil(imgsz / stride + 0.5)``), and the
oracle's and the tracer's thresholds below. Each image size is traced.

Two guards for batches beyond the traced ones: an oracle answer that is the least of its bounds
(elements of the tensor, assumed positives) must stay the least of the derived bounds; and a storage
the tracer kept real must stay within its real-tensor cap (a larger one would have been fake).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from yolomem.collector import cyclic_gc_paused
from yolomem.trace.tracer import AllocationEvent, OracleAnswer, Trace, real_bytes_cap_for, real_cap_in

# whole numbers without a leading zero ("0.05" keeps its "05" as text, so it prints back the same)
_NUMBER = re.compile(r"(?<!\d)(?:0|[1-9]\d*)(?!\d)")


class NotDerivable(Exception):
    """The traced runs are not one affine family in the batch; the message says where they differ."""


@dataclass(frozen=True)
class RunFacts:
    """A traced run: its trace and what goes with it (carried over or derived by ``StreamFamily``)."""

    trace: Trace
    params: int
    imgsz: int
    optimizer: str
    notes: tuple[str, ...]
    probe_failures: tuple[str, ...]


# -- runs as token sequences ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Sequence:
    tokens: list  # hashable, must match exactly
    numbers: np.ndarray  # int64, one per token


def _inline(trace: Trace) -> bool:
    """Whether the trace says where each oracle answer was asked: then answers ride in the event stream
    (an answer asked once per image repeats with its image's block)."""
    return all(answer.at >= 0 for answer in trace.oracle_answers)


def _answer_text(answer: OracleAnswer) -> str:
    return f"oracle\x00{answer.question}\x00{answer.answer}\x00{answer.phase}\x00{','.join(map(str, answer.bounds))}"


def _text_tokens(text: str, kind: str) -> tuple[list, list[int]]:
    """One token per number in ``text`` (its template and the number's place), or one without."""
    template = _NUMBER.sub("#", text)
    found = [int(n) for n in _NUMBER.findall(text)]
    return [(kind, template, k) for k in range(len(found))] or [(kind, template, -1)], found or [0]


def _event_sequence(trace: Trace) -> _Sequence:
    """Events as tokens; a free's number is how many allocations back its storage was allocated."""
    ordinal: dict[int, int] = {}
    signature: dict[int, tuple] = {}
    tokens, numbers = [], []
    expected_id = None
    answers: dict[int, list[OracleAnswer]] = {}
    if _inline(trace):
        for answer in trace.oracle_answers:
            answers.setdefault(answer.at, []).append(answer)
    for index in range(len(trace.events) + 1):
        for answer in answers.get(index, ()):
            more_tokens, more_numbers = _text_tokens(_answer_text(answer), "oracle")
            tokens += more_tokens
            numbers += more_numbers
        if index == len(trace.events):
            break
        event = trace.events[index]
        sig = (event.dtype, event.category, event.module, event.phase, event.iteration)
        if event.op == "alloc":
            if expected_id is not None and event.storage_id != expected_id:
                raise NotDerivable(f"storage ids are not sequential at #{event.storage_id}")
            expected_id = event.storage_id + 1
            sig += (event.storage_id in trace.real_ids,)
            ordinal[event.storage_id] = len(ordinal)
            signature[event.storage_id] = sig
            tokens.append((True, sig))
            numbers.append(event.nbytes)
            if event.upper_nbytes is not None:  # a kernel workspace's upper-figure size: its own token
                tokens.append(("upper",))
                numbers.append(event.upper_nbytes)
        else:
            tokens.append((False, sig, signature[event.storage_id]))
            numbers.append(len(ordinal) - ordinal[event.storage_id])
    return _Sequence(tokens, np.asarray(numbers, dtype=np.int64))


def _texts(facts: RunFacts) -> list[str]:
    trace = facts.trace
    texts = [] if _inline(trace) else [_answer_text(a) for a in trace.oracle_answers]
    texts += [f"note\x00{n}" for n in facts.notes]
    texts += [f"probe\x00{p}" for p in facts.probe_failures]
    texts.append(f"facts\x00{facts.params}\x00{facts.imgsz}\x00{facts.optimizer}\x00{trace.real_bytes_cap}")
    return texts


def _text_sequence(facts: RunFacts) -> _Sequence:
    tokens, numbers = [], []
    for text in _texts(facts):
        more_tokens, more_numbers = _text_tokens(text, "text")
        tokens += more_tokens
        numbers += more_numbers
    return _Sequence(tokens, np.asarray(numbers, dtype=np.int64))


def _untext(tokens: list, numbers: list[int]) -> list[str]:
    """The texts back from their tokens (templates) and numbers."""
    texts, index = [], 0
    while index < len(tokens):
        _kind, template, place = tokens[index]
        count = template.count("#") if place >= 0 else 0
        values = iter(numbers[index : index + max(count, 1)])
        texts.append(re.sub("#", lambda _match: str(next(values)), template) if count else template)
        index += max(count, 1)
    return texts


def _answer(text: str, at: int) -> OracleAnswer:
    _, question, answer, phase, limits = text.split("\x00")
    return OracleAnswer(question, answer, phase, tuple(int(x) for x in limits.split(",") if x), at)


# -- aligning the template with a run at a larger batch ---------------------------------------------
@dataclass(frozen=True)
class _Insert:
    at: int  # template token index the block goes before
    chunk: list  # tokens of one chunk (one batch unit)


def _align(low: list, high: list, units: int, what: str) -> list[_Insert]:
    """The blocks ``high`` has that ``low`` lacks, each ``units`` alike chunks; raise when none fit.

    Where tokens stop matching, the shortest block that is ``units`` alike chunks and after which
    ``high`` continues as ``low`` does is taken; a choice that leaves the rest unmatched is undone."""
    inserts: list[_Insert] = []
    stack = [(0, 0, 0, units)]  # (i, j, inserts so far, next block length to try)
    while stack:
        i, j, count, length = stack.pop()
        del inserts[count:]
        while i < len(low) and j < len(high) and low[i] == high[j]:
            i, j = i + 1, j + 1
        if i == len(low) and j == len(high):
            return inserts
        spare = (len(high) - j) - (len(low) - i)
        while length <= spare:
            block_end = j + length
            resumes = high[block_end] == low[i] if i < len(low) else block_end == len(high)
            size = length // units
            if resumes and all(high[k] == high[k + size] for k in range(j, block_end - size)):
                stack.append((i, j, count, length + units))  # where to go on if this choice fails
                inserts.append(_Insert(i, high[j : j + size]))
                stack.append((i, block_end, count + 1, units))
                break
            length += units
        if len(stack) > 10_000:
            break
    where = f"token {i} ({_describe(low[i])})" if i < len(low) else "the end"
    raise NotDerivable(f"{what} differ at {where} in a way no repeated block explains")


def _describe(token) -> str:
    if token[0] is True:
        dtype, category, module, phase, iteration, real = token[1]
        return f"alloc {dtype} {category} {module or '-'} ({phase}, iteration {iteration}{', real' if real else ''})"
    if token[0] is False:
        dtype, category, module, phase, iteration = token[1]
        return f"free in {phase} of a {token[2][0]} {token[2][1]} storage"
    return f"{token[0]} {token[1:]!r}"[:120]


# -- the numbers ---------------------------------------------------------------------------------------
def _line(batch_a: int, at_a: np.ndarray, batch_b: int, at_b: np.ndarray, batch: int) -> np.ndarray | None:
    """Values at ``batch`` on the lines through (batch_a, at_a) and (batch_b, at_b); None where not whole."""
    rise = (at_b - at_a) * (batch - batch_a)
    span = batch_b - batch_a
    if (rise % span).any():
        return None
    return at_a + rise // span


@dataclass(frozen=True)
class _Layout:
    """Where a run's tokens come from: the template, or chunk j of an insert (per token)."""

    template_index: np.ndarray  # template token for template tokens, -1 inside chunks
    insert: np.ndarray  # insert number inside chunks, -1 otherwise
    chunk: np.ndarray  # chunk number j inside chunks
    offset: np.ndarray  # token index within the chunk


def _layout(template_length: int, inserts: list[_Insert], chunks: int) -> _Layout:
    parts_t, parts_i, parts_j, parts_o = [], [], [], []
    start = 0
    for number, insert in enumerate(inserts):
        parts_t.append(np.arange(start, insert.at))
        parts_i.append(np.full(insert.at - start, -1))
        parts_j.append(np.zeros(insert.at - start, dtype=np.int64))
        parts_o.append(np.zeros(insert.at - start, dtype=np.int64))
        size = len(insert.chunk)
        parts_t.append(np.full(size * chunks, -1))
        parts_i.append(np.full(size * chunks, number))
        parts_j.append(np.repeat(np.arange(chunks), size))
        parts_o.append(np.tile(np.arange(size), chunks))
        start = insert.at
    parts_t.append(np.arange(start, template_length))
    parts_i.append(np.full(template_length - start, -1))
    parts_j.append(np.zeros(template_length - start, dtype=np.int64))
    parts_o.append(np.zeros(template_length - start, dtype=np.int64))
    joined = [np.concatenate(p).astype(np.int64) for p in (parts_t, parts_i, parts_j, parts_o)]
    return _Layout(*joined)


@dataclass(frozen=True)
class _SequenceFamily:
    """One kind of sequence (events or texts) of a family: template, inserts, and the numbers' lines."""

    what: str
    low: int  # template batch
    tokens: list
    inserts: list[_Insert]
    # template numbers: lines through (low, at_low) and (high, at_high)
    high: int
    at_low: np.ndarray
    at_high: np.ndarray
    # chunk numbers per insert: value = base + step * j, each on a line through two traced batches
    chunk_lines: tuple  # per insert: (batch_a, base_a, step_a, batch_b, base_b, step_b)

    def position(self, index: int, batch: int) -> int:
        """Where template token ``index`` lands at ``batch`` (after the blocks inserted before it)."""
        return index + sum(len(x.chunk) * (batch - self.low) for x in self.inserts if x.at <= index)

    def at(self, batch: int) -> tuple[list, np.ndarray]:
        """Tokens and numbers at ``batch``."""
        chunks = batch - self.low
        if chunks < 0 and self.inserts:
            raise NotDerivable(f"{self.what} repeat a block per image: below the smallest traced batch ({self.low}) "
                               "they cannot be derived")  # fmt: skip
        template = _line(self.low, self.at_low, self.high, self.at_high, batch)
        if template is None:
            raise NotDerivable(f"at batch {batch} a line through batches {self.low} and {self.high} gives a "
                               f"{self.what} number that is not whole")  # fmt: skip
        tokens, numbers, start = [], [], 0
        for insert, lines in zip(self.inserts, self.chunk_lines):
            tokens += self.tokens[start : insert.at]
            numbers.append(template[start : insert.at])
            base = _line(lines[0], lines[1], lines[3], lines[4], batch)
            step = _line(lines[0], lines[2], lines[3], lines[5], batch)
            if base is None or step is None:
                raise NotDerivable(f"at batch {batch} the repeated block's {self.what} numbers are not whole")
            tokens += insert.chunk * chunks
            numbers.append((base[None, :] + step[None, :] * np.arange(chunks)[:, None]).reshape(-1))
            start = insert.at
        tokens += self.tokens[start:]
        numbers.append(template[start:])
        return tokens, np.concatenate(numbers) if numbers else np.zeros(0, dtype=np.int64)


def _chunk_values(sequence: _Sequence, layout: _Layout, number: int, chunks: int):
    """(base, step) of insert ``number``'s numbers in a run, value = base + step * j for chunk j; None
    when they do not step evenly."""
    values = sequence.numbers[layout.insert == number].reshape(chunks, -1)
    base = values[0]
    step = values[1] - values[0] if chunks > 1 else np.zeros_like(base)
    if not (values == base[None, :] + step[None, :] * np.arange(chunks)[:, None]).all():
        return None
    return base, step


def _rotations(insert: _Insert, template: list) -> list[_Insert]:
    """The same block placed earlier inside its run: k tokens before (k up to the run's start), its
    chunk rotated by k. Tokens alone cannot tell where a loop's repeats begin when what follows the loop
    looks like its body, or when a run of alike frees (a backward pass over images) grows."""
    found, size = [insert], len(insert.chunk)
    k = 1
    while insert.at - k >= 0 and template[insert.at - k] == insert.chunk[(size - k) % size]:
        turn = k % size
        found.append(_Insert(insert.at - k, insert.chunk[size - turn :] + insert.chunk[: size - turn]))
        k += 1
    return found


def _fit_sequences(what: str, sequences: dict[int, _Sequence]) -> _SequenceFamily:
    batches = sorted(sequences)
    low, high = batches[0], batches[-1]
    template = sequences[low]
    # the largest run has the most chunks per block, so its blocks are the least ambiguous
    inserts = _align(template.tokens, sequences[high].tokens, high - low, what)
    with_chunks = [b for b in batches[1:-1] if b - low >= 1]
    if inserts and not with_chunks:
        raise NotDerivable(f"{what} repeat a block per image: a line through its numbers needs runs at three batch sizes")
    other = with_chunks[-1] if with_chunks else None

    def layouts_for(candidate: list[_Insert]) -> dict[int, _Layout]:
        return {b: _layout(len(template.tokens), candidate, b - low) for b in batches[1:]}

    chunk_lines = []
    for number in range(len(inserts)):  # where a block's numbers step evenly, per image, is where it goes
        for placed in _rotations(inserts[number], template.tokens):
            candidate = inserts[:number] + [placed] + inserts[number + 1 :]
            layouts = layouts_for(candidate)
            high_values = _chunk_values(sequences[high], layouts[high], number, high - low)
            other_values = _chunk_values(sequences[other], layouts[other], number, other - low)
            if high_values is not None and other_values is not None:
                inserts = candidate
                (base_b, step_b), (base_a, step_a) = high_values, other_values
                if other - low == 1:  # one chunk shows no step: take the largest run's
                    step_a = step_b
                chunk_lines.append((other, base_a, step_a, high, base_b, step_b))
                break
        else:
            raise NotDerivable(f"{what}: the numbers of the block repeated at token {inserts[number].at} do not "
                               "step evenly per image")  # fmt: skip
    layouts = layouts_for(inserts)
    for batch in batches[1:]:
        layout = layouts[batch]
        expected = [template.tokens[t] if t >= 0 else inserts[n].chunk[o]
                    for t, n, o in zip(layout.template_index.tolist(), layout.insert.tolist(), layout.offset.tolist())]  # fmt: skip
        if expected != sequences[batch].tokens:
            raise NotDerivable(f"{what}: the blocks repeated at batch {high} do not make the run at batch {batch}")
    at_high = sequences[high].numbers[layouts[high].template_index >= 0]
    return _SequenceFamily(what, low, template.tokens, inserts, high, template.numbers, at_high, tuple(chunk_lines))


# -- families ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamFamily:
    """Traced runs of one configuration at several batches, checked to be one family."""

    batches: tuple[int, ...]  # traced
    template: RunFacts  # the run at the smallest traced batch
    _events: _SequenceFamily
    _texts: _SequenceFamily
    _first_id: int
    _bound_tokens: tuple[int, ...]  # the template's iteration bounds, as token indices
    _ddp_token: int | None  # the template's DDP point (``Trace.ddp_at``), as a token index

    @cyclic_gc_paused()  # one object per event (yolomem.collector)
    def run_at(self, batch: int) -> RunFacts:
        """The run at ``batch``, derived; raises NotDerivable where it cannot be."""
        event_tokens, event_numbers = self._events.at(batch)
        text_tokens, text_numbers = self._texts.at(batch)
        texts = _untext(text_tokens, text_numbers.tolist())
        events, answers, real_ids = self._rebuild_events(event_tokens, event_numbers.tolist())
        answers += [_answer(text, -1) for text in texts if text.startswith("oracle\x00")]
        for answer in answers:  # one that is one of its bounds must stay the least of them (the oracle takes the least)
            if answer.bounds and answer.answer.isdigit() and int(answer.answer) in answer.bounds \
                    and int(answer.answer) != min(answer.bounds):  # fmt: skip
                raise NotDerivable(f"at batch {batch} the oracle's answer to {answer.question} would be another of "
                                   f"its bounds {answer.bounds} than at the traced batches")  # fmt: skip
        template = self.template
        rest = iter(text for text in texts if not text.startswith("oracle\x00"))
        notes = tuple(next(rest).split("\x00", 1)[1] for _ in template.notes)
        failures = tuple(next(rest).split("\x00", 1)[1] for _ in template.probe_failures)
        _, params, imgsz, optimizer, cap = next(rest).split("\x00")
        cap_bytes = None if cap == "None" else int(cap)
        if cap_bytes is not None:
            rule = real_bytes_cap_for(batch)  # a training trace's cap: it stops growing at REAL_BYTES_MAX
            if template.trace.real_bytes_cap == real_bytes_cap_for(self.batches[0]) and cap_bytes != rule:
                raise NotDerivable(f"at batch {batch} the tracer's real-tensor cap is {rule} bytes, not the "
                                   f"{cap_bytes} on the traced batches' line")  # fmt: skip
            for e in events:
                if e.op == "alloc" and e.storage_id in real_ids and e.nbytes > real_cap_in(e.phase, cap_bytes):
                    raise NotDerivable(f"at batch {batch} a storage the tracer keeps real grows to {e.nbytes} bytes, "
                                       f"past its {real_cap_in(e.phase, cap_bytes)}-byte cap: the trace would keep it "
                                       "fake")  # fmt: skip
        # an iteration starts before the answers asked at its first event: at the template's token there
        positions = [self._events.position(token, batch) for token in (*self._bound_tokens, self._ddp_token)
                     if token is not None]  # fmt: skip
        marks = [sum(1 for t in event_tokens[:p] if t[0] is True or t[0] is False) for p in positions]  # events before
        bounds, ddp_at = marks[: len(self._bound_tokens)], (marks[-1] if self._ddp_token is not None else None)
        trace = Trace(events=events, oracle_answers=answers, iteration_bounds=bounds, real_ids=real_ids,
                      real_bytes_cap=cap_bytes, ddp_at=ddp_at, ddp_blocks=template.trace.ddp_blocks)  # fmt: skip
        return RunFacts(trace, int(params), int(imgsz), optimizer, notes, failures)

    def _rebuild_events(self, tokens: list, numbers: list[int]):
        """Events (allocations get sequential storage ids, as the tracer numbers them) and the oracle
        answers among them, each at its place in the stream."""
        events: list[AllocationEvent] = []
        answers: list[OracleAnswer] = []
        ids: list[int] = []  # storage id per allocation ordinal
        size: dict[int, int] = {}
        upper: dict[int, int] = {}
        real_ids = set()
        index = 0
        while index < len(tokens):
            token, number = tokens[index], numbers[index]
            if token[0] == "oracle":
                count = max(token[1].count("#") if token[2] >= 0 else 0, 1)
                text = _untext(tokens[index : index + count], numbers[index : index + count])[0]
                answers.append(_answer(text, len(events)))
                index += count
                continue
            if token[0] == "upper":  # the allocation just before it, under the upper figure's rule
                index += 1
                events[-1] = replace(events[-1], upper_nbytes=number)
                upper[events[-1].storage_id] = number
                continue
            index += 1
            dtype, category, module, phase, iteration = token[1][:5]
            if token[0]:
                storage = self._first_id + len(ids)
                ids.append(storage)
                size[storage] = number
                if token[1][5]:
                    real_ids.add(storage)
                events.append(AllocationEvent("alloc", storage, number, dtype, category, module, phase, iteration))
            else:
                ordinal = len(ids) - number
                storage = ids[ordinal] if 0 <= ordinal < len(ids) else None
                if storage not in size:
                    raise NotDerivable("a derived free points at no live allocation")
                events.append(AllocationEvent("free", storage, size.pop(storage), dtype, category, module, phase, iteration,
                                              upper.pop(storage, None)))  # fmt: skip
        return events, answers, frozenset(real_ids)


@cyclic_gc_paused()
def derive_family(runs: dict[int, RunFacts]) -> StreamFamily:
    """Check that ``runs`` (batch -> traced run, at least two batches) are one family.

    The smallest batch is the template; the largest sets the lines (and the repeated blocks); every
    other run is derived and must equal its trace. Raises NotDerivable, saying where, otherwise."""
    if len(runs) < 2:
        raise NotDerivable("a line needs runs at two batch sizes")
    batches = sorted(runs)
    low = batches[0]
    events = _fit_sequences("events", {b: _event_sequence(runs[b].trace) for b in batches})
    texts = _fit_sequences("notes and oracle answers", {b: _text_sequence(runs[b]) for b in batches})
    first = next((e.storage_id for e in runs[low].trace.events if e.op == "alloc"), 1)
    template = runs[low].trace
    token_of = _event_tokens(template)
    bound_tokens = tuple(token_of[b] for b in template.iteration_bounds)
    ddp_token = None if template.ddp_at is None else token_of[template.ddp_at]
    family = StreamFamily(tuple(batches), runs[low], events, texts, first, bound_tokens, ddp_token)
    for batch in batches[1:]:
        mismatch = compare_runs(family.run_at(batch), runs[batch])
        if mismatch:
            raise NotDerivable(f"derived at batch {batch}, the run differs from its trace: {mismatch}")
    return family


def _event_tokens(trace: Trace) -> list[int]:
    """Per event index (and one past the last), the token where that event starts in ``_event_sequence``:
    after the tokens of the events before it (an upper-figure size is one more) and of the oracle answers
    asked before it; the answers asked at it come after, so an iteration bound goes before them."""
    asked: dict[int, int] = {}
    if _inline(trace):
        for answer in trace.oracle_answers:
            asked[answer.at] = asked.get(answer.at, 0) + len(_text_tokens(_answer_text(answer), "oracle")[0])
    starts, token = [], 0
    for index, event in enumerate(trace.events):
        starts.append(token)
        token += asked.get(index, 0) + 1 + (event.op == "alloc" and event.upper_nbytes is not None)
    starts.append(token)
    return starts


def compare_runs(derived: RunFacts, traced: RunFacts) -> str | None:
    """None when two runs are the same, event for event; else the first difference, in words."""
    a, b = derived.trace, traced.trace
    if len(a.events) != len(b.events):
        return f"{len(a.events)} events vs {len(b.events)}"
    for index, (x, y) in enumerate(zip(a.events, b.events)):
        if x != y:
            return f"event {index}: {x} vs {y}"
    for name in ("oracle_answers", "iteration_bounds", "real_ids", "real_bytes_cap", "ddp_at", "ddp_blocks"):
        if getattr(a, name) != getattr(b, name):
            return f"{name}: {getattr(a, name)!r:.200} vs {getattr(b, name)!r:.200}"
    for name in ("params", "imgsz", "optimizer", "notes", "probe_failures"):
        if getattr(derived, name) != getattr(traced, name):
            return f"{name}: {getattr(derived, name)!r} vs {getattr(traced, name)!r}"
    return None
