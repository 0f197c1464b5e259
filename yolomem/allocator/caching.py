"""Pure-Python simulator of PyTorch's CUDA caching allocator ("native" backend).

It replays malloc/free events and reports the numbers that
``torch.cuda.memory_allocated()``, ``memory_reserved()`` and their ``max_*`` twins
would report. The rules follow ``c10/cuda/CUDACachingAllocator.cpp``, one function
at a time. The paraphrase we work from is
shared/reference/cuda_caching_allocator_rules.md, and the section numbers below
("rules §N") point into it.

What is modelled:
- ``round_size``, including ``roundup_power2_divisions``.
- The small pool (rounded size <= 1 MiB) and the large pool, and
  ``get_allocation_size``.
- Best-fit search ordered by (stream, size, address), the oversize rules of
  ``max_split_size_mb`` and ``max_non_split_rounding_mb``, ``should_split``, and
  merging with neighbours on free.
- The cache-miss path: GC, ``alloc_block``, ``release_available_cached_blocks``,
  ``release_cached_blocks`` and retry, then OOM.
- Expandable segments: page mapping on growth, and unmapping of whole free pages
  on ``empty_cache`` and on the OOM path.
- Blocks are kept per stream, so a block is never reused across streams.

What is not modelled:
- ``record_stream`` and cross-stream frees. Every free is immediate, because no
  event is ever pending.
- CUDA graphs and private memory pools (``use_mem_pool``).
- The ``cudaMallocAsync`` backend, and IPC free-memory callbacks.
- Where cudaMalloc really places a segment. Addresses only break ties between
  equal-size free blocks (best fit takes the lowest address) and decide which
  blocks are neighbours. New segments get deterministic addresses in the order the
  H200's driver gave them (``_new_range``): large-pool segments each below the last,
  small-pool segments each above the last.
- When cudaMalloc really fails. ``capacity_bytes`` stands in for "card total minus
  context and other processes", and is checked against reserved bytes only.
- cudaMalloc's own 2 MiB granularity, and the address-space limit of an
  expandable segment (about 1.125 x device memory).

``garbage_collection_threshold`` acts only when a per-process memory fraction has
been set (``fraction_limit_bytes``), as in torch. Ultralytics never sets a fraction.
"""

from __future__ import annotations

from bisect import bisect_left, insort
import difflib
from dataclasses import dataclass
from operator import attrgetter

__all__ = [
    "AllocConfError",
    "AllocatorConfig",
    "AllocatorStats",
    "CachingAllocator",
    "SimulatedOOM",
    "allocation_size",
    "parse_alloc_conf",
    "round_size",
]

MiB = 1 << 20

# Constants: top of c10/cuda/CUDACachingAllocator.cpp (2.4); newer releases keep them
# in c10/core/AllocatorConfig.h. Rules §0.
K_MIN_BLOCK_SIZE = 512  # kMinBlockSize: rounding unit, and the smallest split remainder
K_SMALL_SIZE = 1 * MiB  # kSmallSize: largest rounded request that goes to the small pool
K_SMALL_BUFFER = 2 * MiB  # kSmallBuffer: small-pool segment, and the small expandable page
K_MIN_LARGE_ALLOC = 10 * MiB  # kMinLargeAlloc: below this, a large_segment_size segment
K_LARGE_BUFFER = 20 * MiB  # kLargeBuffer: default large_segment_size and max_non_split_rounding
K_ROUND_LARGE = 2 * MiB  # kRoundLarge: segments of 10 MiB or more are rounded to this

# kRoundUpPowerOfTwoIntervals, CUDAAllocatorConfig / AcceleratorAllocatorConfig: one
# interval per power of two from 1 MiB up to 64 GiB.
ROUNDUP_INTERVALS = 16
_ROUNDUP_FIRST_LOG2 = 20  # the intervals start at 1 MiB (2**20)

# The default max_split_size is SIZE_MAX (AcceleratorAllocatorConfig::max_split_size_).
_SIZE_MAX = (1 << 64) - 1

# Smallest max_split_size_mb and max_non_split_rounding_mb that parseMaxSplitSize and
# parseMaxNonSplitRoundingSize accept: kLargeBuffer / 1 MiB. Newer parsers accept >=;
# 2.4 required >.
_MIN_SPLIT_SIZE_MB = K_LARGE_BUFFER // MiB

# Simulated addresses. A cudaMalloc segment takes the next free range, aligned like
# cudaMalloc's 2 MiB granularity. An expandable segment reserves a huge virtual range
# (ExpandableSegment reserves about 1.125 x device memory; we never run out).
_ADDRESS_ALIGN = 2 * MiB
_HIGH_ADDRESS = 1 << 62  # large-pool segments count down from here, small-pool ones up from _ADDRESS_ALIGN
_EXPANDABLE_VA_PAGES = 1 << 22


