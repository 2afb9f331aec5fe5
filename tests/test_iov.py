"""Intervals of validity: text, relations and algebra, checked against brute-force run sets."""

from __future__ import annotations

import itertools
import random

import pytest

from b2calib.conditions.iov import ALL_RUNS, IoV, uncovered
from b2calib.exceptions import ConfigError

# The brute-force model: a universe of runs reaching past every bound the IoVs below use, so
# that "-1 = end of experiment" and "-1 = forever" differ from any explicit bound.
N_EXP, N_RUN = 3, 4  # IoV bounds: experiments 0..2, runs 0..3 (or -1)
UNIVERSE = [(e, r) for e in range(N_EXP + 2) for r in range(N_RUN + 2)]


def runs_of(iov: IoV) -> frozenset[tuple[int, int]]:
    """The runs of the universe in ``iov``, computed from the definition, not from the code."""
    out = set()
    for e, r in UNIVERSE:
        after_start = (e, r) >= (iov.first_exp, iov.first_run)
        if iov.final_exp == -1:
            before_end = True
        elif iov.final_run == -1:
            before_end = e <= iov.final_exp
        else:
            before_end = (e, r) <= (iov.final_exp, iov.final_run)
        if after_start and before_end:
            out.add((e, r))
    return frozenset(out)


def grid() -> list[IoV]:
    """Every valid IoV with bounds in the small grid, open ends included."""
    starts = [(e, r) for e in range(N_EXP) for r in range(N_RUN)]
    ends = [(e, r) for e in range(N_EXP) for r in [*range(N_RUN), -1]] + [(-1, -1)]
    out = []
    for (e1, r1), (e2, r2) in itertools.product(starts, ends):
        if e2 == -1 or (e2, r2 if r2 != -1 else N_RUN + 99) >= (e1, r1):
            out.append(IoV(e1, r1, e2, r2))
    return out


GRID = grid()


def union(iovs: list[IoV]) -> frozenset[tuple[int, int]]:
    return frozenset().union(*(runs_of(i) for i in iovs))


def assert_disjoint_sorted(pieces: list[IoV]) -> None:
    for a, b in itertools.pairwise(pieces):
        assert a.start < b.start
        assert not a.overlaps(b), (a, b)


# -- text ------------------------------------------------------------------------------------


def test_parse_and_str() -> None:
    iov = IoV.parse(" 1, 2 ,3,-1 ")
    assert iov == IoV(1, 2, 3, -1)
    assert str(iov) == "1,2,3,-1"
    assert iov.as_tuple() == (1, 2, 3, -1)
    assert IoV.parse(str(ALL_RUNS)) == ALL_RUNS == IoV(0, 0)
    assert str(ALL_RUNS) == "0,0,-1,-1"
    assert IoV.run(4, 7) == IoV(4, 7, 4, 7)
    for iov in GRID:
        assert IoV.parse(str(iov)) == iov


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "expected four integers"),
        ("a,b,c,d", "expected four integers"),
        ("1;2;3;4", "expected four integers"),
        ("", "expected four integers"),
        ("-1,0,2,0", "first experiment and run must be >= 0"),
        ("0,-1,2,0", "first experiment and run must be >= 0"),
        ("0,0,-2,-1", "final experiment and run must be >= -1"),
        ("0,0,3,-2", "final experiment and run must be >= -1"),
        ("0,0,-1,5", "an open final experiment needs final run -1"),
        ("3,5,3,4", "ends before it starts"),
        ("3,5,2,-1", "ends before it starts"),
    ],
)
def test_invalid_iovs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IoV.parse(text)


def test_single_run_and_zero_length_bounds_are_valid() -> None:
    assert IoV(3, 5, 3, 5).contains(3, 5)
    assert IoV(3, 5, 3, -1).contains(3, 5)
    assert IoV(0, 0, 0, 0) == IoV.run(0, 0)


# -- relations -------------------------------------------------------------------------------


def test_contains_at_open_ends() -> None:
    end_of_exp = IoV(1, 5, 1, -1)
    assert end_of_exp.contains(1, 5)
    assert end_of_exp.contains(1, 10**9)
    assert not end_of_exp.contains(1, 4)
    assert not end_of_exp.contains(2, 0)
    assert not end_of_exp.is_open
    forever = IoV(1, 5, -1, -1)
    assert forever.is_open
    assert forever.contains(1, 5)
    assert forever.contains(10**6, 10**9)
    assert not forever.contains(1, 4)
    assert not forever.contains(0, 10**9)
    closed = IoV(1, 5, 2, 3)
    assert [closed.contains(*r) for r in [(1, 4), (1, 5), (2, 0), (2, 3), (2, 4)]] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert ALL_RUNS.contains(0, 0)


def test_contains_matches_brute_force() -> None:
    for iov in GRID:
        assert frozenset(r for r in UNIVERSE if iov.contains(*r)) == runs_of(iov), iov


