"""Hand-computed scenarios for the caching-allocator simulator.

Each expected number is worked out from the rules in
shared/reference/cuda_caching_allocator_rules.md (section numbers in comments).
"""

from __future__ import annotations

import random

import pytest

from yolomem.allocator.caching import (
    AllocConfError,
    AllocatorConfig,
    CachingAllocator,
    SimulatedOOM,
    _roundup_power2_next_division,
    allocation_size,
    parse_alloc_conf,
    round_size,
)
from yolomem.allocator.replay import Copy, Mark, ReplayEvent, replay

KiB = 1 << 10
MiB = 1 << 20


# ---------------------------------------------------------------- rounding (§1, §3)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 512), (511, 512), (512, 512), (513, 1024), (1000, 1024), (MiB + 1, MiB + 512)],
)
def test_round_size_default_is_512_multiple(size: int, expected: int) -> None:
    assert round_size(size) == expected


def test_power2_division_step() -> None:
    # floor 1024, step 1024/4 = 256, so 1200 goes up to 1280.
    assert _roundup_power2_next_division(1200, 4) == 1280
    assert _roundup_power2_next_division(1024, 4) == 1024  # powers of two stay


def test_round_size_with_divisions() -> None:
    cfg = AllocatorConfig(roundup_power2_divisions=(4,) * 16)
    # 1200 is not above 512 x 4 = 2048, so round_size keeps plain 512 rounding.
    assert round_size(1200, cfg) == 1536
    # 5 MiB + 1: floor 4 MiB, step 1 MiB, so 6 MiB (plain rounding would give 5 MiB + 512).
    assert round_size(5 * MiB + 1, cfg) == 6 * MiB
    assert round_size(4 * MiB, cfg) == 4 * MiB


def test_allocation_size_thresholds() -> None:
    assert allocation_size(512) == 2 * MiB
    assert allocation_size(MiB) == 2 * MiB
    assert allocation_size(MiB + 512) == 20 * MiB
    assert allocation_size(10 * MiB - 512) == 20 * MiB
    assert allocation_size(10 * MiB) == 10 * MiB  # not 20 MiB
    assert allocation_size(11 * MiB + 512) == 12 * MiB


# ---------------------------------------------------------------- pools and segments


def test_small_pool_shares_one_2mib_segment() -> None:
    a = CachingAllocator()
    h1 = a.malloc(1000)
    h2 = a.malloc(1000)
    s = a.stats()
    assert (s.allocated_bytes, s.reserved_bytes, s.num_segments) == (2048, 2 * MiB, 1)
    assert s.requested_bytes == 2000
    assert s.inactive_split_bytes == 2 * MiB - 2048
    assert h2 == h1 + 1024  # split keeps the front; the next block follows it


def test_exactly_1mib_is_small() -> None:
    a = CachingAllocator()
    a.malloc(MiB)
    a.malloc(MiB)  # the second half of the same 2 MiB segment
    assert (a.reserved_bytes, a.stats().num_segments) == (2 * MiB, 1)
    a.malloc(MiB)
    assert a.reserved_bytes == 4 * MiB
    a.malloc(MiB + 1)  # rounds to 1 MiB + 512: large pool, 20 MiB segment
    assert a.reserved_bytes == 24 * MiB


def test_mid_size_request_gets_20mib_and_tail_is_reused() -> None:
    a = CachingAllocator()
    h = a.malloc(5 * MiB)
    assert (a.reserved_bytes, a.allocated_bytes) == (20 * MiB, 5 * MiB)
    assert a.stats().inactive_split_bytes == 15 * MiB
    # A 12 MiB request best-fits the 15 MiB tail (3 MiB left > 1 MiB: split).
    h2 = a.malloc(12 * MiB)
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.num_segments) == (20 * MiB, 17 * MiB, 1)
    assert h2 == h + 5 * MiB
    assert s.inactive_split_bytes == 3 * MiB