@dataclass(frozen=True)
class AllocatorConfig:
    """What PYTORCH_CUDA_ALLOC_CONF sets. All sizes are in bytes."""

    max_split_size: int | None = None  # None means unlimited (SIZE_MAX)
    expandable_segments: bool = False
    roundup_power2_divisions: tuple[int, ...] = (0,) * ROUNDUP_INTERVALS  # rules §1
    garbage_collection_threshold: float = 0.0
    max_non_split_rounding: int = K_LARGE_BUFFER  # max_non_split_rounding_mb
    large_segment_size: int = K_LARGE_BUFFER  # large_segment_size_mb (kLargeBuffer before)

    def __post_init__(self) -> None:
        if len(self.roundup_power2_divisions) != ROUNDUP_INTERVALS:
            raise ValueError(
                f"roundup_power2_divisions needs {ROUNDUP_INTERVALS} entries, "
                f"got {len(self.roundup_power2_divisions)}"
            )


class AllocConfError(ValueError):
    """A PYTORCH_CUDA_ALLOC_CONF string that we cannot parse or do not simulate."""


class SimulatedOOM(Exception):
    """The simulated allocator could not find or create a block (``OutOfMemoryError``)."""

    def __init__(
        self,
        requested_bytes: int,
        segment_bytes: int,
        allocated_bytes: int,
        reserved_bytes: int,
        capacity_bytes: int | None,
    ) -> None:
        self.requested_bytes = requested_bytes
        # torch's message reports the segment size it tried to get ("Tried to allocate").
        self.segment_bytes = segment_bytes
        self.allocated_bytes = allocated_bytes
        self.reserved_bytes = reserved_bytes
        self.capacity_bytes = capacity_bytes
        cap = "unlimited" if capacity_bytes is None else f"{capacity_bytes / MiB:.2f} MiB"
        super().__init__(
            f"simulated CUDA OOM: tried to allocate {segment_bytes / MiB:.2f} MiB "
            f"(request {requested_bytes} B) with {allocated_bytes / MiB:.2f} MiB allocated, "
            f"{reserved_bytes / MiB:.2f} MiB reserved, capacity {cap}"
        )


@dataclass(frozen=True)
class AllocatorStats:
    """The "all" column of ``torch.cuda.memory_stats()`` (current values, unless marked peak)."""

    allocated_bytes: int
    reserved_bytes: int
    active_bytes: int
    requested_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    num_segments: int  # cudaMalloc segments only; expandable pages do not count (rules §9)
    num_alloc_retries: int
    num_ooms: int
    num_device_alloc: int  # cudaMalloc and map calls
    num_device_free: int  # cudaFree and unmap calls
    inactive_split_bytes: int  # free bytes in split, non-expandable segments


# --------------------------------------------------------------------------- parsing

_BOOL_TEXT = {"True": True, "False": False}  # ConfigTokenizer::toBool takes these two only

# Keys that change what the device allocator does, and that we simulate.
_SIMULATED_KEYS = (
    "backend",
    "expandable_segments",
    "garbage_collection_threshold",
    "large_segment_size_mb",
    "max_non_split_rounding_mb",
    "max_split_size_mb",
    "roundup_power2_divisions",
)
# Keys torch accepts that do not change device-memory numbers in our model: the pinned
# host allocator, lock handling, and graph-capture reuse (graphs are not modelled).
_IGNORED_BOOL_KEYS = (
    "graph_capture_record_stream_reuse",
    "pinned_free_catch_all",
    "pinned_use_background_threads",
    "pinned_use_cuda_host_register",
    "release_lock_on_cudamalloc",
)
_IGNORED_INT_KEYS = ("pinned_num_register_threads", "pinned_reserve_segment_size_mb")
# Keys torch accepts whose effect we do not simulate, with what to do instead.
_UNSIMULATED_KEYS = {
    "per_process_memory_fraction": "pass fraction_limit_bytes to CachingAllocator instead",
    "throw_on_cudamalloc_oom": "remove it; torch's early OOM rejection is not modelled",
}
_VALID_KEYS = tuple(
    sorted(_SIMULATED_KEYS + _IGNORED_BOOL_KEYS + _IGNORED_INT_KEYS + tuple(_UNSIMULATED_KEYS))
)


def _tokenize(text: str) -> list[str]:
    """Split like c10's ConfigTokenizer: ',', ':', '[' and ']' are tokens; spaces vanish."""
    tokens: list[str] = []
    buf = ""
    for ch in text:
        if ch in ",:[]":
            if buf:
                tokens.append(buf)
                buf = ""
            tokens.append(ch)
        elif not ch.isspace():
            buf += ch
    if buf:
        tokens.append(buf)
    return tokens


def _conf_error(text: str, message: str) -> AllocConfError:
    return AllocConfError(f"PYTORCH_CUDA_ALLOC_CONF={text!r}: {message}")


