"""Good-run lists: the expression language against independent reference predicates, set operations
against Python set algebra, and the JSON, CMS JSON and CSV exports read back."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from b2calib.exceptions import ConfigError
from b2calib.geometry import DETECTORS
from b2calib.qa.grl import (
    DQ_TAG_PRESETS,
    LUMINOSITY,
    PRESETS,
    Expression,
    ExpressionError,
    GoodRunList,
    GRLRun,
    GRLWarning,
    diff,
    evaluate,
    parse,
    runs_expression,
)
from b2calib.runs import BEAM_ENERGIES, DQ_FLAGS, RUN_TYPES, Run, RunRegistry

# --------------------------------------------------------------------------------------------
# random runs


def random_runs(rng: np.random.Generator, n: int, exps: tuple[int, ...] = (3, 7, 12)) -> list[Run]:
    """``n`` runs over a few experiments with gaps in the run numbers, random detector sets
    (sometimes none, often without PXD), flags for included and excluded detectors (some missing,
    i.e. NOTSET), every run type and beam energy, durations around 30 minutes."""
    numbers = {e: rng.choice(np.arange(1, 4 * n + 1), size=n, replace=False) for e in exps}
    runs = []
    for i in range(n):
        exp = int(rng.choice(exps))
        number = int(numbers[exp][i])
        u = rng.random()
        if u < 0.05:
            detectors: tuple[str, ...] = ()
        else:
            detectors = tuple(d for d in DETECTORS if rng.random() < 0.8)
        dq: dict[str, str] = {}
        all_good = rng.random() < 0.35
        for d in DETECTORS:
            if rng.random() < 0.1:
                continue  # NOTSET by absence
            if all_good and d in detectors:
                dq[d] = "GOOD"
            else:
                dq[d] = str(rng.choice(DQ_FLAGS, p=[0.6, 0.1, 0.15, 0.1, 0.05]))
        if rng.random() < 0.15 and "PXD" in detectors:  # good for PXD only
            dq.update({d: "GOOD" for d in detectors if d != "PXD"})
            dq["PXD"] = "BAD"
        duration = float(rng.choice([1799.0, 1800.0, 1801.0, rng.uniform(0.0, 7200.0)]))
        start = float(rng.uniform(1.5e9, 1.6e9))
        run_type = str(rng.choice(RUN_TYPES, p=[0.6, 0.2, 0.1, 0.1]))
        runs.append(
            Run(
                exp=exp,
                run=number,
                run_type=run_type,
                beam_energy=str(rng.choice(BEAM_ENERGIES)),
                start=start,
                stop=start + duration,
                lumi_pb=float(rng.uniform(0.0, 50.0)) if run_type == "physics" else 0.0,
                l1_triggers=int(rng.integers(0, 10_000)),
                detectors=detectors,
                magnet_on=bool(rng.random() < 0.8),
                ecms_nominal_gev=float(rng.choice([10.58, 10.52, 0.0])),
                dq=dq,
            )
        )
    return runs


@pytest.fixture(scope="module")
def registry() -> RunRegistry:
    # 2000 runs: RunRegistry.add re-sorts the registry, so building one is quadratic
    return RunRegistry(random_runs(np.random.default_rng(20261130), 2000))


def run(number: int, detectors: tuple[str, ...], dq: dict[str, str], **kw: object) -> Run:
    base: dict[str, object] = dict(
        exp=12,
        run=number,
        run_type="physics",
        beam_energy="4S",
        start=0.0,
        stop=3600.0,
        lumi_pb=10.0,
        l1_triggers=100,
        detectors=detectors,
        magnet_on=True,
        dq=dq,
    )
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# presets = Run.has_dq


@pytest.mark.parametrize("tag", sorted(DQ_TAG_PRESETS))
def test_presets_reproduce_has_dq_tags(registry: RunRegistry, tag: str) -> None:
    expr = parse(PRESETS[DQ_TAG_PRESETS[tag]])
    runs = [*registry, *random_runs(np.random.default_rng(len(tag)), 4000, exps=(1, 2))]
    got = [expr(r) for r in runs]
    want = [r.has_dq(tag) for r in runs]
    assert got == want
    assert 500 < sum(want) < len(want) - 500  # both outcomes are well populated
    grl = evaluate(DQ_TAG_PRESETS[tag], registry)
    assert grl.keys == {r.key for r in registry.select(dq=tag)}
    assert grl.name == DQ_TAG_PRESETS[tag]
    assert grl.expression == str(expr)


def test_physics_presets_match_registry_queries(registry: RunRegistry) -> None:
    cases = {
        "physics_4s_good": dict(run_type="physics", beam_energy="4S", dq="Good"),
        "physics_good": dict(run_type="physics", dq="Good"),
        "physics_4s_good_or_recoverable": dict(
            run_type="physics", beam_energy="4S", dq="Good Or Recoverable"
        ),
        "physics_4s_good_for_pxd": dict(run_type="physics", beam_energy="4S", dq="Good For PXD"),
        "physics_continuum_good": dict(run_type="physics", beam_energy="Continuum", dq="Good"),
    }
    for preset, query in cases.items():
        want = {r.key for r in registry.select(**query)}  # type: ignore[arg-type]
        assert evaluate(preset, registry).keys == want, preset
        assert len(want) > 20
    assert set(cases) | {
        "all_good",
        "good_or_recoverable",
        "good_for_pxd",
        "min_30_minutes",
    } == set(PRESETS)


# --------------------------------------------------------------------------------------------
# semantics of single tests, against hand-written runs


def test_detector_not_included_is_not_required_but_explicit_test_is_false() -> None:
    no_pxd = run(1, ("SVD", "CDC"), {"SVD": "GOOD", "CDC": "GOOD", "PXD": "BAD"})
    assert parse("all == GOOD")(no_pxd)  # PXD's BAD flag does not count: PXD took no data
    for text in ("PXD == GOOD", "PXD == BAD", "PXD != BAD", "PXD not in (GOOD)", "PXD in (BAD)"):
        assert not parse(text)(no_pxd), text
    assert parse("not PXD == BAD")(no_pxd)
    assert parse("PXD not in detectors")(no_pxd)
    assert not parse("PXD in detectors")(no_pxd)
    assert parse("SVD in detectors and CDC in detectors")(no_pxd)


def test_missing_flag_is_notset_and_quantifiers() -> None:
    r = run(1, ("PXD", "SVD", "CDC"), {"PXD": "BAD", "SVD": "GOOD"})  # CDC NOTSET
    assert parse("CDC == NOTSET")(r)
    assert not parse("CDC == GOOD")(r)
    assert not parse("all == GOOD")(r)
    assert not parse("all except (PXD) == GOOD")(r)
    assert parse("all except (PXD, CDC) == GOOD")(r)
    assert parse("all except PXD in (GOOD, NOTSET)")(r)
    assert parse("any == BAD")(r)
    assert not parse("any except (PXD) == BAD")(r)
    assert parse("any != GOOD")(r)
    assert parse("all not in (RECOVERABLE, EXCLUDED)")(r)
    assert not parse("all != NOTSET")(r)
    empty = run(2, (), {"CDC": "GOOD"})
    for text in ("all == GOOD", "all != GOOD", "any == GOOD", "any != GOOD", "CDC == GOOD"):
        assert not parse(text)(empty), text  # a run without detectors is never good
    only_pxd = run(3, ("PXD",), {"PXD": "GOOD"})
    assert not parse("all except (PXD) == GOOD")(only_pxd)  # as Run.has_dq("Good For PXD")
    assert not only_pxd.has_dq("Good For PXD")


def test_run_properties() -> None:
    r = run(
        42,
        ("CDC",),
        {"CDC": "GOOD"},
        exp=12,
        run_type="cosmic",
        beam_energy="No Beam",
        start=1000.0,
        stop=2800.0,
        lumi_pb=0.0,
        l1_triggers=5000,
        magnet_on=False,
        ecms_nominal_gev=10.58,
    )
    true = [
        "run_type == cosmic",
        "run_type != physics",
        "run_type in (cosmic, beam)",
        "run_type not in (physics, debug)",
        "beam_energy == 'No Beam'",
        'beam_energy == "No Beam"',
        "beam_energy in ('No Beam', Scan)",
        "duration >= 1800",
        "duration_s == 1800",
        "duration in 1800..1800.5",
        "lumi_pb == 0",
        "lumi_pb <= 0.0",
        "not magnet_on",
        "exp == 12",
        "exp in (3, 12)",
        "exp not in 1..11",
        "run >= 42",
        "run in 1..42",
        "run in 42..50",
        "run not in 43..50",
        "run in (1, 42)",
        "run not in (1, 43)",
        "l1_triggers > 4999",
        "ecms_nominal_gev > 10.5",
        "ecms_nominal_gev < 1.1e1",
        "start == 1000",
        "stop > 2799.5",
        "exp > -1",
        "true",
    ]
    false = [
        "run_type == physics",
        "beam_energy == 4S",
        "beam_energy != 'No Beam'",
        "duration > 1800",
        "lumi_pb > 0",
        "magnet_on",
        "run in 43..50",
        "run < 42",
        "run in (41, 43)",
        "exp != 12",
        "false",
    ]
    for text in true:
        assert parse(text)(r), text
        assert not parse(f"not ({text})")(r), text
    for text in false:
        assert not parse(text)(r), text


def test_case_rules_keywords_properties_values_insensitive_detectors_flags_exact() -> None:
    r = run(7, ("CDC", "ECL"), {"CDC": "GOOD", "ECL": "RECOVERABLE"})
    loud = parse("NOT (Run_Type == PHYSICS And Beam_Energy == 4s) OR ALL IN (GOOD, RECOVERABLE)")
    assert str(loud) == (
        "not (run_type == physics and beam_energy == 4S) or all in (GOOD, RECOVERABLE)"
    )
    assert loud(r)
    assert parse("beam_energy == 'no beam'") == parse("beam_energy == 'No Beam'")
    assert parse("All_Good") == parse("all == GOOD")
    with pytest.raises(ExpressionError, match=r"unknown name 'cdc' \(did you mean CDC\?\)"):
        parse("cdc == GOOD")
    with pytest.raises(ExpressionError, match=r"unknown flag 'good' \(did you mean GOOD\?\)"):
        parse("CDC == good")


def test_presets_inside_expressions_are_inlined() -> None:
    e = parse("good_for_pxd and not (min_30_minutes or exp == 3)")
    assert str(e) == "all except (PXD) == GOOD and not (duration >= 1800 or exp == 3)"
    assert e == parse(str(e))
    # an Or preset inside an And keeps its parentheses
    e2 = parse("physics_4s_good and (good_or_recoverable)")
    assert e2 == parse(PRESETS["physics_4s_good"] + " and " + PRESETS["good_or_recoverable"])


def test_detectors_read() -> None:
    assert parse("CDC == GOOD and ECL != BAD or TOP in (GOOD)").detectors() == {"CDC", "ECL", "TOP"}
    assert parse("all == GOOD").detectors() == set(DETECTORS)
    assert parse("any except (PXD, SVD) == BAD").detectors() == set(DETECTORS) - {"PXD", "SVD"}
    assert parse("PXD in detectors and run_type == physics").detectors() == set()
    assert parse("not (KLM == BAD)").detectors() == {"KLM"}


# --------------------------------------------------------------------------------------------
# precedence, parentheses, canonical text


def test_precedence_against_python_on_constants() -> None:
    """``not`` > ``and`` > ``or`` as in Python: random token strings of constants evaluate as
    Python evaluates the same text (``eval`` only here, on text the test built)."""
    rng = np.random.default_rng(1)

    def gen(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            return str(rng.choice(["true", "false"]))
        k = rng.integers(4)
        if k == 0:
            return "not " + gen(depth - 1)
        if k == 1:
            return f"({gen(depth - 1)})"
        return f"{gen(depth - 1)} {rng.choice(['and', 'or'])} {gen(depth - 1)}"

    n_true = 0
    for _ in range(3000):
        text = gen(5)
        want = eval(text.replace("true", "True").replace("false", "False"))
        e = parse(text)
        assert e(run(1, (), {})) is want, text
        assert parse(str(e)) == e, text
        n_true += want
    assert 600 < n_true < 2400
    assert str(parse("(true or false) and false")) == "(true or false) and false"
    assert str(parse("true or (false and false)")) == "true or false and false"
    assert str(parse("not (true and false)")) == "not (true and false)"
    assert str(parse("(not true) and false")) == "not true and false"
    assert str(parse("((true))")) == "true"


Atom = tuple[str, Callable[[Run], bool]]


def _flag(r: Run, d: str) -> str:
    return r.dq.get(d, "NOTSET")


ATOMS: list[Atom] = [
    ("CDC == GOOD", lambda r: "CDC" in r.detectors and _flag(r, "CDC") == "GOOD"),
    ("ECL != BAD", lambda r: "ECL" in r.detectors and _flag(r, "ECL") != "BAD"),
    (
        "TOP in (RECOVERABLE, GOOD)",
        lambda r: "TOP" in r.detectors and _flag(r, "TOP") in ("GOOD", "RECOVERABLE"),
    ),
    (
        "KLM not in (BAD, EXCLUDED)",
        lambda r: "KLM" in r.detectors and _flag(r, "KLM") not in ("BAD", "EXCLUDED"),
    ),
    (
        "all == GOOD",
        lambda r: bool(r.detectors) and all(_flag(r, d) == "GOOD" for d in r.detectors),
    ),
    ("any == BAD", lambda r: any(_flag(r, d) == "BAD" for d in r.detectors)),
    (
        "all except (SVD, PXD) in (GOOD, RECOVERABLE)",
        lambda r: (
            bool([d for d in r.detectors if d not in ("PXD", "SVD")])
            and all(
                _flag(r, d) in ("GOOD", "RECOVERABLE")
                for d in r.detectors
                if d not in ("PXD", "SVD")
            )
        ),
    ),
    (
        "any except ARICH != GOOD",
        lambda r: any(_flag(r, d) != "GOOD" for d in r.detectors if d != "ARICH"),
    ),
    ("PXD in detectors", lambda r: "PXD" in r.detectors),
    ("ARICH not in detectors", lambda r: "ARICH" not in r.detectors),
    ("run_type == physics", lambda r: r.run_type == "physics"),
    ("run_type != cosmic", lambda r: r.run_type != "cosmic"),
    ("beam_energy == 'No Beam'", lambda r: r.beam_energy == "No Beam"),
    ("beam_energy in (Continuum, 4S)", lambda r: r.beam_energy in ("4S", "Continuum")),
    ("duration >= 1800", lambda r: r.stop - r.start >= 1800),
    ("duration < 1800.5", lambda r: r.stop - r.start < 1800.5),
    ("lumi_pb > 10", lambda r: r.lumi_pb > 10),
    ("magnet_on", lambda r: r.magnet_on),
    ("exp == 12", lambda r: r.exp == 12),
    ("exp != 3", lambda r: r.exp != 3),
    ("run in 100..3000", lambda r: 100 <= r.run <= 3000),
    ("run not in 500..1500", lambda r: not 500 <= r.run <= 1500),
    ("run <= 2500", lambda r: r.run <= 2500),
    ("l1_triggers >= 5000", lambda r: r.l1_triggers >= 5000),
    ("ecms_nominal_gev in (10.58, 10.52)", lambda r: r.ecms_nominal_gev in (10.58, 10.52)),
]


def random_expression(rng: np.random.Generator, depth: int) -> Atom:
    """A random expression, fully parenthesised, with its reference predicate."""
    if depth == 0 or rng.random() < 0.25:
        return ATOMS[int(rng.integers(len(ATOMS)))]
    k = rng.integers(3)
    a_text, a = random_expression(rng, depth - 1)
    if k == 0:
        return f"not ({a_text})", lambda r: not a(r)
    b_text, b = random_expression(rng, depth - 1)
    if k == 1:
        return f"({a_text}) and ({b_text})", lambda r: a(r) and b(r)
    return f"({a_text}) or ({b_text})", lambda r: a(r) or b(r)


def test_random_expressions_match_reference_and_canonical_text_round_trips(
    registry: RunRegistry,
) -> None:
    rng = np.random.default_rng(7)
    runs = list(registry)[:300]
    fractions = []
    for _ in range(300):
        text, ref = random_expression(rng, 4)
        e = parse(text)
        canonical = str(e)
        again = parse(canonical)
        assert again == e, text
        assert str(again) == canonical
        assert hash(again) == hash(e)
        got = [e(r) for r in runs]
        assert got == [ref(r) for r in runs], text
        assert [again(r) for r in runs] == got, canonical
        fractions.append(np.mean(got))
    assert 0.1 < np.mean(fractions) < 0.9


def test_expression_equality_ignores_grouping_and_spelling_not_meaning() -> None:
    assert parse("(CDC == GOOD and ECL == GOOD) and TOP == GOOD") == parse(
        "CDC == GOOD and (ECL == GOOD and TOP == GOOD)"
    )
    assert parse("CDC in (GOOD)") == parse("CDC == GOOD")
    assert parse("CDC in (RECOVERABLE, GOOD)") == parse("CDC in (GOOD, RECOVERABLE)")
    assert str(parse("CDC in (RECOVERABLE, GOOD, GOOD)")) == "CDC in (GOOD, RECOVERABLE)"
    assert str(parse("all except (KLM, PXD) == GOOD")) == "all except (PXD, KLM) == GOOD"
    assert str(parse("exp in (12)")) == "exp == 12"
    assert str(parse("exp not in (12, 3)")) == "exp not in (3, 12)"
    assert str(parse("lumi_pb > 0.0")) == "lumi_pb > 0"
    assert str(parse("lumi_pb > 2.50")) == "lumi_pb > 2.5"
    assert str(parse("PXD not in detectors")) == "not PXD in detectors"
    assert parse("CDC != BAD") != parse("not CDC == BAD")  # differ on runs without CDC
    e = parse("CDC == GOOD")
    assert (e & parse("ECL == GOOD") | ~parse("magnet_on")) == parse(
        "CDC == GOOD and ECL == GOOD or not magnet_on"
    )
    assert repr(e) == "Expression('CDC == GOOD')"
    assert isinstance(e, Expression)


# --------------------------------------------------------------------------------------------
# errors: every message, with its column


ERRORS = [
    # (text, column, expected, further text in the message)
    ("", 1, "an expression", "found the end of the expression"),
    ("CDC == GOOD @", 13, "a name, number, quoted value or operator", "found '@'"),
    ("CDC == GOOD && magnet_on", 13, "a name, number", "found '&&'; write 'and'"),
    ("CDC == GOOD & magnet_on", 13, "a name, number", "write 'and'"),
    ("CDC == GOOD || magnet_on", 13, "a name, number", "write 'or'"),
    ("CDC == GOOD | magnet_on", 13, "a name, number", "write 'or'"),
    ("!magnet_on", 1, "a name, number", "write 'not'"),
    ("CDC = GOOD", 5, "a name, number", "write '=='"),
    ("beam_energy == 'No Beam", 16, "a closing quote (')", "an unterminated string"),
    ("CDC == GOOD ECL == GOOD", 13, "'and', 'or' or the end of the expression", "found 'ECL'"),
    ("(CDC == GOOD", 13, "')' closing the '(' at column 1", "found the end"),
    (
        "CDC == GOOD and )",
        17,
        "a test (a detector, all, any, a run property or a preset) or '('",
        "",
    ),
    (
        "cdc == GOOD",
        1,
        "a detector, 'all', 'any', a run property or a preset",
        "(did you mean CDC?)",
    ),
    ("lumi > 0", 1, "a detector", "unknown name 'lumi' (did you mean lumi_pb?)"),
    ("magnet == 1", 1, "a detector", "presets: all_good, good_or_recoverable"),
    ("all except (XYZ) == GOOD", 13, "a detector after 'except ('", "unknown detector 'XYZ'"),
    ("all except (PXD, cdc) == GOOD", 18, "a detector after ','", "(did you mean CDC?)"),
    ("all except (PXD == GOOD", 17, "')' or ',' in the list of detectors", "found '=='"),
    ("all except 5 == GOOD", 12, "a detector or '(' after 'except'", "detectors: PXD, SVD, CDC"),
    ("CDC == GOD", 8, "a flag", "unknown flag 'GOD' (did you mean GOOD?); flags: GOOD, BAD"),
    ("CDC == (GOOD)", 8, "a flag", "flags: GOOD, BAD, RECOVERABLE, NOTSET, EXCLUDED"),
    ("CDC GOOD", 5, "'==', '!=', 'in' or 'not in' after CDC", "found 'GOOD'"),
    ("CDC < GOOD", 5, "'==', '!=', 'in' or 'not in' after CDC", "flags are not ordered"),
    ("all >= GOOD", 5, "'==', '!=', 'in' or 'not in' after 'all'", "flags are not ordered"),
    ("CDC in GOOD", 8, "'(' before the list of flags", "found 'GOOD'"),
    ("CDC in (GOOD BAD)", 14, "')' or ',' in the list of flags", "found 'BAD'"),
    ("run >= physics", 8, "a number for run", "found 'physics'"),
    ("run >= 1.5", 8, "an integer for run", "found '1.5'"),
    ("run < 1e3", 7, "an integer for run", "found '1e3'"),
    ("duration < 1e999", 12, "a finite number for duration", "found '1e999'"),
    ("run_type == physic", 13, "a run_type value", "run_type values: physics, cosmic, beam, debug"),
    ("beam_energy == No Beam", 16, "a beam_energy value", "quote values with spaces ('No Beam')"),
    ("run_type < physics", 10, "'==', '!=', 'in' or 'not in' after run_type", "is not ordered"),
    ("run_type physics", 10, "'==', '!=', 'in' or 'not in' after run_type", "found 'physics'"),
    ("run 5", 5, "a comparison, 'in' or 'not in' after run", "found '5'"),
    ("run_type in physics", 13, "'(' before the list of run_type values", ""),
    ("run in 5", 9, "'..' in the range run in 5..", "found the end"),
    ("run in 5..1", 11, "an upper bound >= 5", "ranges are low..high"),
    ("exp in (1, 2", 13, "')' or ',' in the list of exp values", "found the end"),
    (
        "magnet_on == true",
        11,
        "'and', 'or', ')' or the end",
        "write 'magnet_on' or 'not magnet_on'",
    ),
    ("magnet_on in (1)", 11, "'and', 'or', ')' or the end", "magnet_on is a yes/no property"),
]


@pytest.mark.parametrize(("text", "column", "expected", "more"), ERRORS)
def test_error_messages(text: str, column: int, expected: str, more: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.position == column - 1
    assert err.text == text
    message = str(err)
    assert message.startswith(f"good-run-list expression, column {column}: expected {expected}")
    assert more in message
    lines = message.splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * (column - 1) + "^"


def test_nesting_limit() -> None:
    deep = "(" * 64 + "magnet_on" + ")" * 64
    assert parse(deep) == parse("magnet_on")
    assert str(parse("not " * 64 + "magnet_on")) == "not " * 64 + "magnet_on"
    with pytest.raises(ExpressionError, match="column 65: expected a simpler expression, found"):
        parse("(" * 65 + "magnet_on" + ")" * 65)
    with pytest.raises(ExpressionError, match="more than 64 nested 'not' or '\\(' in a row"):
        parse("(" * 65 + "magnet_on" + ")" * 65)
    with pytest.raises(ExpressionError, match="column 257: expected a simpler expression"):
        parse("not " * 65 + "magnet_on")
    # the limit counts nesting, not length
    assert len(str(parse(" and ".join(["(not magnet_on)"] * 500)))) == 500 * 13 + 499 * 5


def test_unknown_name_lists_every_known_name() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("KLMM == GOOD")
    message = str(info.value)
    for name in (*DETECTORS, "run_type", "beam_energy", "duration", "magnet_on", *PRESETS):
        assert name in message
    assert "did you mean KLM" in message


def test_preset_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRESETS, "loop_a", "CDC == GOOD and loop_b")
    monkeypatch.setitem(PRESETS, "loop_b", "loop_a")
    with pytest.raises(ExpressionError, match="cycle: loop_a -> loop_b -> loop_a"):
        parse("loop_a")
    monkeypatch.setitem(PRESETS, "broken", "CDC == GOD")
    with pytest.raises(ExpressionError, match=r"preset 'broken' is invalid: .*unknown flag 'GOD'"):
        parse("magnet_on and broken")
    with pytest.raises(ConfigError, match="expression is text, got int"):
        parse(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# good-run lists and set operations


def random_list(rng: np.random.Generator, runs: list[Run], name: str) -> GoodRunList:
    chosen = [r for r in runs if rng.random() < 0.5]
    return GoodRunList(name, name, tuple(GRLRun(r.exp, r.run, r.lumi_pb) for r in chosen))


def test_set_operations_against_python_sets(registry: RunRegistry) -> None:
    rng = np.random.default_rng(3)
    runs = list(registry)[:400]
    lumi = {r.key: r.lumi_pb for r in runs}
    for _ in range(50):
        a, b, c = (random_list(rng, runs, n) for n in "abc")
        sa, sb, sc = a.keys, b.keys, c.keys
        for grl, want in ((a & b, sa & sb), (a | b, sa | sb), (a - b, sa - sb)):
            assert grl.keys == want
            assert len(grl) == len(want)
            assert [r.key for r in grl] == sorted(want)
            assert grl.lumi_pb == pytest.approx(math.fsum(lumi[k] for k in want), rel=1e-12)
        assert ((a & b) & c).keys == (a & (b & c)).keys == sa & sb & sc
        assert ((a | b) | c).keys == (a | (b | c)).keys == sa | sb | sc
        assert ((a - b) - c).keys == sa - sb - sc
        assert (a - (b | c)).keys == ((a - b) & (a - c)).keys
        # a union counts each run once
        assert (a | b).lumi_pb == pytest.approx(a.lumi_pb + b.lumi_pb - (a & b).lumi_pb, rel=1e-9)
        assert (a | a).lumi_pb == pytest.approx(a.lumi_pb, rel=1e-15)
        assert (a - a).lumi_pb == 0.0
    x = a & b
    assert (x.name, x.expression) == ("a&b", "(a) and (b)")
    assert ((a | b).name, (a | b).expression) == ("a|b", "(a) or (b)")
    assert ((a - b).name, (a - b).expression) == ("a-b", "(a) and not (b)")
    assert (x.version, x.created, x.author) == (None, None, None)


def test_set_operation_expressions_reproduce_the_lists(registry: RunRegistry) -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        a = evaluate(random_expression(rng, 3)[0], registry)
        b = evaluate(random_expression(rng, 3)[0], registry)
        for combined in (a & b, a | b, a - b):
            assert evaluate(combined.expression, registry).keys == combined.keys


def test_lumi_of_runs_in_both_operands_comes_from_the_left() -> None:
    a = GoodRunList("a", "true", (GRLRun(1, 1, 1.0), GRLRun(1, 2, 2.0)))
    b = GoodRunList("b", "true", (GRLRun(1, 2, 20.0), GRLRun(1, 3, 30.0)))
    assert (a | b).runs == (GRLRun(1, 1, 1.0), GRLRun(1, 2, 2.0), GRLRun(1, 3, 30.0))
    assert (b | a).lumi_pb == 51.0
    assert (a & b).lumi_pb == 2.0
    assert (b & a).lumi_pb == 20.0


def test_list_container_behaviour_and_validation() -> None:
    runs = (GRLRun(12, 5, 1.5), GRLRun(3, 9, 2.0), GRLRun(12, 1, 0.25))
    grl = GoodRunList("x", "true", runs)
    assert [r.key for r in grl] == [(3, 9), (12, 1), (12, 5)]
    assert (12, 5) in grl
    assert (12, 6) not in grl
    assert GRLRun(3, 9, 99.0) in grl
    assert run(1, (), {}, exp=12) in grl
    assert len(grl) == 3
    assert grl.lumi_pb == 3.75
    assert grl.keys == {(3, 9), (12, 1), (12, 5)}
    with pytest.raises(ConfigError, match=r"good-run list 'x': run \(12, 5\) appears twice"):
        GoodRunList("x", "true", (*runs, GRLRun(12, 5, 1.0)))
    with pytest.raises(ConfigError, match=r"run \(12, 1\) is given twice"):
        evaluate("true", [run(1, (), {}), run(1, (), {})])


def test_evaluate_names_and_lumi(registry: RunRegistry) -> None:
    grl = evaluate("run_type == physics and beam_energy == 4S", registry, description="4S")
    want = registry.select(run_type="physics", beam_energy="4S")
    assert grl.keys == {r.key for r in want}
    assert grl.lumi_pb == pytest.approx(math.fsum(r.lumi_pb for r in want), rel=1e-15)
    assert grl.name == grl.expression == "run_type == physics and beam_energy == 4S"
    assert grl.description == "4S"
    same = evaluate(parse("Run_Type == physics AND beam_energy == 4s"), registry, name="phys")
    assert (same.name, same.keys, same.expression) == ("phys", grl.keys, grl.expression)
    assert evaluate("false", registry).runs == ()
    assert evaluate("false", registry).lumi_pb == 0.0


# --------------------------------------------------------------------------------------------
# exports


def test_json_round_trip_is_exact(registry: RunRegistry) -> None:
    grl = evaluate("good_or_recoverable", registry)
    stored = GoodRunList(
        grl.name,
        grl.expression,
        (*grl.runs, GRLRun(99, 1, 0.1 + 0.2)),
        version=3,
        created=datetime(2026, 11, 30, 17, 5, 3, 123456, tzinfo=UTC),
        author="dqm",
        description="for the winter conferences",
    )
    d = stored.to_json()
    back = GoodRunList.from_json(json.loads(json.dumps(d)))
    assert back == stored
    assert back.runs[-1].lumi_pb == 0.1 + 0.2
    assert set(d) >= {"name", "expression", "version", "created", "author", "lumi_pb"}
    assert d["created"] == "2026-11-30T17:05:03.123456+00:00"
    assert d["lumi_pb"] == stored.lumi_pb
    exps = d["experiments"]
    assert list(exps) == ["3", "7", "12", "99"]
    for exp, e in exps.items():
        mine = [r for r in stored if r.exp == int(exp)]
        assert e["runs"] == [r.run for r in mine]
        assert e["lumi_pb"] == pytest.approx(sum(r.lumi_pb for r in mine), rel=1e-12)
    other_tz = GoodRunList(
        "t", "true", (), created=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=9)))
    )
    assert GoodRunList.from_json(json.loads(json.dumps(other_tz.to_json()))) == other_tz
    empty = GoodRunList("e", "false", ())
    assert GoodRunList.from_json(empty.to_json()) == empty


def test_from_json_errors() -> None:
    d = GoodRunList("g", "true", (GRLRun(1, 1, 1.0), GRLRun(1, 2, 2.0))).to_json()
    for key in ("experiments", "name", "lumi_pb"):
        bad = {k: v for k, v in d.items() if k != key}
        with pytest.raises(ConfigError, match=f"lacks the key '{key}'"):
            GoodRunList.from_json(bad)
    with pytest.raises(ConfigError, match="experiment 1 has 2 runs but 1 luminosities"):
        GoodRunList.from_json({**d, "experiments": {"1": {"runs": [1, 2], "run_lumi_pb": [1.0]}}})
    with pytest.raises(ConfigError, match=r"lumi_pb 4\.0 differs from the sum of its runs 3\.0"):
        GoodRunList.from_json({**d, "lumi_pb": 4.0})
    with pytest.raises(ConfigError, match="malformed JSON"):
        GoodRunList.from_json({**d, "experiments": {"1": {"runs": ["a"], "run_lumi_pb": [1.0]}}})
    with pytest.raises(ConfigError, match="malformed JSON"):
        GoodRunList.from_json({**d, "created": "yesterday"})


def test_cms_json_ranges() -> None:
    keys = (
        [(12, r) for r in (1, 2, 3, 5, 7, 8, 10)] + [(3, 10)] + [(14, r) for r in (100, 101, 102)]
    )
    grl = GoodRunList("g", "true", tuple(GRLRun(e, r, 1.0) for e, r in keys))
    cms = grl.to_cms_json()
    assert cms == {"3": [[10, 10]], "12": [[1, 3], [5, 5], [7, 8], [10, 10]], "14": [[100, 102]]}
    assert list(cms) == ["3", "12", "14"]
    assert json.loads(json.dumps(cms)) == cms
    back = GoodRunList.from_cms_json(cms)
    assert back.keys == grl.keys
    assert back.lumi_pb == 0.0  # the format carries no luminosity
    assert back.name == "cms-json"
    # its expression selects exactly these runs
    everything = [run(r, (), {}, exp=e) for e in (3, 12, 14) for r in range(110)]
    assert evaluate(back.expression, everything).keys == grl.keys
    assert back.expression == runs_expression(grl.keys) == str(parse(back.expression))
    assert back.expression == (
        "exp == 3 and run == 10 or exp == 12 and (run in 1..3 or run in 7..8 or run in (5, 10))"
        " or exp == 14 and run in 100..102"
    )
    assert runs_expression([]) == "false"
    assert GoodRunList("e", "false", ()).to_cms_json() == {}


def test_cms_json_random_round_trip_with_lumi_lookup(registry: RunRegistry) -> None:
    rng = np.random.default_rng(5)
    runs = list(registry)
    lumi = {r.key: r.lumi_pb for r in runs}
    for _ in range(25):
        grl = random_list(rng, runs, "r")
        cms = grl.to_cms_json()
        for exp, ranges in cms.items():
            flat = [k for a, b in ranges for k in range(a, b + 1)]
            assert flat == sorted(r.run for r in grl if r.exp == int(exp))
            # maximal: consecutive ranges are separated by a gap
            assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(ranges))
        back = GoodRunList.from_cms_json(cms, registry, name="r")
        assert back.runs == grl.runs
        assert GoodRunList.from_cms_json(cms, lumi).lumi_pb == grl.lumi_pb
        assert evaluate(back.expression, registry).keys == back.keys
        assert str(parse(back.expression)) == back.expression


def test_cms_json_errors_and_overlaps() -> None:
    overlapping = GoodRunList.from_cms_json({"1": [[1, 5], [3, 8]], "2": [[4, 4]]})
    assert overlapping.to_cms_json() == {"1": [[1, 8]], "2": [[4, 4]]}
    for bad, what in (
        ({"x": [[1, 2]]}, "experiment 'x'"),
        ({"1": [[5, 1]]}, "range \\[5, 1\\] ends before it starts"),
        ({"1": [[1, 2, 3]]}, "experiment '1'"),
        ({"1": [["1", 2]]}, "'1' is not an integer"),
        ({"1": [[1, 10**9]]}, "spans 1000000 runs or more"),
        ({"1": 5}, "expected a list of \\[first, last\\] run ranges"),
    ):
        with pytest.raises(ConfigError, match=what):
            GoodRunList.from_cms_json(bad)
    with pytest.raises(ConfigError, match="expected an object, got list"):
        GoodRunList.from_cms_json([[1, 2]])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"no luminosity for run \(1, 3\) in the lookup"):
        GoodRunList.from_cms_json({"1": [[2, 3]]}, {(1, 2): 1.0})


def test_csv_reads_back_with_the_csv_module(registry: RunRegistry) -> None:
    grl = evaluate("physics_4s_good_or_recoverable", registry)
    assert len(grl) > 50
    rows = list(csv.reader(io.StringIO(grl.to_csv())))
    assert rows[0] == ["exp", "run", "recorded_lumi_pb"]  # says which luminosity it sums
    assert all(len(row) == 3 for row in rows)
    body, total = rows[1:-1], rows[-1]
    assert [GRLRun(int(e), int(r), float(x)) for e, r, x in body] == list(grl.runs)
    assert total[:2] == ["TOTAL", ""]
    assert float(total[2]) == grl.lumi_pb
    assert float(total[2]) == pytest.approx(sum(float(x) for _, _, x in body), rel=1e-12)
    # DictReader: the total is the row whose exp is TOTAL
    dict_rows = list(csv.DictReader(io.StringIO(grl.to_csv())))
    assert [row["exp"] for row in dict_rows].count("TOTAL") == 1
    empty = list(csv.reader(io.StringIO(GoodRunList("e", "false", ()).to_csv())))
    assert empty == [["exp", "run", "recorded_lumi_pb"], ["TOTAL", "", "0.0"]]


# --------------------------------------------------------------------------------------------
# warnings: runs selected with uncertified detectors (issue 19)

ALL7 = tuple(DETECTORS)


def test_an_expression_selecting_uncertified_runs_warns() -> None:
    good = dict.fromkeys(ALL7, "GOOD")
    runs = [
        run(1, ALL7, good),
        run(2, ALL7, {**good, "PXD": "NOTSET", "SVD": "NOTSET"}),
        run(3, ALL7, {d: f for d, f in good.items() if d != "TOP"}),  # TOP never flagged
        run(4, ALL7, {**good, "CDC": "BAD"}),
        run(5, ALL7[1:], dict.fromkeys(ALL7[1:], "GOOD")),  # no PXD: nothing to certify
        run(6, ALL7, {**good, "CDC": "NOTSET"}),
    ]
    # reads CDC only: CDC NOTSET would warn, the others are not its business
    assert evaluate("CDC == GOOD", runs).warnings == ()
    lenient = evaluate("CDC != BAD", runs)
    assert [r.run for r in lenient] == [1, 2, 3, 5, 6]
    assert lenient.warnings == (GRLWarning(12, 6, ("CDC",)),)
    # reads no flag: vouches for whole runs, so every NOTSET detector of a selected run warns
    whole = evaluate("run in 1..5", runs)
    assert whole.warnings == (
        GRLWarning(12, 2, ("PXD", "SVD")),
        GRLWarning(12, 3, ("TOP",)),
    )
    assert [str(w) for w in whole.warnings] == [
        "run (12, 2): PXD, SVD NOTSET (uncertified)",
        "run (12, 3): TOP NOTSET (uncertified)",
    ]
    # `all except (PXD)` reads the others: run 2's SVD warns, its PXD does not
    assert evaluate("all except (PXD) in (GOOD, NOTSET)", runs).warnings == (
        GRLWarning(12, 2, ("SVD",)),
        GRLWarning(12, 3, ("TOP",)),
        GRLWarning(12, 6, ("CDC",)),
    )
    # a fully certified selection has none
    assert evaluate("all == GOOD", runs).warnings == ()


def test_good_over_an_automatic_error_warns_with_its_reason() -> None:
    """A detector certified GOOD over an automatic ERROR (a confirmed override) is named with
    the reason from the history, for the detectors the expression vouches for, while GOOD."""
    good = dict.fromkeys(ALL7, "GOOD")
    runs = [
        run(1, ALL7, good),
        run(2, ALL7, {**good, "SVD": "NOTSET"}),
        run(3, ALL7, {**good, "ECL": "BAD"}),  # overridden since: BAD now
    ]
    why = "GOOD over automatic status ERROR, confirmed by carl: 'noise'"
    overrides = {(12, 1): {"ECL": why}, (12, 2): {"CDC": why}, (12, 3): {"ECL": why}}
    whole = evaluate("run in 1..3", runs, overrides=overrides)
    assert whole.warnings == (
        GRLWarning(12, 1, (), (("ECL", why),)),
        GRLWarning(12, 2, ("SVD",), (("CDC", why),)),
    )
    assert [str(w) for w in whole.warnings] == [
        f"run (12, 1): ECL {why}",
        f"run (12, 2): SVD NOTSET (uncertified); CDC {why}",
    ]
    # an expression reading the ECL flag only vouches for ECL
    assert evaluate("ECL == GOOD", runs, overrides=overrides).warnings == (
        GRLWarning(12, 1, (), (("ECL", why),)),
    )
    # kept through JSON (older lists, without overrides, read back as before)
    doc = json.loads(json.dumps(whole.to_json()))
    assert doc["warnings"][0] == {"exp": 12, "run": 1, "detectors": [], "overrides": [["ECL", why]]}
    assert GoodRunList.from_json(doc).warnings == whole.warnings


def test_warnings_survive_json_and_set_operations() -> None:
    runs = [
        run(1, ALL7, {"CDC": "GOOD"}),
        run(2, ALL7, dict.fromkeys(ALL7, "GOOD")),
        run(3, ALL7, {}),
    ]
    a = evaluate("run in 1..3", runs, name="a")
    assert [w.run for w in a.warnings] == [1, 3]
    doc = a.to_json()
    assert doc["warnings"] == [
        {"exp": 12, "run": 1, "detectors": [d for d in ALL7 if d != "CDC"]},
        {"exp": 12, "run": 3, "detectors": list(ALL7)},
    ]
    assert GoodRunList.from_json(json.loads(json.dumps(doc))) == a
    # a list stored before warnings existed reads back without any
    old = {k: v for k, v in doc.items() if k not in ("warnings", "lumi")}
    assert GoodRunList.from_json(old).warnings == ()
    b = evaluate("run == 2", runs, name="b")
    assert [w.run for w in (a - b).warnings] == [1, 3]
    assert (a & b).warnings == ()
    assert [w.run for w in (b | a).warnings] == [1, 3]


def test_exports_say_the_luminosity_is_the_recorded_one() -> None:
    grl = evaluate("true", [run(1, ALL7, {}, lumi_pb=2.5), run(2, ALL7, {}, lumi_pb=1.25)])
    assert LUMINOSITY == "recorded (run registry)"
    assert grl.to_json()["lumi"] == "recorded (run registry)"
    assert grl.to_json()["lumi_pb"] == grl.lumi_pb == 3.75
    assert grl.to_csv().splitlines()[0] == "exp,run,recorded_lumi_pb"


# --------------------------------------------------------------------------------------------
# diff


def test_diff_of_two_lists() -> None:
    old = GoodRunList("g", "run in 1..4", tuple(GRLRun(12, r, 10.0 * r) for r in (1, 2, 3, 4)))
    new = GoodRunList(
        "g",
        "run in 2..6",
        (GRLRun(12, 2, 20.0), GRLRun(12, 3, 33.0), *(GRLRun(12, r, 10.0 * r) for r in (4, 5, 6))),
        version=2,
    )
    d = diff(old, new)
    assert [r.run for r in d.added] == [5, 6]
    assert [r.run for r in d.removed] == [1]
    assert d.changed == ((GRLRun(12, 3, 30.0), GRLRun(12, 3, 33.0)),)
    assert d.lumi_added_pb == 110.0
    assert d.lumi_removed_pb == 10.0
    assert d.lumi_change_pb == pytest.approx(new.lumi_pb - old.lumi_pb) == 103.0
    assert d.expression_changed
    assert d
    assert str(d) == (
        "g -> g v2: +2 runs (110 pb^-1), -1 runs (10 pb^-1), 1 with another luminosity; "
        "recorded (run registry) luminosity 100 -> 203 pb^-1 (+103)"
    )
    same = diff(new, new)
    assert not same
    assert (same.added, same.removed, same.changed, same.lumi_change_pb) == ((), (), (), 0.0)