def test_large_request_segment_rounded_to_2mib() -> None:
    a = CachingAllocator()
    h = a.malloc(10 * MiB)
    assert a.reserved_bytes == 10 * MiB
    b = CachingAllocator()
    h2 = b.malloc(15 * MiB + 1)  # rounded 15 MiB + 512 -> 16 MiB segment, tail < 1 MiB
    assert b.reserved_bytes == 16 * MiB
    assert b.block_size(h2) == 16 * MiB
    assert a.block_size(h) == 10 * MiB


def test_no_split_when_remainder_is_exactly_1mib() -> None:
    a = CachingAllocator()
    h = a.malloc(11 * MiB)  # 12 MiB segment, 1 MiB remainder is not > 1 MiB
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.active_bytes) == (12 * MiB,) * 3
    assert s.requested_bytes == 11 * MiB
    assert s.inactive_split_bytes == 0
    assert a.block_size(h) == 12 * MiB


def test_split_of_10_5_mib() -> None:
    a = CachingAllocator()
    a.malloc(10 * MiB + 512 * KiB)  # 12 MiB segment, 1.5 MiB remainder > 1 MiB
    assert a.allocated_bytes == 10 * MiB + 512 * KiB
    assert a.stats().inactive_split_bytes == 1536 * KiB
    # 1.5 MiB is a large-pool request and takes the tail whole.
    a.malloc(1536 * KiB)
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.inactive_split_bytes) == (12 * MiB, 12 * MiB, 0)


def test_free_merges_neighbours_and_block_is_reused() -> None:
    a = CachingAllocator()
    x = a.malloc(5 * MiB)
    y = a.malloc(5 * MiB)
    assert a.stats().inactive_split_bytes == 10 * MiB
    a.free(x)  # neighbour y is live: no merge
    assert a.stats().inactive_split_bytes == 15 * MiB
    a.free(y)  # merges x before and the 10 MiB tail after: one unsplit 20 MiB block
    s = a.stats()
    assert (s.allocated_bytes, s.reserved_bytes, s.inactive_split_bytes) == (0, 20 * MiB, 0)
    assert (s.active_bytes, s.requested_bytes) == (0, 0)
    z = a.malloc(18 * MiB)  # only fits because of the merge
    assert (a.reserved_bytes, a.stats().num_segments) == (20 * MiB, 1)
    assert z == x


def test_fragmentation_forces_new_segment() -> None:
    a = CachingAllocator()
    blocks = [a.malloc(5 * MiB) for _ in range(4)]  # fills one 20 MiB segment
    assert a.reserved_bytes == 20 * MiB
    a.free(blocks[0])
    a.free(blocks[2])  # 10 MiB free, in two separate 5 MiB holes
    a.malloc(8 * MiB)
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.num_segments) == (40 * MiB, 18 * MiB, 2)


def test_best_fit_prefers_smallest_then_lowest_address() -> None:
    a = CachingAllocator()
    big = a.malloc(12 * MiB)  # 12 MiB segment, unsplit
    first = a.malloc(10 * MiB)  # 10 MiB segment
    second = a.malloc(10 * MiB)  # another 10 MiB segment, below the first (large-pool segments descend)
    assert second < first
    for h in (big, first, second):
        a.free(h)
    assert a.malloc(10 * MiB) == second  # smallest fit, lowest address among equals
    assert a.malloc(10 * MiB) == first
    assert a.malloc(10 * MiB) == big  # 12 MiB block, 2 MiB left > 1 MiB: split
    assert a.allocated_bytes == 30 * MiB


def test_large_segments_in_the_other_address_order_make_best_fit_reuse_the_other_block() -> None:
    """``large_segments_descending=False``: each new large segment above the last (the order the upper
    figure also replays); the same requests then reuse the other of two equal blocks first."""
    a = CachingAllocator(large_segments_descending=False)
    first = a.malloc(10 * MiB)
    second = a.malloc(10 * MiB)
    assert second > first
    for h in (first, second):
        a.free(h)
    assert a.malloc(10 * MiB) == first  # lowest address among equals: now the first segment


