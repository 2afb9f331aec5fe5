"""The public API is deliberate: adding or removing a name must change this test."""

import b2calib
import b2calib.sim


def test_top_level_names() -> None:
    assert sorted(dir(b2calib)) == sorted(b2calib.__all__)
    assert b2calib.__all__ == [
        "SKIMS",
        "B2CalibError",
        "Bucket",
        "ChannelStatus",
        "FileFormatError",
        "FileMetadata",
        "LocalDatabase",
        "MissingBranchError",
        "Payload",
        "PayloadError",
        "Run",
        "RunRegistry",
        "SkimFile",
        "__version__",
        "geometry",
        "get_skim",
        "make_buckets",
        "open_skim",
        "read_metadata",
        "size_report",
    ]


def test_sim_names() -> None:
    assert b2calib.sim.__all__ == [
        "INTERVENTIONS",
        "PROCESSES",
        "PROCESS_ID",
        "Conditions",
        "SimConfig",
        "SimulationResult",
        "conditions_for_run",
        "cross_section_nb",
        "generate_runs",
        "prescales",
        "simulate",
        "skim_path",
        "truth_payloads",
    ]
    for name in b2calib.sim.__all__:
        assert hasattr(b2calib.sim, name)


def test_typed_package_marker() -> None:
    from importlib.resources import files

    assert files("b2calib").joinpath("py.typed").is_file()


def test_engine_names() -> None:
    import b2calib.engine

    assert b2calib.engine.__all__ == [
        "ChannelValueCollector",
        "CollectResult",
        "Collector",
        "Dataset",
        "FileRef",
        "RunOutput",
        "SkippedFile",
        "ValueCollector",
        "WorkItem",
        "collect",
        "default_cache_dir",
        "plan",
    ]


def test_fit_names() -> None:
    import b2calib.fit

    assert b2calib.fit.__all__ == sorted(b2calib.fit.__all__, key=lambda s: (not s[0].isupper(), s))
    assert set(b2calib.fit.__all__) == {
        "ChannelFits",
        "FitResult",
        "Shape",
        "Sum",
        "bifurcated_gauss",
        "chebyshev_poly",
        "constant",
        "crystal_ball",
        "double_crystal_ball",
        "double_gauss",
        "exponential",
        "fit_channels",
        "fit_hist",
        "fit_unbinned",
        "gauss",
        "landau_gauss",
        "least_squares",
        "novosibirsk",
        "plot_fit",
        "polynomial",
        "voigt",
    }


def test_conditions_names() -> None:
    import b2calib.conditions

    assert sorted(dir(b2calib.conditions)) == sorted(b2calib.conditions.__all__)
    assert b2calib.conditions.__all__ == [
        "ALLOWED_MOVES",
        "ALL_RUNS",
        "DB_ENV",
        "STATES",
        "ChannelStatus",
        "ConditionsDB",
        "Diff",
        "GlobalTag",
        "HistoryEntry",
        "IoV",
        "IovEntry",
        "LocalDatabase",
        "LocalDbEntry",
        "Payload",
        "PayloadInfo",
        "default_url",
    ]


def test_calibration_names() -> None:
    import b2calib.calibration

    assert sorted(dir(b2calib.calibration)) == sorted(b2calib.calibration.__all__)
    assert b2calib.calibration.__all__ == [
        "Algorithm",
        "AlgorithmInput",
        "AlgorithmResult",
        "AlgorithmStatus",
        "Calibration",
        "CalibrationReport",
        "CollectorInput",
        "Constants",
        "Diagnostics",
        "Execution",
        "ExecutionReport",
        "SequentialBoundaries",
        "SequentialRunByRun",
        "SimpleRunByRun",
        "SingleIOV",
        "Strategy",
        "calibrations",
        "dependency_order",
        "get_calibration",
        "register",
        "run_calibrations",
    ]