def _unknown_key_error(text: str, key: str) -> AllocConfError:
    near = difflib.get_close_matches(key, _VALID_KEYS, n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return _conf_error(
        text, f"unknown key '{key}'.{hint} Valid keys: {', '.join(_VALID_KEYS)}"
    )


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _parse_uint(text: str, key: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise _conf_error(text, f"{key} needs a non-negative integer, got '{value}'")
    return int(value)


def _parse_divisions_list(text: str, items: list[str]) -> tuple[int, ...]:
    """``[64:8,256:4,>:1]``, keyed in MB (parseRoundUpPower2Divisions, newer parser)."""
    divisions = [0] * ROUNDUP_INTERVALS
    first = True
    last_index = 0
    groups: list[list[str]] = [[]]
    for token in items:
        if token == ",":
            groups.append([])
        else:
            groups[-1].append(token)
    for group in groups:
        if len(group) != 3 or group[1] != ":":
            raise _conf_error(
                text, f"roundup_power2_divisions entry '{''.join(group)}' is not 'MB:N' or '>:N'"
            )
        boundary, _, value_text = group
        value = _parse_uint(text, "roundup_power2_divisions", value_text)
        if value != 0 and not _is_pow2(value):
            raise _conf_error(
                text, f"roundup_power2_divisions value {value} must be a power of 2 (or 0)"
            )
        if boundary == ">":
            # The newer parser fills from the slot after the last listed one; 2.4 started
            # at the last listed slot itself.
            for i in range(last_index + 1, ROUNDUP_INTERVALS):
                divisions[i] = value
            continue
        mb = _parse_uint(text, "roundup_power2_divisions", boundary)
        if not _is_pow2(mb):
            raise _conf_error(
                text, f"roundup_power2_divisions interval {mb} MB must be a power of 2"
            )
        index = min(mb.bit_length() - 1, ROUNDUP_INTERVALS - 1)
        if first:
            # The first entry also covers every smaller interval; later gaps keep 0.
            for i in range(index):
                divisions[i] = value
            first = False
        divisions[index] = value
        last_index = index
    return tuple(divisions)


def parse_alloc_conf(text: str | None) -> AllocatorConfig:
    """Parse a PYTORCH_CUDA_ALLOC_CONF string. None or "" give the default config.

    Raises AllocConfError (a ValueError) with a one-line message for an unknown key, a
    bad value, or an option that we do not simulate.
    """
    if not text or not text.strip():
        return AllocatorConfig()
    tokens = _tokenize(text)
    fields: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        key = tokens[i]
        if key in ",:[]":
            raise _conf_error(text, f"expected a key at '{key}'")
        if key not in _VALID_KEYS:
            raise _unknown_key_error(text, key)
        if i + 1 >= len(tokens) or tokens[i + 1] != ":":
            raise _conf_error(text, f"missing ':' after '{key}', write '{key}:VALUE'")
        if i + 2 >= len(tokens) or tokens[i + 2] in ",:]":
            raise _conf_error(text, f"missing value for '{key}', write '{key}:VALUE'")
        value = tokens[i + 2]
        i += 3
        if value == "[":
            if "]" not in tokens[i:]:
                raise _conf_error(text, f"'{key}' list has no closing ']'")
            end = tokens.index("]", i)
            items = tokens[i:end]
            i = end + 1
            if key != "roundup_power2_divisions":
                raise _conf_error(text, f"'{key}' does not take a list")
            fields["roundup_power2_divisions"] = _parse_divisions_list(text, items)
        else:
            _apply_scalar(text, key, value, fields)
        if i < len(tokens):
            if tokens[i] != ",":
                raise _conf_error(text, f"expected ',' after the value of '{key}'")
            i += 1
    return AllocatorConfig(**fields)  # type: ignore[arg-type]


def _apply_scalar(text: str, key: str, value: str, fields: dict[str, object]) -> None:
    if key == "backend":
        if value == "cudaMallocAsync":
            raise _conf_error(
                text, "backend:cudaMallocAsync is not simulated; only backend:native is"
            )
        if value != "native":
            raise _conf_error(
                text, f"backend must be 'native' or 'cudaMallocAsync', got '{value}'"
            )
    elif key in _UNSIMULATED_KEYS:
        raise _conf_error(text, f"'{key}' is not simulated; {_UNSIMULATED_KEYS[key]}")
    elif key == "expandable_segments" or key in _IGNORED_BOOL_KEYS:
        if value not in _BOOL_TEXT:
            raise _conf_error(text, f"{key} must be 'True' or 'False', got '{value}'")
        if key == "expandable_segments":
            fields[key] = _BOOL_TEXT[value]
    elif key in _IGNORED_INT_KEYS:
        _parse_uint(text, key, value)
    elif key in ("max_split_size_mb", "max_non_split_rounding_mb"):
        mb = _parse_uint(text, key, value)
        if mb < _MIN_SPLIT_SIZE_MB:
            raise _conf_error(text, f"{key} must be >= {_MIN_SPLIT_SIZE_MB}, got {mb}")
        name = "max_split_size" if key == "max_split_size_mb" else "max_non_split_rounding"
        fields[name] = mb * MiB
    elif key == "large_segment_size_mb":
        mb = _parse_uint(text, key, value)
        if mb == 0:
            raise _conf_error(text, f"{key} must be > 0, got 0")
        fields["large_segment_size"] = mb * MiB
    elif key == "garbage_collection_threshold":
        try:
            threshold = float(value)
        except ValueError:
            threshold = -1.0
        # parseGarbageCollectionThreshold: strictly between 0 and 1.
        if not 0.0 < threshold < 1.0:
            raise _conf_error(text, f"{key} must be between 0.0 and 1.0 (exclusive), got '{value}'")
        fields[key] = threshold
    elif key == "roundup_power2_divisions":
        divisions = _parse_uint(text, key, value)
        if not _is_pow2(divisions):
            raise _conf_error(text, f"{key} must be a power of 2, got {divisions}")
        fields[key] = (divisions,) * ROUNDUP_INTERVALS


# --------------------------------------------------------------------------- sizes


def _roundup_power2_next_division(size: int, divisions: int) -> int:
    """roundup_power2_next_division: round up to one of ``divisions`` steps per power of two."""
    if _is_pow2(size):
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor // divisions
    if step == 0:
        return floor << 1
    return -(-size // step) * step


def round_size(size: int, config: AllocatorConfig = AllocatorConfig()) -> int:
    """DeviceCachingAllocator::round_size (rules §1)."""
    if size < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    index = min(max(size.bit_length() - 1 - _ROUNDUP_FIRST_LOG2, 0), ROUNDUP_INTERVALS - 1)
    divisions = config.roundup_power2_divisions[index]
    # Only sizes above 512 x divisions use the division rounding, so its step is >= 512.
    if divisions > 1 and size > K_MIN_BLOCK_SIZE * divisions:
        return _roundup_power2_next_division(size, divisions)
    return -(-size // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def allocation_size(rounded: int, config: AllocatorConfig = AllocatorConfig()) -> int:
    """get_allocation_size: the segment that a cache miss asks cudaMalloc for (rules §3)."""
    if rounded <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if rounded < K_MIN_LARGE_ALLOC:
        return config.large_segment_size
    return -(-rounded // K_ROUND_LARGE) * K_ROUND_LARGE


# --------------------------------------------------------------------------- allocator


class _Block:
    """One Block of CUDACachingAllocator.cpp: a piece of a segment, linked to its neighbours."""

    __slots__ = (
        "addr", "size", "stream", "small", "allocated", "mapped", "expandable",
        "seg_base", "prev", "next", "requested", "gc_base",
    )

    def __init__(
        self, addr: int, size: int, stream: int, small: bool,
        expandable: bool, seg_base: int, mapped: bool = True,
    ) -> None:
        self.addr = addr
        self.size = size
        self.stream = stream
        self.small = small
        self.allocated = False
        self.mapped = mapped
        self.expandable = expandable
        self.seg_base = seg_base
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.requested = 0
        self.gc_base = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None


class _Pool:
    """BlockPool: free mapped blocks ordered by (stream, size, addr), unmapped by (stream, addr)."""

    __slots__ = ("small", "free", "unmapped", "gc_calls")

    def __init__(self, small: bool) -> None:
        self.small = small
        self.free: list[tuple[int, int, int]] = []
        self.unmapped: list[tuple[int, int]] = []
        self.gc_calls = 0  # get_free_blocks_call_count


class CachingAllocator:
    """DeviceCachingAllocator for one device.

    ``capacity_bytes`` is the device memory that cudaMalloc (or a page map) may use,
    for example the card total minus the CUDA context. None means unlimited. A
    cudaMalloc that would push reserved bytes above it fails, and the free-and-retry
    path runs (rules §7).

    ``fraction_limit_bytes`` is torch's ``allowed_memory_maximum`` after
    ``torch.cuda.set_per_process_memory_fraction`` (fraction x total device memory).
    None means no fraction is set. When set, it caps reserved bytes before any
    cudaMalloc, and it turns on ``garbage_collection_threshold``.
    """

    def __init__(
        self,
        config: AllocatorConfig = AllocatorConfig(),
        capacity_bytes: int | None = None,
        *,
        fraction_limit_bytes: int | None = None,
        large_segments_descending: bool = True,
    ) -> None:
        """``large_segments_descending``: new large-pool segments below the earlier ones, as the H200's
        driver placed them (``_new_range``); False: above them, the order another driver may take."""
        self._config = config
        self._large_descending = large_segments_descending
        self._capacity = capacity_bytes
        self._limit = fraction_limit_bytes
        self._max_split = _SIZE_MAX if config.max_split_size is None else config.max_split_size
        self._gc_on = fraction_limit_bytes is not None and config.garbage_collection_threshold > 0
        self._large = _Pool(small=False)
        self._small = _Pool(small=True)
        self._blocks: dict[int, _Block] = {}  # every block, free or not, by address
        self._next_addr = _ADDRESS_ALIGN  # nonzero, so (stream, size, -1) sorts first
        self._next_high_addr = _HIGH_ADDRESS
        self._allocated = 0
        self._reserved = 0
        self._active = 0
        self._requested = 0
        self._peak_allocated = 0
        self._peak_reserved = 0
        self._segments = 0
        self._retries = 0
        self._ooms = 0
        self._device_alloc = 0
        self._device_free = 0
        self._inactive_split = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # request -> (rounded, segment): replays repeat sizes

    # ---- public API

    @property
    def allocated_bytes(self) -> int:
        return self._allocated

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    def malloc(self, nbytes: int, stream: int = 0) -> int | None:
        """DeviceCachingAllocator::malloc. Returns a handle, the block's simulated address.

        A zero-byte request returns None and changes nothing, as torch returns a null
        pointer (rules §11). Raises SimulatedOOM when the miss path fails.
        """
        sizes = self._sizes.get(nbytes)
        if sizes is None:
            if nbytes < 0:
                raise ValueError(f"cannot allocate a negative size ({nbytes} bytes)")
            if nbytes == 0:
                return None
            rounded = round_size(nbytes, self._config)
            sizes = self._sizes[nbytes] = (rounded, allocation_size(rounded, self._config))
        rounded, alloc_size = sizes
        pool = self._small if rounded <= K_SMALL_SIZE else self._large
        block = self._get_free_block(pool, stream, rounded)
        if block is None:
            if self._gc_on:
                self._garbage_collect_cached_blocks()
            block = self._alloc_block(pool, stream, rounded, alloc_size, retry=False)
            if block is None and self._release_available_cached_blocks(pool, stream, rounded):
                block = self._alloc_block(pool, stream, rounded, alloc_size, retry=False)
            if block is None:
                self._release_cached_blocks()
                block = self._alloc_block(pool, stream, rounded, alloc_size, retry=True)
            if block is None:
                self._ooms += 1
                raise SimulatedOOM(
                    nbytes, alloc_size, self._allocated, self._reserved, self._capacity
                )
        split = self._should_split(block, rounded)
        return self._alloc_found_block(pool, block, rounded, nbytes, split)

    def free(self, handle: int) -> None:
        """DeviceCachingAllocator::free. Allocated bytes drop at once, and reserved is unchanged."""
        block = self._blocks.get(handle)
        if block is None or not block.allocated or block.addr != handle:
            raise ValueError(f"handle {handle} is not a live allocation")
        block.allocated = False
        self._allocated -= block.size
        self._free_block(block)

    def empty_cache(self) -> None:
        """torch.cuda.empty_cache(): release_cached_blocks."""
        self._release_cached_blocks()

    def reset_peak_stats(self) -> None:
        self._peak_allocated = self._allocated
        self._peak_reserved = self._reserved

    # ---- whole state (yolomem.allocator.replay's memo of repeated iterations)

    _STATE_COUNTERS = ("_next_addr", "_next_high_addr", "_allocated", "_reserved", "_active", "_requested", "_segments", "_inactive_split")
    CUMULATIVE_COUNTERS = ("_retries", "_ooms", "_device_alloc", "_device_free")

    def snapshot(self) -> tuple:
        """Everything the allocator's next steps depend on, as one hashable value: equal snapshots with
        equal capacity and config behave alike from here on. Peaks and the cumulative counters
        (``CUMULATIVE_COUNTERS``) are not in it, nor the blocks' GC ages unless garbage collection is on
        (they count every search, so they would tell apart states that behave alike)."""
        gc = self._gc_on
        blocks = tuple(
            (b.addr, b.size, b.stream, b.small, b.allocated, b.mapped, b.expandable, b.seg_base,
             None if b.prev is None else b.prev.addr, None if b.next is None else b.next.addr, b.requested,
             b.gc_base if gc else 0)
            for b in sorted(self._blocks.values(), key=attrgetter("addr"))  # nothing walks the dict: its order is not state
        )  # fmt: skip
        pools = tuple((tuple(p.free), tuple(p.unmapped), p.gc_calls if gc else 0) for p in (self._large, self._small))
        return blocks, pools, tuple(getattr(self, name) for name in self._STATE_COUNTERS)

    @staticmethod
    def change_between(before: tuple, after: tuple) -> tuple:
        """What turns the state of snapshot ``before`` into that of ``after`` (``apply_change``): the blocks
        to drop, the blocks to make, and the pools and counters of ``after``. An iteration that ends as it
        began changes few blocks."""
        old, new = set(before[0]), set(after[0])
        removed = tuple(block[0] for block in before[0] if block not in new)
        added = tuple(block for block in after[0] if block not in old)
        return removed, added, after[1], after[2]

    def apply_change(self, change: tuple) -> None:
        """From the state of a snapshot to a later one (``change_between``); peaks and cumulative counters
        stay as they are."""
        removed, added, pools, counters = change
        blocks = self._blocks
        for addr in removed:
            del blocks[addr]
        made = []
        for addr, size, stream, small, allocated, mapped, expandable, seg_base, _, _, requested, gc_base in added:
            block = _Block(addr, size, stream, small, expandable, seg_base, mapped)
            block.allocated, block.requested, block.gc_base = allocated, requested, gc_base
            blocks[addr] = block
            made.append(block)
        for block, (*_, prev, nxt, _, _) in zip(made, added):  # link both ways: neighbours may be kept blocks
            block.prev = None if prev is None else blocks[prev]
            block.next = None if nxt is None else blocks[nxt]
            if block.prev is not None:
                block.prev.next = block
            if block.next is not None:
                block.next.prev = block
        for pool, (free, unmapped, gc_calls) in zip((self._large, self._small), pools):
            pool.free, pool.unmapped = list(free), list(unmapped)
            if self._gc_on:
                pool.gc_calls = gc_calls
        for name, value in zip(self._STATE_COUNTERS, counters):
            setattr(self, name, value)

    def block_size(self, handle: int) -> int:
        """Bytes counted as allocated for this handle (the whole block when unsplit)."""
        block = self._blocks.get(handle)
        if block is None or not block.allocated:
            raise ValueError(f"handle {handle} is not a live allocation")
        return block.size

    def stats(self) -> AllocatorStats:
        return AllocatorStats(
            allocated_bytes=self._allocated,
            reserved_bytes=self._reserved,
            active_bytes=self._active,
            requested_bytes=self._requested,
            peak_allocated_bytes=self._peak_allocated,
            peak_reserved_bytes=self._peak_reserved,
            num_segments=self._segments,
            num_alloc_retries=self._retries,
            num_ooms=self._ooms,
            num_device_alloc=self._device_alloc,
            num_device_free=self._device_free,
            inactive_split_bytes=self._inactive_split,
        )

    # ---- sorted-set helpers (std::set in C++; bisect on sorted lists here)

    def _insert_free(self, pool: _Pool, block: _Block) -> None:
        insort(pool.free, (block.stream, block.size, block.addr))
        block.gc_base = pool.gc_calls  # insert_into_blocks restarts the block's GC age

    def _remove_free(self, pool: _Pool, block: _Block) -> None:
        i = bisect_left(pool.free, (block.stream, block.size, block.addr))
        del pool.free[i]

    def _insert_unmapped(self, pool: _Pool, block: _Block) -> None:
        insort(pool.unmapped, (block.stream, block.addr))

    def _remove_unmapped(self, pool: _Pool, block: _Block) -> None:
        i = bisect_left(pool.unmapped, (block.stream, block.addr))
        del pool.unmapped[i]

    def _new_range(self, size: int, descending: bool = False) -> int:
        """Where a new segment starts: past the last one, or (``descending``) below the last one.

        Why both: best fit breaks ties between equal-size free blocks by address, so the order of the
        segments' addresses decides which of two equal blocks a request reuses, and from there which
        later requests still find a block. The H200's driver (validation/results/h200-2026-12-04, 16
        allocation histories) placed new large-pool segments below the earlier ones and 2 MiB
        small-pool segments above. Replayed with the GPU's own segment addresses, all 62,803 of the
        histories' allocations land at the GPU's addresses; with this order every history ends with
        the GPU's reserved bytes (tests/test_gpu_history.py). With increasing addresses for both
        pools, 5 of the 16 ended between -34 and +200 MiB off."""
        span = -(-size // _ADDRESS_ALIGN) * _ADDRESS_ALIGN + _ADDRESS_ALIGN
        if descending:
            self._next_high_addr -= span
            return self._next_high_addr
        base = self._next_addr
        self._next_addr += span
        return base

    def _fits(self, nbytes: int) -> bool:
        return self._capacity is None or self._reserved + nbytes <= self._capacity

    def _page(self, pool: _Pool) -> int:
        # Expandable page ("segment_size"): kSmallBuffer, or large_segment_size (rules §9).
        return K_SMALL_BUFFER if pool.small else self._config.large_segment_size

    def _add_reserved(self, nbytes: int) -> None:
        self._reserved += nbytes
        self._peak_reserved = max(self._peak_reserved, self._reserved)
        self._device_alloc += 1

    # ---- search and split

    def _get_free_block(self, pool: _Pool, stream: int, rounded: int) -> _Block | None:
        """get_free_block: best fit, then the oversize rules on that one candidate (rules §4)."""
        if self._gc_on:
            pool.gc_calls += 1
        free = pool.free
        i = bisect_left(free, (stream, rounded, -1))
        if i == len(free) or free[i][0] != stream:
            return None
        block = self._blocks[free[i][2]]
        if block.expandable:
            # Judge a block by the size it could grow to, so that an interior free block
            # wins over the growable tail.
            grow = self._expandable_size(block)
            while i + 1 < len(free) and free[i + 1][0] == stream:
                nxt = self._blocks[free[i + 1][2]]
                nxt_grow = self._expandable_size(nxt)
                if nxt_grow >= grow:
                    break
                i, block, grow = i + 1, nxt, nxt_grow
        if rounded < self._max_split and block.size >= self._max_split:
            return None  # no oversize block for a small request
        too_big = rounded + self._config.max_non_split_rounding
        if rounded >= self._max_split and block.size >= too_big:
            return None  # no much-too-big oversize block for a large request
        del free[i]
        return block

    @staticmethod
    def _expandable_size(block: _Block) -> int:
        nxt = block.next
        return block.size + (nxt.size if nxt is not None and not nxt.mapped else 0)

    def _should_split(self, block: _Block, rounded: int) -> bool:
        """should_split (rules §5). The expandable test reads the global flag."""
        remaining = block.size - rounded
        if block.small or self._config.expandable_segments:
            return remaining >= K_MIN_BLOCK_SIZE
        return rounded < self._max_split and remaining > K_SMALL_SIZE

    def _alloc_found_block(
        self, pool: _Pool, block: _Block, rounded: int, nbytes: int, split: bool
    ) -> int:
        """alloc_found_block: hand out the front, keep the remainder free (rules §5)."""
        already_split = block.prev is not None or block.next is not None
        if split:
            rest = _Block(
                block.addr + rounded, block.size - rounded, block.stream, block.small,
                block.expandable, block.seg_base,
            )
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = rounded
            self._blocks[rest.addr] = rest
            self._insert_free(pool, rest)
            if not block.expandable:
                # An already split free block shrinks by what we hand out; a fresh
                # split creates a free remainder.
                self._inactive_split += -rounded if already_split else rest.size
        elif already_split and not block.expandable:
            self._inactive_split -= block.size
        block.allocated = True
        block.requested = nbytes
        self._allocated += block.size
        if self._allocated > self._peak_allocated:
            self._peak_allocated = self._allocated
        self._active += block.size
        self._requested += nbytes
        return block.addr

    # ---- free and merge

    def _free_block(self, block: _Block) -> None:
        """free_block: merge with prev, then next, and return to the pool (rules §6)."""
        pool = self._small if block.small else self._large
        size_before = block.size
        split_delta = 0
        if block.prev is not None:
            split_delta -= self._try_merge_blocks(pool, block, block.prev)
        if block.next is not None:
            split_delta -= self._try_merge_blocks(pool, block, block.next)
        self._insert_free(pool, block)
        if block.prev is not None or block.next is not None:  # still split
            split_delta += block.size
        if not block.expandable:
            self._inactive_split += split_delta
        self._active -= size_before
        self._requested -= block.requested
        block.requested = 0

    def _try_merge_blocks(self, pool: _Pool, dst: _Block, src: _Block | None) -> int:
        """try_merge_blocks: absorb a free neighbour with the same mapped state into dst.

        dst must not be in a sorted set, because its key changes.
        """
        if src is None or src.allocated or src.mapped != dst.mapped:
            return 0
        if src.mapped:
            self._remove_free(pool, src)
        else:
            self._remove_unmapped(pool, src)
        del self._blocks[src.addr]
        if dst.prev is src:  # [src dst]
            del self._blocks[dst.addr]
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
            self._blocks[dst.addr] = dst
        else:  # [dst src]
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size
        return src.size

    # ---- the miss path

    def _alloc_block(
        self, pool: _Pool, stream: int, rounded: int, alloc_size: int, retry: bool
    ) -> _Block | None:
        """alloc_block: one cudaMalloc of alloc_size, or growth of an expandable segment."""
        if retry:
            self._retries += 1
        # The fraction cap uses get_allocation_size even for expandable segments.
        if self._limit is not None and self._reserved + alloc_size > self._limit:
            return None
        if self._config.expandable_segments:
            return self._try_allocate_expandable_block(pool, stream, rounded)
        if not self._fits(alloc_size):
            return None
        base = self._new_range(alloc_size, descending=not pool.small and self._large_descending)
        block = _Block(base, alloc_size, stream, pool.small, expandable=False, seg_base=base)
        self._blocks[base] = block
        self._segments += 1
        self._add_reserved(alloc_size)
        return block  # not in the free set; alloc_found_block inserts any remainder

    def _release_block(self, pool: _Pool, block: _Block) -> None:
        """release_block: cudaFree of a whole free segment."""
        self._remove_free(pool, block)
        del self._blocks[block.addr]
        self._reserved -= block.size
        self._segments -= 1
        self._device_free += 1

    def _release_available_cached_blocks(self, pool: _Pool, stream: int, rounded: int) -> bool:
        """release_available_cached_blocks: free oversize cached blocks (needs max_split_size)."""
        if self._config.max_split_size is None:
            return False
        key = max(rounded, self._max_split)
        free = pool.free
        i = bisect_left(free, (stream, key, -1))
        if i < len(free) and free[i][0] == stream:
            block = self._blocks[free[i][2]]
            if not block.expandable and not block.is_split():
                self._release_block(pool, block)
                return True
        # No single block is big enough: free oversize blocks, largest first.
        released = 0
        j = i - 1
        while j >= 0 and released < key:
            _, size, addr = free[j]
            if free[j][0] != stream or size < self._max_split:
                break
            block = self._blocks[addr]
            # torch cudaFrees these unconditionally; an oversize free block is always a
            # whole segment in practice, and we skip any that is not rather than corrupt state.
            if not block.expandable and not block.is_split():
                self._release_block(pool, block)
                released += size
            j -= 1
        # Blocks already freed stay freed even when this returns False.
        return released >= key

    def _release_cached_blocks(self) -> None:
        """release_cached_blocks: free every unsplit cached segment, large pool first."""
        for pool in (self._large, self._small):
            to_unmap: list[_Block] = []
            for _, _, addr in list(pool.free):
                block = self._blocks[addr]
                if block.expandable:
                    to_unmap.append(block)
                elif not block.is_split():
                    self._release_block(pool, block)
            for block in to_unmap:
                self._unmap_block(pool, block)

    def _garbage_collect_cached_blocks(self) -> None:
        """garbage_collect_cached_blocks: free old unsplit large blocks above the threshold."""
        assert self._limit is not None  # _gc_on implies a limit
        threshold = int(self._config.garbage_collection_threshold * self._limit)
        if self._reserved <= threshold:
            return
        target = self._reserved - threshold
        pool = self._large

        def freeable(block: _Block) -> bool:
            return not block.is_split() and not block.expandable

        ages = [
            pool.gc_calls - b.gc_base
            for b in (self._blocks[a] for _, _, a in pool.free)
            if freeable(b)
        ]
        total_age, count = sum(ages), len(ages)
        reclaimed = 0
        freed_any = True
        while reclaimed < target and freed_any and count > 0:
            mean_age = total_age / count
            freed_any = False
            # Frees every block at or above the mean age, even past the target, so that
            # GC does not run again at once.
            for _, size, addr in list(pool.free):
                block = self._blocks[addr]
                age = pool.gc_calls - block.gc_base
                if freeable(block) and age >= mean_age:
                    freed_any = True
                    reclaimed += size
                    total_age -= age
                    count -= 1
                    self._release_block(pool, block)

    # ---- expandable segments (rules §9)

    def _try_allocate_expandable_block(
        self, pool: _Pool, stream: int, size: int
    ) -> _Block | None:
        """try_allocate_expandable_block: map pages until a free block of `size` exists."""
        candidate = self._find_expandable_block(pool, stream, size)
        if not candidate.mapped and not self._map_block(pool, candidate, min(candidate.size, size)):
            return None
        while candidate.size < size:
            # candidate is free and mapped, and an unmapped block follows it.
            nxt = candidate.next
            assert nxt is not None and not nxt.mapped
            if not self._map_block(pool, nxt, min(size - candidate.size, nxt.size)):
                return None  # pages mapped so far stay mapped, as in torch
            candidate = nxt
        self._remove_free(pool, candidate)
        return candidate

    def _find_expandable_block(self, pool: _Pool, stream: int, size: int) -> _Block:
        """find_expandable_block: lowest unmapped range (with a free block before it) that fits."""
        unmapped = pool.unmapped
        i = bisect_left(unmapped, (stream, -1))
        while i < len(unmapped) and unmapped[i][0] == stream:
            candidate = self._blocks[unmapped[i][1]]
            if candidate.prev is not None and not candidate.prev.allocated:
                candidate = candidate.prev
            room, walk = 0, candidate
            while room < size and walk is not None and not walk.allocated:
                room += walk.size
                walk = walk.next
            if room >= size:
                return candidate
            i += 1
        # A new segment for this (stream, pool); it reserves address space only.
        va = self._page(pool) * _EXPANDABLE_VA_PAGES
        base = self._new_range(va)
        block = _Block(base, va, stream, pool.small, expandable=True, seg_base=base, mapped=False)
        self._blocks[base] = block
        self._insert_unmapped(pool, block)
        return block

    def _map_block(self, pool: _Pool, block: _Block, size: int) -> bool:
        """map_block: map ceil(size / page) pages at the start of an unmapped block."""
        page = self._page(pool)
        nbytes = -(-size // page) * page
        if not self._fits(nbytes):
            return False  # ExpandableSegment::map releases a partial map: all or nothing
        self._remove_unmapped(pool, block)
        block.mapped = True
        if nbytes < block.size:
            rest = _Block(
                block.addr + nbytes, block.size - nbytes, block.stream, block.small,
                expandable=True, seg_base=block.seg_base, mapped=False,
            )
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = nbytes
            self._blocks[rest.addr] = rest
            self._insert_unmapped(pool, rest)
        self._try_merge_blocks(pool, block, block.prev)
        self._try_merge_blocks(pool, block, block.next)
        self._insert_free(pool, block)
        self._add_reserved(nbytes)
        return True

    def _unmap_block(self, pool: _Pool, block: _Block) -> None:
        """unmap_block: unmap the whole pages inside a free block; slivers stay free and mapped."""
        page = self._page(pool)
        base = block.seg_base
        start = base + -(-(block.addr - base) // page) * page
        end = base + (block.addr + block.size - base) // page * page
        if start >= end:
            return
        self._remove_free(pool, block)
        del self._blocks[block.addr]
        if start > block.addr:
            before = _Block(block.addr, start - block.addr, block.stream, block.small, True, base)
            before.prev, before.next = block.prev, block
            if block.prev is not None:
                block.prev.next = before
            block.prev = before
            self._blocks[before.addr] = before
            self._insert_free(pool, before)
        block_end = block.addr + block.size
        if end < block_end:
            after = _Block(end, block_end - end, block.stream, block.small, True, base)
            after.prev, after.next = block, block.next
            if block.next is not None:
                block.next.prev = after
            block.next = after
            self._blocks[after.addr] = after
            self._insert_free(pool, after)
        block.addr, block.size, block.mapped = start, end - start, False
        self._blocks[start] = block
        self._try_merge_blocks(pool, block, block.prev)
        self._try_merge_blocks(pool, block, block.next)
        self._insert_unmapped(pool, block)
        self._reserved -= end - start
        self._device_free += 1