def test_small_and_large_pools_do_not_share() -> None:
    a = CachingAllocator()
    a.free(a.malloc(5 * MiB))  # 20 MiB cached in the large pool
    a.malloc(1000)
    assert a.reserved_bytes == 22 * MiB


def test_streams_do_not_share_blocks() -> None:
    a = CachingAllocator()
    a.free(a.malloc(5 * MiB, stream=0))
    a.malloc(5 * MiB, stream=1)
    assert a.reserved_bytes == 40 * MiB
    a.malloc(5 * MiB, stream=0)
    assert a.reserved_bytes == 40 * MiB


# ---------------------------------------------------------------- max_split_size (§4)


def test_oversize_block_not_given_to_small_request() -> None:
    cfg = parse_alloc_conf("max_split_size_mb:40")
    a = CachingAllocator(cfg)
    a.free(a.malloc(60 * MiB))  # cached 60 MiB oversize segment
    a.malloc(30 * MiB)  # 30 < 40 and 60 >= 40: refused, new 30 MiB segment
    assert a.reserved_bytes == 90 * MiB
    # Without max_split_size the 60 MiB block would be split instead.
    b = CachingAllocator()
    b.free(b.malloc(60 * MiB))
    b.malloc(30 * MiB)
    assert (b.reserved_bytes, b.allocated_bytes) == (60 * MiB, 30 * MiB)


def test_oversize_reuse_within_20mib_counts_whole_block() -> None:
    cfg = parse_alloc_conf("max_split_size_mb:40")
    a = CachingAllocator(cfg)
    h = a.malloc(60 * MiB)
    a.free(h)
    h2 = a.malloc(50 * MiB)  # 60 < 50 + 20: reused whole, never split
    assert (h2, a.allocated_bytes, a.reserved_bytes) == (h, 60 * MiB, 60 * MiB)
    a.free(h2)
    a.malloc(40 * MiB)  # 60 >= 40 + 20: refused, new 40 MiB segment
    assert (a.allocated_bytes, a.reserved_bytes) == (40 * MiB, 100 * MiB)


def test_oversize_request_not_split() -> None:
    a = CachingAllocator(AllocatorConfig(max_split_size=40 * MiB))
    a.free(a.malloc(60 * MiB))
    h = a.malloc(45 * MiB)  # reused: 60 < 65; 15 MiB left but rounded >= max_split
    assert a.block_size(h) == 60 * MiB
    assert a.stats().inactive_split_bytes == 0


def test_release_available_cached_blocks_frees_oversize_first() -> None:
    cfg = AllocatorConfig(max_split_size=40 * MiB)
    a = CachingAllocator(cfg, capacity_bytes=80 * MiB)
    a.free(a.malloc(60 * MiB))
    # 30 MiB: cache refuses the oversize block; cudaMalloc 60+30 > 80 fails;
    # release_available_cached_blocks frees the 60 MiB block; the second try fits.
    a.malloc(30 * MiB)
    s = a.stats()
    assert (s.reserved_bytes, s.num_alloc_retries, s.num_device_free) == (30 * MiB, 0, 1)
    assert s.peak_reserved_bytes == 60 * MiB


# ---------------------------------------------------------------- free-and-retry, OOM (§7)


def test_free_and_retry_releases_cached_segment() -> None:
    a = CachingAllocator(capacity_bytes=40 * MiB)
    a.free(a.malloc(5 * MiB))  # 20 MiB cached, unsplit after the merge
    a.malloc(30 * MiB)  # 20 + 30 > 40: release cache, retry succeeds
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes) == (30 * MiB, 30 * MiB)
    assert (s.num_alloc_retries, s.num_ooms, s.num_segments) == (1, 0, 1)
    assert (s.num_device_alloc, s.num_device_free) == (2, 1)
    assert s.peak_reserved_bytes == 30 * MiB