def test_overlaps_and_covers_match_brute_force() -> None:
    for a, b in itertools.product(GRID, GRID):
        ra, rb = runs_of(a), runs_of(b)
        assert a.overlaps(b) == bool(ra & rb), (a, b)
        assert a.covers(b) == (rb <= ra), (a, b)


def test_overlaps_examples() -> None:
    assert IoV(1, 0, 1, 10).overlaps(IoV(1, 10, 1, 20))
    assert not IoV(1, 0, 1, 10).overlaps(IoV(1, 11, 1, 20))
    assert IoV(1, 0, 1, -1).overlaps(IoV(1, 10**6, 2, 0))
    assert not IoV(1, 0, 1, -1).overlaps(IoV(2, 0, 2, 0))
    assert IoV(5, 0, -1, -1).overlaps(IoV(100, 0, 100, 0))
    assert not IoV(5, 0, -1, -1).overlaps(IoV(4, 0, 4, -1))


# -- algebra ---------------------------------------------------------------------------------


def test_intersect_matches_brute_force() -> None:
    for a, b in itertools.product(GRID, GRID):
        got = a.intersect(b)
        want = runs_of(a) & runs_of(b)
        if not want:
            assert got is None, (a, b)
        else:
            assert got is not None, (a, b)
            assert runs_of(got) == want, (a, b, got)
            assert got == b.intersect(a)


def test_subtract_matches_brute_force() -> None:
    for a, b in itertools.product(GRID, GRID):
        pieces = a.subtract(b)
        assert len(pieces) <= 2
        assert_disjoint_sorted(pieces)
        assert union(pieces) == runs_of(a) - runs_of(b), (a, b, pieces)
        for p in pieces:  # no piece reaches outside a, none is empty in the model
            assert a.covers(p)
            assert runs_of(p)


def test_subtract_examples() -> None:
    # run 0 and the start of everything
    assert ALL_RUNS.subtract(IoV(0, 0, 0, 3)) == [IoV(0, 4, -1, -1)]
    assert ALL_RUNS.subtract(IoV(0, 0, 0, -1)) == [IoV(1, 0, -1, -1)]
    assert IoV(0, 0, 5, -1).subtract(IoV(0, 0, -1, -1)) == []
    # experiment boundaries: the run before (3, 0) is the end of experiment 2
    assert IoV(0, 0, 5, -1).subtract(IoV(3, 0, 3, -1)) == [IoV(0, 0, 2, -1), IoV(4, 0, 5, -1)]
    assert IoV(2, 7, 4, 2).subtract(IoV(3, 0, -1, -1)) == [IoV(2, 7, 2, -1)]
    assert IoV(2, 7, -1, -1).subtract(IoV(2, 7, 2, 9)) == [IoV(2, 10, -1, -1)]
    assert IoV(2, 7, -1, -1).subtract(IoV(2, 8, 2, 8)) == [IoV(2, 7, 2, 7), IoV(2, 9, -1, -1)]
    assert IoV(1, 0, 1, 5).subtract(IoV(2, 0, 2, 5)) == [IoV(1, 0, 1, 5)]


def test_uncovered_matches_brute_force() -> None:
    rnd = random.Random(5)
    for _ in range(3000):
        iov = rnd.choice(GRID)
        taken = rnd.sample(GRID, rnd.randint(0, 4))
        pieces = uncovered(iov, taken)
        assert_disjoint_sorted(pieces)
        assert union(pieces) == runs_of(iov) - union(taken), (iov, taken, pieces)


def test_uncovered_examples() -> None:
    assert uncovered(ALL_RUNS, []) == [ALL_RUNS]
    assert uncovered(ALL_RUNS, [IoV(2, 0, 2, -1), IoV(0, 0, 0, 9)]) == [
        IoV(0, 10, 1, -1),
        IoV(3, 0, -1, -1),
    ]
    assert uncovered(IoV(1, 0, 1, 9), [IoV(0, 0, 1, 4), IoV(1, 5, -1, -1)]) == []


def test_close_before_and_starting_at() -> None:
    assert IoV(1, 0, -1, -1).close_before(2, 0) == IoV(1, 0, 1, -1)
    assert IoV(1, 0, -1, -1).close_before(1, 5) == IoV(1, 0, 1, 4)
    assert IoV(1, 5, -1, -1).close_before(1, 5) is None
    assert IoV(0, 0, -1, -1).close_before(0, 0) is None
    assert IoV(1, 0, 1, 3).close_before(1, 9) == IoV(1, 0, 1, 3)  # already ends before
    assert IoV(0, 0, -1, -1).starting_at(4, 2) == IoV(4, 2, -1, -1)
    assert IoV(0, 0, 6, -1).starting_at(4, 2) == IoV(4, 2, 6, -1)
    for iov in GRID:
        for e, r in UNIVERSE:
            closed = iov.close_before(e, r)
            want = frozenset(x for x in runs_of(iov) if x < (e, r))
            assert (runs_of(closed) if closed is not None else frozenset()) == want


def test_from_keys_round_trip() -> None:
    for iov in GRID:
        assert IoV.from_keys(iov.start, iov.end) == iov
