"""Skim selections match the seed's HLT table on constructed events; the cut parser is strict."""

import numpy as np
import pytest

from b2calib.exceptions import SkimDefinitionError
from b2calib.skims import SKIMS, TRIGGER_VARIABLES, Cut, get_skim, retention

NEUTRAL = {
    "nTrkAllLE": 2,
    "nTracksLE": 2,
    "nEidLE": 0,
    "P1CMSBhabhaLE": 5.0,
    "P2CMSBhabhaLE": 5.0,
    "P1OEbeamCMSBhabhaLE": 0.95,
    "P2OEbeamCMSBhabhaLE": 0.95,
    "EC1CMSLE": 0.2,
    "EC2CMSLE": 0.2,
    "EC12CMSLE": 0.4,
    "EtotLE": 0.5,
    "nClustersLE": 2,
    "AcolCMSLE": 2.0,
    "Bhabha2Trk": 0,
    "GG": 0,
}


def event(**kw: float) -> dict[str, np.ndarray]:
    d = {**NEUTRAL, **kw}
    assert set(d) == set(TRIGGER_VARIABLES)
    return {k: np.array([v], dtype=float) for k, v in d.items()}


def passes(skim: str, **kw: float) -> bool:
    return bool(get_skim(skim).select(event(**kw))[0])


# (skim, event, expected) rows from the seed table "HLT skims"
SEED_CASES = [
    ("hlt_bhabha", dict(Bhabha2Trk=1), True),
    ("hlt_bhabha", dict(Bhabha2Trk=0), False),
    ("hlt_hadron", dict(nTracksLE=3, Bhabha2Trk=0), True),
    ("hlt_hadron", dict(nTracksLE=5, Bhabha2Trk=1), False),
    ("hlt_hadron", dict(nTracksLE=2, Bhabha2Trk=0), False),
    ("hlt_gamma_gamma", dict(nTracksLE=0, EC12CMSLE=9.0, EC1CMSLE=5.0), True),
    ("hlt_gamma_gamma", dict(nTracksLE=1, EC12CMSLE=9.0, EC1CMSLE=5.0), True),
    ("hlt_gamma_gamma", dict(nTracksLE=2, EC12CMSLE=9.0, EC1CMSLE=5.0), False),
    ("hlt_gamma_gamma", dict(nTracksLE=0, nEidLE=1, EC12CMSLE=9.0, EC1CMSLE=5.0), False),
    ("hlt_gamma_gamma", dict(nTracksLE=0, EC12CMSLE=4.0, EC1CMSLE=3.0), False),  # EC12 > 4 strict
    ("hlt_gamma_gamma", dict(nTracksLE=0, EC12CMSLE=5.0, EC1CMSLE=2.0), False),  # EC1 > 2 strict
    ("hlt_mumu_1trk", dict(nTracksLE=1, P1OEbeamCMSBhabhaLE=0.5, EC1CMSLE=0.3), True),
    ("hlt_mumu_1trk", dict(nTracksLE=1, P1OEbeamCMSBhabhaLE=0.1, EC1CMSLE=0.3), False),
    ("hlt_mumu_1trk", dict(nTracksLE=1, P1OEbeamCMSBhabhaLE=0.5, EC1CMSLE=1.0), False),
    ("hlt_mumu_1trk", dict(nTracksLE=1, nEidLE=1, P1OEbeamCMSBhabhaLE=0.5), False),
    ("hlt_mumu_1trk", dict(nTracksLE=2), False),
    ("hlt_mumu_2trk", dict(), True),
    ("hlt_mumu_2trk", dict(AcolCMSLE=15.0), False),
    ("hlt_mumu_2trk", dict(P2OEbeamCMSBhabhaLE=0.3), False),
    ("hlt_mumu_2trk", dict(nEidLE=1), False),
    ("hlt_tau_tau", dict(P1OEbeamCMSBhabhaLE=0.5, AcolCMSLE=40.0), True),
    ("hlt_tau_tau", dict(P1OEbeamCMSBhabhaLE=0.5, AcolCMSLE=40.0, nTracksLE=5), False),
    ("hlt_single_photon", dict(nTracksLE=0, EC1CMSLE=3.0, EC2CMSLE=0.0), True),
    ("hlt_single_photon", dict(nTracksLE=0, EC1CMSLE=3.0, EC2CMSLE=3.0), False),
    ("cosmic", dict(nTrkAllLE=1, nTracksLE=0), True),
    ("cosmic", dict(nTrkAllLE=0, nTracksLE=0), False),
]


@pytest.mark.parametrize(("skim", "values", "expected"), SEED_CASES)
def test_seed_table(skim: str, values: dict[str, float], expected: bool) -> None:
    assert passes(skim, **values) is expected


def test_seed_cut_strings_are_the_seeds() -> None:
    assert SKIMS["hlt_hadron"].cut.text == "[[nTracksLE >= 3] and [Bhabha2Trk == 0]]"
    assert SKIMS["hlt_bhabha"].cut.text == "[Bhabha2Trk == 1]"
    assert SKIMS["hlt_gamma_gamma"].cut.text == (
        "[[nTracksLE <= 1] and [[nEidLE == 0] and [[EC12CMSLE > 4] and [EC1CMSLE > 2]]]]"
    )


def test_parser_logic_and_ranges() -> None:
    data = {"nTracksLE": np.array([0, 1, 2, 3, 4]), "EC1CMSLE": np.array([0, 1, 2, 3, 4])}
    assert Cut("[1 <= nTracksLE < 3]")(data).tolist() == [False, True, True, False, False]
    assert Cut("not [nTracksLE == 2]")(data).tolist() == [True, True, False, True, True]
    assert Cut("[nTracksLE == 0] or [EC1CMSLE >= 4]")(data).tolist() == [
        True,
        False,
        False,
        False,
        True,
    ]
    # and binds tighter than or
    assert Cut("[nTracksLE == 0] or [nTracksLE == 4] and [EC1CMSLE == 0]")(data).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert Cut("[nTracksLE > 1.5e0]").variables == frozenset({"nTracksLE"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nTracksLE == 1", "end of cut"),
        ("[nTracksLE == 1]]", "unexpected"),
        ("[nTracksLE 1]", "comparison"),
        ("[nTrack == 1]", "unknown trigger variable"),
        ("[nTracksLE == 1] and", "end of cut"),
        ("[nTracksLE == 1] xor [EC1CMSLE > 1]", "cannot parse|unexpected"),
        ("__import__('os')", "cannot parse|comparison"),
    ],
)
def test_parser_rejects(text: str, message: str) -> None:
    with pytest.raises(SkimDefinitionError, match=message):
        Cut(text)


def test_unknown_skim_and_missing_variable() -> None:
    with pytest.raises(SkimDefinitionError, match="unknown skim 'hlt_foo'"):
        get_skim("hlt_foo")
    with pytest.raises(SkimDefinitionError, match="missing trigger variable"):
        get_skim("hlt_hadron").select({"nTracksLE": np.array([3])})


def test_retention() -> None:
    data = {k: np.concatenate([v, v]) for k, v in event(Bhabha2Trk=1).items()}
    data["Bhabha2Trk"][1] = 0
    r = retention(data, ["hlt_bhabha", "hlt_gamma_gamma"])
    assert r == {"hlt_bhabha": 0.5, "hlt_gamma_gamma": 0.0}