def test_oom_when_cached_blocks_are_split() -> None:
    a = CachingAllocator(capacity_bytes=40 * MiB)
    a.malloc(5 * MiB)  # live: its 20 MiB segment is split and cannot be released
    with pytest.raises(SimulatedOOM) as info:
        a.malloc(30 * MiB)
    err = info.value
    assert (err.requested_bytes, err.segment_bytes) == (30 * MiB, 30 * MiB)
    assert (err.allocated_bytes, err.reserved_bytes, err.capacity_bytes) == (
        5 * MiB, 20 * MiB, 40 * MiB,
    )
    s = a.stats()
    assert (s.num_ooms, s.num_alloc_retries) == (1, 1)
    a.malloc(10 * MiB)  # the allocator still works: the 15 MiB tail serves this
    assert a.reserved_bytes == 20 * MiB


def test_oom_path_lowers_reserved_before_failing() -> None:
    a = CachingAllocator(capacity_bytes=40 * MiB)
    a.free(a.malloc(1000))  # 2 MiB small segment, cached
    a.malloc(5 * MiB)  # 20 MiB segment, live
    with pytest.raises(SimulatedOOM):
        a.malloc(30 * MiB)
    assert a.reserved_bytes == 20 * MiB  # the cached small segment was released


def test_zero_bytes_changes_nothing() -> None:
    a = CachingAllocator()
    assert a.malloc(0) is None
    assert a.stats() == CachingAllocator().stats()


# ---------------------------------------------------------------- expandable segments (§9)


def test_expandable_grows_in_20mib_pages() -> None:
    a = CachingAllocator(parse_alloc_conf("expandable_segments:True"))
    a.malloc(5 * MiB)
    s = a.stats()
    assert (s.reserved_bytes, s.num_segments, s.num_device_alloc) == (20 * MiB, 0, 1)
    # 30 MiB: the free 15 MiB tail plus one new page; the rest (5 MiB) stays free.
    a.malloc(30 * MiB)
    s = a.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.num_device_alloc) == (40 * MiB, 35 * MiB, 2)
    assert s.inactive_split_bytes == 0  # not tracked for expandable segments


def test_expandable_page_rounding() -> None:
    a = CachingAllocator(AllocatorConfig(expandable_segments=True))
    h = a.malloc(21 * MiB)  # two 20 MiB pages; cudaMalloc would take 22 MiB
    assert a.reserved_bytes == 40 * MiB
    assert a.block_size(h) == 21 * MiB  # split at 512 B granularity
    a.malloc(1000)  # small pool pages are 2 MiB
    assert a.reserved_bytes == 42 * MiB
    # Expandable large blocks split at 512 B too: the 0.5 MiB rest is not handed out.
    b = CachingAllocator(AllocatorConfig(expandable_segments=True))
    h2 = b.malloc(19 * MiB + 512 * KiB)
    assert (b.block_size(h2), b.reserved_bytes) == (19 * MiB + 512 * KiB, 20 * MiB)


def test_expandable_empty_cache_unmaps_whole_pages() -> None:
    a = CachingAllocator(AllocatorConfig(expandable_segments=True))
    a.malloc(5 * MiB)  # [0, 5)
    b = a.malloc(30 * MiB)  # [5, 35), free [35, 40)
    a.free(b)  # free [5, 40)
    assert a.reserved_bytes == 40 * MiB
    a.empty_cache()  # unmaps page [20, 40); [5, 20) stays mapped and free
    s = a.stats()
    assert (s.reserved_bytes, s.num_device_free) == (20 * MiB, 1)
    a.malloc(15 * MiB)  # fits the sliver: no new page
    assert a.reserved_bytes == 20 * MiB


def test_expandable_prefers_interior_block_over_growable_tail() -> None:
    a = CachingAllocator(AllocatorConfig(expandable_segments=True))
    x = a.malloc(8 * MiB)  # [0, 8)
    a.malloc(4 * MiB)  # [8, 12)
    a.malloc(2 * MiB)  # [12, 14), free tail [14, 20)
    a.free(x)  # interior free [0, 8)
    # Best fit by size would be the 6 MiB tail, but it can grow, so [0, 8) wins.
    assert a.malloc(6 * MiB) == x


def test_expandable_reuses_unmapped_hole() -> None:
    a = CachingAllocator(AllocatorConfig(expandable_segments=True))
    x = a.malloc(40 * MiB)  # [0, 40)
    a.malloc(5 * MiB)  # [40, 45), free [45, 60)
    a.free(x)
    a.empty_cache()  # unmaps [0, 40)
    assert a.reserved_bytes == 20 * MiB
    assert a.malloc(40 * MiB) == x  # maps the hole again, at the lowest address
    assert a.reserved_bytes == 60 * MiB


def test_expandable_free_and_retry_unmaps() -> None:
    a = CachingAllocator(AllocatorConfig(expandable_segments=True), capacity_bytes=60 * MiB)
    a.malloc(1000)  # 2 MiB small page
    a.free(a.malloc(40 * MiB))  # 40 MiB mapped, free
    # 50 MiB: growing the free 40 MiB block by one page needs 62 > 60 MiB. The OOM
    # path unmaps both free large pages, but three fresh pages plus the small page
    # still need 62 MiB, so this is an OOM with reserved back at 2 MiB.
    with pytest.raises(SimulatedOOM):
        a.malloc(50 * MiB)
    assert a.reserved_bytes == 2 * MiB
    a.malloc(40 * MiB)
    assert a.reserved_bytes == 42 * MiB


# ---------------------------------------------------------------- GC and stats


def test_garbage_collection_needs_a_fraction_limit() -> None:
    cfg = parse_alloc_conf("garbage_collection_threshold:0.25")
    a = CachingAllocator(cfg, fraction_limit_bytes=200 * MiB)
    a.free(a.malloc(60 * MiB))
    a.malloc(62 * MiB)  # reserved 60 > 0.25 x 200: GC frees the cached 60 MiB block first
    s = a.stats()
    assert (s.reserved_bytes, s.num_device_free, s.num_alloc_retries) == (62 * MiB, 1, 0)
    b = CachingAllocator(cfg, capacity_bytes=1000 * MiB)  # no fraction: no GC, as in torch
    b.free(b.malloc(60 * MiB))
    b.malloc(62 * MiB)
    assert b.reserved_bytes == 122 * MiB


def test_fraction_limit_caps_reserved() -> None:
    a = CachingAllocator(fraction_limit_bytes=30 * MiB)
    a.malloc(20 * MiB)
    with pytest.raises(SimulatedOOM):
        a.malloc(12 * MiB)  # 20 + 12 > 30


def test_peaks_and_reset() -> None:
    a = CachingAllocator()
    x = a.malloc(5 * MiB)
    y = a.malloc(12 * MiB)
    a.free(x)
    a.free(y)
    s = a.stats()
    assert (s.allocated_bytes, s.peak_allocated_bytes) == (0, 17 * MiB)
    assert (s.reserved_bytes, s.peak_reserved_bytes) == (20 * MiB, 20 * MiB)
    a.reset_peak_stats()
    s = a.stats()
    assert (s.peak_allocated_bytes, s.peak_reserved_bytes) == (0, 20 * MiB)
    a.empty_cache()
    assert (a.reserved_bytes, a.stats().peak_reserved_bytes) == (0, 20 * MiB)


def test_free_of_unknown_handle_raises() -> None:
    a = CachingAllocator()
    h = a.malloc(1000)
    a.free(h)
    with pytest.raises(ValueError):
        a.free(h)


@pytest.mark.parametrize("conf", ["", "expandable_segments:True", "max_split_size_mb:64"])
def test_random_replay_keeps_books_consistent(conf: str) -> None:
    """Invariants on a random workload: live block sizes add up, and everything is returnable."""
    rng = random.Random(1234)
    a = CachingAllocator(parse_alloc_conf(conf))
    live: dict[int, int] = {}
    for _ in range(3000):
        if live and rng.random() < 0.45:
            h = rng.choice(list(live))
            a.free(h)
            del live[h]
        else:
            limit = rng.choice([4096, 3 * MiB, 80 * MiB])
            size = rng.randint(1, limit)
            h = a.malloc(size)
            assert h not in live
            live[h] = a.block_size(h)
        assert a.allocated_bytes == sum(live.values()) <= a.reserved_bytes
        if rng.random() < 0.01:
            a.empty_cache()
    for h in list(live):
        a.free(h)
    a.empty_cache()
    s = a.stats()
    assert (s.allocated_bytes, s.active_bytes, s.requested_bytes) == (0, 0, 0)
    assert (s.reserved_bytes, s.num_segments, s.inactive_split_bytes) == (0, 0, 0)


# ---------------------------------------------------------------- replay


def test_replay_maps_ids_and_calls_on_step() -> None:
    events = [
        ReplayEvent("alloc", 1, 5 * MiB),
        ReplayEvent("alloc", 2, 0),
        ReplayEvent("free", 99, 0),  # unknown id: ignored
        ReplayEvent("free", 2, 0),  # zero-byte storage had no block
        ReplayEvent("alloc", 3, 12 * MiB),
        ReplayEvent("free", 1, 5 * MiB),
    ]
    seen: list[tuple[int, int]] = []
    run = replay([events], CachingAllocator(), on_event=lambda i, al: seen.append((i, al.allocated_bytes)))
    stats = run.stats
    assert [i for i, _ in seen] == list(range(6))
    assert [b // MiB for _, b in seen] == [5, 5, 5, 5, 17, 12]
    assert (stats.allocated_bytes, stats.peak_allocated_bytes, stats.reserved_bytes) == (
        12 * MiB, 17 * MiB, 20 * MiB,
    )
    assert (run.events, run.peak_allocated_index, run.oom) == (6, 4, None)


def test_replay_rejects_unknown_op_and_double_alloc() -> None:
    with pytest.raises(ValueError, match="op"):
        replay([[ReplayEvent("resize", 1, 10)]], CachingAllocator())
    with pytest.raises(ValueError, match="twice"):
        replay([[ReplayEvent("alloc", 1, 10), ReplayEvent("alloc", 1, 10)]], CachingAllocator())


def test_replay_runs_marks_between_chunks_and_stops_at_oom() -> None:
    """Marks act on the allocator where they stand (here: empty_cache, as _clear_memory does); an OOM ends
    the replay and says which event failed."""
    seen: list[int] = []
    stream = [
        [ReplayEvent("alloc", 1, 12 * MiB, "forward"), ReplayEvent("free", 1, 0, "forward")],
        Mark(lambda a: seen.append(a.reserved_bytes)),
        Mark(lambda a: a.empty_cache()),
        Mark(lambda a: seen.append(a.reserved_bytes)),
        [ReplayEvent("alloc", 2, 30 * MiB, "backward"), ReplayEvent("alloc", 3, 30 * MiB, "optimizer")],
    ]
    run = replay(stream, CachingAllocator(capacity_bytes=40 * MiB))
    assert seen == [12 * MiB, 0]
    assert run.oom is not None and (run.oom.index, run.oom.phase, run.oom.requested_bytes) == (3, "optimizer", 30 * MiB)
    assert run.events == 4 and run.peak_reserved_event.phase == "backward"


# ---------------------------------------------------------------- parse_alloc_conf


def test_parse_valid_strings() -> None:
    assert parse_alloc_conf(None) == AllocatorConfig()
    assert parse_alloc_conf("") == AllocatorConfig()
    cfg = parse_alloc_conf("expandable_segments:True, max_split_size_mb:128")
    assert (cfg.expandable_segments, cfg.max_split_size) == (True, 128 * MiB)
    assert parse_alloc_conf("roundup_power2_divisions:4").roundup_power2_divisions == (4,) * 16
    assert parse_alloc_conf("garbage_collection_threshold:0.6").garbage_collection_threshold == 0.6
    assert parse_alloc_conf("backend:native") == AllocatorConfig()
    cfg = parse_alloc_conf("max_non_split_rounding_mb:64,large_segment_size_mb:32")
    assert (cfg.max_non_split_rounding, cfg.large_segment_size) == (64 * MiB, 32 * MiB)


def test_parse_division_list() -> None:
    # 64 MB is interval 6 and also fills 0-5; 256 MB is interval 8; interval 7 keeps 0;
    # '>' fills 9-15.
    cfg = parse_alloc_conf("roundup_power2_divisions:[64:8,256:4,>:1]")
    assert cfg.roundup_power2_divisions == (8,) * 7 + (0, 4) + (1,) * 7


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ("expandible_segments:True", "Did you mean 'expandable_segments'"),
        ("max_split_size:128", "Did you mean 'max_split_size_mb'"),
        ("max_split_size_mb:10", "max_split_size_mb must be >= 20"),
        ("max_split_size_mb:lots", "'lots'"),
        ("max_split_size_mb", "missing ':'"),
        ("garbage_collection_threshold:1.5", "'1.5'"),
        ("roundup_power2_divisions:3", "power of 2"),
        ("roundup_power2_divisions:[64:8", "closing ']'"),
        ("expandable_segments:yes", "'True' or 'False'"),
        ("backend:cudaMallocAsync", "not simulated"),
        ("per_process_memory_fraction:0.5", "not simulated"),
    ],
)
def test_parse_errors_teach(conf: str, fragment: str) -> None:
    with pytest.raises(AllocConfError) as info:
        parse_alloc_conf(conf)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(AllocConfError, match="Valid keys: .*expandable_segments"):
        parse_alloc_conf("colour:blue")


# -- replay's memo of repeated self-contained copies --------------------------------------------------
def _iteration_templates(rng, count: int) -> list[list[ReplayEvent]]:
    """Self-contained iterations: random sizes from a few MiB to a few hundred, freed out of order."""
    templates = []
    for t in range(count):
        events, live = [], []
        for sid in range(40):
            size = int(rng.choice([rng.integers(1, 4096), rng.integers(1, 64) * MiB, rng.integers(64, 400) * MiB]))
            events.append(ReplayEvent("alloc", sid, size, phase=f"t{t}"))
            live.append(sid)
            if rng.uniform() < 0.5:
                victim = live.pop(int(rng.integers(len(live))))
                events.append(ReplayEvent("free", victim, 0))
        events += [ReplayEvent("free", sid, 0) for sid in rng.permutation(live).tolist()]
        templates.append(events)
    return templates


def _memo_stream(templates, order, persistent, marks, yielded: list):
    yield persistent
    for n, which in enumerate(order):
        yielded.append(n)
        yield Copy(templates[which], 1000 * (n + 1), self_contained=True)
        if n in marks:
            yield Mark(lambda allocator: allocator.empty_cache())


@pytest.mark.parametrize(
    ("settings", "capacity", "fraction", "reused"),
    [("", None, None, True), ("expandable_segments:True", None, None, True),
     ("max_split_size_mb:128,roundup_power2_divisions:4", None, None, True),
     ("", 4250 * MiB, None, True),  # free-and-retry 6 times, no OOM
     ("", 4200 * MiB, None, True),  # an OOM after copies taken from the memo
     ("garbage_collection_threshold:0.6", None, 6000 * MiB, False)],  # GC ages are state: no state comes back
    ids=["default", "expandable", "split-roundup", "retries", "oom", "gc"],
)  # fmt: skip
def test_a_memoized_replay_equals_the_plain_one(settings, capacity, fraction, reused):
    """Copies of a few iterations, repeated in a random order with empty_cache marks between: taken from
    the memo they give the same figures, peak positions, counters and OOM point as replayed event by event."""
    import numpy as np

    rng = np.random.default_rng(7)
    templates = _iteration_templates(rng, 3)
    persistent = [ReplayEvent("alloc", 10**6 + k, int(rng.integers(1, 200)) * MiB) for k in range(5)]
    order = rng.integers(0, 3, 60).tolist()
    marks = set(rng.choice(60, 4, replace=False).tolist())

    copies: list = []

    def run(memo):
        allocator = CachingAllocator(parse_alloc_conf(settings or None), capacity_bytes=capacity,
                                     fraction_limit_bytes=fraction)  # fmt: skip
        copies.clear()
        result = replay(_memo_stream(templates, order, persistent, marks, copies), allocator, memo=memo)
        return result, allocator.snapshot()

    memo: dict = {}
    (plain, plain_state), (memoized, memo_state) = run(None), run(memo)
    assert memoized.stats == plain.stats and memoized.oom == plain.oom and memo_state == plain_state
    assert (memoized.events, memoized.peak_allocated_index) == (plain.events, plain.peak_allocated_index)
    assert memoized.peak_reserved_event is plain.peak_reserved_event
    assert (plain.oom is not None) == (capacity == 4200 * MiB)
    assert (plain.stats.num_alloc_retries > 0) == (capacity is not None)  # the capacity was reached
    if reused:  # states came back: copies were taken from the memo
        assert len(memo) < len(copies) // 2
    else:
        assert len(memo) == len(copies)


def _random_ops(allocator: CachingAllocator, rng, live: dict, count: int) -> None:
    for _ in range(count):
        if live and rng.uniform() < 0.45:
            allocator.free(live.pop(int(rng.choice(list(live)))))
        else:
            size = int(rng.choice([rng.integers(1, 4096), rng.integers(1, 30) * MiB, rng.integers(30, 90) * MiB]))
            live[len(live) + 10**6 * int(rng.integers(1 << 20))] = allocator.malloc(size)


@pytest.mark.parametrize("settings", ["", "expandable_segments:True", "max_split_size_mb:40"])
def test_a_change_between_snapshots_rebuilds_a_linked_state(settings):
    """``apply_change`` takes an allocator from one snapshot's state to another's: the same snapshot, every
    block linked to the neighbour objects it holds, and the same behaviour from there on."""
    import numpy as np

    def linked(allocator) -> bool:
        blocks = allocator._blocks
        return all((b.prev is None or (blocks[b.prev.addr] is b.prev and b.prev.next is b))
                   and (b.next is None or (blocks[b.next.addr] is b.next and b.next.prev is b)) for b in blocks.values())  # fmt: skip

    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    source, target = CachingAllocator(parse_alloc_conf(settings or None)), CachingAllocator(parse_alloc_conf(settings or None))
    live_a, live_b = {}, {}
    _random_ops(source, rng_a, live_a, 300)
    _random_ops(target, rng_b, live_b, 300)
    before = source.snapshot()
    _random_ops(source, rng_a, live_a, 20)
    after = source.snapshot()
    change = CachingAllocator.change_between(before, after)
    assert 0 < len(change[1]) < len(after[0])  # some blocks changed, not all
    target.apply_change(change)
    assert target.snapshot() == after and linked(target)
    _random_ops(source, np.random.default_rng(4), dict(live_a), 400)
    _random_ops(target, np.random.default_rng(4), dict(live_a), 400)
    assert target.snapshot() == source.snapshot() and linked(target)
