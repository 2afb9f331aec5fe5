"""The public API is deliberate: adding or removing a name must change this test."""

import pytest

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
        "generate_runs",
        "prescales",
        "simulate",
        "skim_path",
        "truth_payloads",
    ]
    for name in b2calib.sim.__all__:
        assert hasattr(b2calib.sim, name)


def test_physics_names() -> None:
    import b2calib.physics

    assert sorted(dir(b2calib.physics)) == sorted(b2calib.physics.__all__)
    assert b2calib.physics.__all__ == [
        "ALPHA",
        "COS_MAX",
        "Y4S_ECMS_GEV",
        "cross_section_nb",
        "dsigma_dcos_nb",
        "mass",
        "masses",
    ]


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
        "NonFiniteCounts",
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
        "PAYLOAD_TYPES",
        "RUNNING_UPDATE_MODES",
        "STATES",
        "ChannelStatus",
        "ConditionsDB",
        "Diff",
        "GlobalTag",
        "HistoryEntry",
        "IoV",
        "IovEntry",
        "IovTable",
        "LocalDatabase",
        "LocalDbEntry",
        "Payload",
        "PayloadFile",
        "PayloadInfo",
        "PayloadType",
        "RunAxis",
        "RunningUpdate",
        "StackEntry",
        "StackLookup",
        "TagSize",
        "Verification",
        "check_payload",
    ]
    import b2calib.conditions.eventdep
    import b2calib.conditions.names
    import b2calib.conditions.payloadtypes
    import b2calib.conditions.runningupdate

    for module, names in (
        (
            b2calib.conditions.eventdep,
            [
                "EVENT_DEPENDENCY",
                "TIME_KEYS",
                "TimeDependentPayloadError",
                "at_time",
                "interval_index",
                "intervals",
                "is_time_dependent",
                "run_level_error",
                "run_mean",
                "time_dependent",
                "values_at",
            ],
        ),
        (b2calib.conditions.names, ["NAME_LENGTH", "check_globaltag_name", "check_payload_name"]),
        (
            b2calib.conditions.payloadtypes,
            ["DEDX_COS_BINS", "PAYLOAD_TYPES", "PayloadType", "check_payload"],
        ),
        (
            b2calib.conditions.runningupdate,
            ["RUNNING_UPDATE_MODES", "Plan", "RunningUpdate", "check_mode", "plan"],
        ),
    ):
        assert sorted(dir(module)) == sorted(module.__all__)
        assert module.__all__ == names


def test_db_names() -> None:
    import b2calib.db

    assert sorted(dir(b2calib.db)) == sorted(b2calib.db.__all__)
    assert b2calib.db.__all__ == [
        "DB_ENV",
        "MIGRATIONS",
        "UTC_TIME",
        "Database",
        "as_utc",
        "default_url",
        "history",
        "make_engine",
        "metadata",
        "now",
        "upgrade",
        "writing",
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
        "ChannelView",
        "CollectorInput",
        "Constants",
        "CountingView",
        "Diagnostics",
        "Execution",
        "ExecutionReport",
        "FitView",
        "FitViewError",
        "GaussPeak",
        "HistogramFit",
        "Job",
        "JobPlan",
        "JobStore",
        "NoChannelFit",
        "NovosibirskPeak",
        "PayloadComparison",
        "PayloadValidation",
        "ProgressEvent",
        "SequentialBoundaries",
        "SequentialRunByRun",
        "SimpleRunByRun",
        "SingleIOV",
        "Strategy",
        "ValidationContext",
        "ValidationRecord",
        "ValidationResult",
        "Validator",
        "Verdict",
        "ViewContext",
        "calibrations",
        "channel_counts",
        "dependency_order",
        "fit_view",
        "get_calibration",
        "no_ok_channel",
        "plan_jobs",
        "register",
        "run_calibrations",
        "validate_job",
    ]
    import b2calib.calibration.toolkit

    assert sorted(dir(b2calib.calibration.toolkit)) == sorted(b2calib.calibration.toolkit.__all__)
    assert b2calib.calibration.toolkit.__all__ == [
        "NotEnoughData",
        "SplitTest",
        "binomial_interval",
        "channel_payload",
        "find_steps",
        "guarded",
        "require",
        "status_counts",
        "weighted_mean_split",
    ]
    import b2calib.calibration.intervals as intervals

    assert sorted(dir(intervals)) == sorted(intervals.__all__)
    assert intervals.__all__ == [
        "ATOMS_HISTOGRAM",
        "ATOM_NS",
        "ATOM_SECONDS",
        "ATOM_SUBBINS",
        "BEAMSPOT_INNER_LOSS",
        "BEAMSPOT_OUTER_LOSS",
        "BOOSTVECTOR_INNER_LOSS",
        "BOOSTVECTOR_OUTER_LOSS",
        "ECMS_INNER_LOSS",
        "ECMS_OUTER_LOSS",
        "LOSS_VARIABLES",
        "MIN_EVENTS",
        "MIN_RUN_SECONDS",
        "MIN_SUB_EVENTS",
        "Atom",
        "IntervalAlgorithm",
        "IntervalFit",
        "LossExpression",
        "OuterInterval",
        "SubInterval",
        "atom_axis",
        "atom_index",
        "atom_times_hist",
        "atoms_from_counts",
        "atoms_from_hist",
        "fill_atom_times",
        "fill_from_neighbours",
        "interval_variables",
        "per_atom",
        "split",
        "sum_atoms",
    ]


def test_detector_names() -> None:
    """Each detector calibration module exposes its declarations, algorithms and collectors, and
    the pieces a notebook calls; ``calibrations()`` is the entry point of each package."""
    import importlib

    expected = {
        "b2calib.detectors": ["SYSTEMS", "calibrations", "detector_of", "packages", "qa_parts"],
        "b2calib.detectors.ecl": ["calibrations"],
        "b2calib.detectors.ecl.energy": [
            "DEFAULT_CONFIG", "ECLEnergyAlgorithm", "energy_calibration",
        ],
        "b2calib.detectors.ecl.ee5x5": [
            "CRATE_RATIO_BINS", "EE5X5_PAYLOAD", "ECLee5x5Collector", "solve_ee5x5",
        ],
        "b2calib.detectors.ecl.peaks": [
            "BEAM_PAYLOAD", "ECMS_4S", "GG_BINS", "GG_FIT_RANGE", "GG_PAYLOAD", "MUMU_BINS",
            "MUMU_PAYLOAD", "RING", "ECLPeakCollector", "expected_photon_energy", "fit_peaks",
            "peak_collector", "peak_constants", "run_ecms", "solve_peaks",
        ],
        "b2calib.detectors.ecl.merge": [
            "MERGED_PAYLOAD", "METHOD_BITS", "applied_constants", "applied_errors",
            "merge_methods",
        ],
        "b2calib.detectors.ecl.time": [
            "CRATE_PAYLOAD", "CRYSTAL_PAYLOAD", "ECLTimeAlgorithm", "ECLTimeCollector",
            "measured_crystals", "reexpress", "split_offsets", "time_calibration",
        ],
        "b2calib.detectors.cdc": ["calibrations"],
        "b2calib.detectors.cdc.tracking": [
            "T0_PAYLOAD", "XT_PAYLOAD", "T0Algorithm", "T0ResidualCollector", "XtAlgorithm",
            "XtCollector", "t0_calibration", "xt_calibration", "xt_covariance",
            "xt_inverse", "xt_rows",
        ],
        "b2calib.detectors.cdc.dedx": [
            "COSINE_PAYLOAD", "COS_EDGES", "RUN_GAIN_PAYLOAD", "WIRE_GAIN_PAYLOAD",
            "CosineAlgorithm", "DedxCollector", "RunGainAlgorithm", "WireGainAlgorithm",
            "cosine_calibration", "run_gain_calibration", "wire_gain_calibration",
        ],
        "b2calib.detectors.cdc.views": [
            "compare", "final_diagnostics", "plot_board_fits", "plot_extreme_wires",
            "plot_run_fits", "plot_xt_rows", "status_counts", "xt_difference",
        ],
        "b2calib.detectors.pxd": ["calibrations"],
        "b2calib.detectors.pxd.gain": [
            "GAIN_PAYLOAD", "MIP_MEDIAN_ADU", "N_BINS", "RATIO_BINS", "PXDGainAlgorithm",
            "PXDGainCollector", "bin_keys", "bin_of", "current_gains", "fill_fallbacks",
            "gain_calibration", "histogram_median",
        ],
        "b2calib.detectors.top": ["calibrations"],
        "b2calib.detectors.top.photons": [
            "BOUNDARY_CONFIG", "PDF_CONFIG", "Z_BINS", "PhotonPDF", "Photons", "check_digits",
            "circular_centre", "match_photons", "phase_boundaries", "rf_window",
        ],
        "b2calib.detectors.top.collectors": [
            "CHANNEL_TIME_BINS", "COMMON_TIME_BINS", "DIFF_BINS", "ChannelHitCollector",
            "ChannelTimeCollector", "CommonT0Collector", "ModuleT0Collector", "RunTables",
            "run_tables",
        ],
        "b2calib.detectors.top.channel_mask": [
            "CHANNEL_KEYS", "CHANNEL_MASK", "N_BOARDSTACKS", "ChannelMaskAlgorithm",
            "boardstack_of", "channel_mask_calibration", "clipped_mean", "dead_channels",
            "mask_channels",
        ],
        "b2calib.detectors.top.channel_t0": [
            "CHANNEL_T0", "ChannelT0Algorithm", "applied_channel_t0", "channel_t0_calibration",
        ],
        "b2calib.detectors.top.module_t0": [
            "MODULE_T0", "ModuleT0Algorithm", "applied_module_t0", "module_t0_calibration",
            "module_t0_collector", "solve_module_t0",
        ],
        "b2calib.detectors.top.common_t0": [
            "COMMON_T0", "CommonT0Algorithm", "Unfolded", "common_t0_calibration",
            "common_t0_collector", "unfold_period",
        ],
        "b2calib.detectors.beam": ["calibrations"],
        "b2calib.detectors.beam.dimuons": [
            "DIMUON_BRANCHES", "MUON_MASS", "SELECTION", "Dimuons", "d0_resolution",
            "prepare_selection", "select_dimuons", "z0_resolution",
        ],
        "b2calib.detectors.beam.collectors": [
            "CUTS", "MOMENTS", "N_MOMENTS", "BeamSpotCollector", "ReferenceSpots", "event_moments",
            "moment", "reference_rows",
        ],
        "b2calib.detectors.beam.energy_collectors": [
            "BOOST_MASS_BINS", "MASS_BINS", "MOMENTS", "NOMINAL_BOOST", "RESOLUTION_BINS",
            "RESOLUTION_ECMS", "BoostCollector", "MassCollector", "PairKinematics",
            "pair_kinematics",
        ],
        "b2calib.detectors.beam.boost": [
            "BOOST_VECTOR", "PEAK_HALF_WIDTH_GEV", "BoostFit", "BoostVectorAlgorithm",
            "boost_from_moments", "boostvector_calibration", "peak_bins",
        ],
        "b2calib.detectors.beam.ecms": [
            "COLLISION_MASS", "CORE_HALF_WIDTH_GEV", "EcmsAlgorithm", "EcmsFit", "ecms_calibration",
            "fit_ecms", "resolution_scale",
        ],
        "b2calib.detectors.beam.beamspot": [
            "BEAMSPOT", "RUNS_AFTER", "BeamSpotAlgorithm", "PositionFit", "SizeFit",
            "beamspot_calibration", "beamspot_collector", "fit_position", "fit_size",
            "reference_spots",
        ],
        "b2calib.detectors.arich": ["calibrations"],
        "b2calib.detectors.arich.channel_mask": [
            "CHANNEL_KEYS", "CHANNEL_MASK", "CHANNEL_RING", "N_WINDOWS", "SIGNAL_WINDOWS",
            "ChannelMaskAlgorithm", "ChannelMaskCollector", "ChannelMaskResult",
            "channel_mask_calibration", "mask_channels",
        ],
        "b2calib.detectors.svd": ["calibrations"],
        "b2calib.detectors.svd.collectors": [
            "N_SIDES", "RAW_AXIS", "T0_AXIS", "ClusterTimeCollector", "StripHitCollector",
            "side_index",
        ],
        "b2calib.detectors.svd.time": [
            "COG_TIME", "SIDE_KEYS", "TimeCalibrationAlgorithm", "TimeCurves", "fit_time_curves",
            "layer3_v_raw_mean", "raw_time_boundaries", "time_calibration", "time_profiles",
        ],
        "b2calib.detectors.svd.hot_strips": [
            "HOT_STRIPS", "OCCUPANCY", "STRIP_KEYS", "HotStripsAlgorithm",
            "find_hot_strips", "hot_strips_calibration",
        ],
        "b2calib.detectors.klm": ["calibrations"],
        "b2calib.detectors.klm.collectors": [
            "DISTANCE_BINS", "MOMENTS", "REFERENCE_DELAY", "TIME_WINDOWS", "Crossings",
            "StripEfficiencyCollector", "TimeCollector", "crossings", "efficiency_counts",
            "extrapolation_layer", "selected_for_efficiency", "strip_length", "time_hits",
        ],
        "b2calib.detectors.klm.strip_efficiency": [
            "STRIP_EFFICIENCY", "StripEfficiencyAlgorithm", "StripEfficiencyRunByRun",
            "strip_efficiency_calibration",
        ],
        "b2calib.detectors.klm.time": [
            "CABLE_DELAY", "TIME_CONSTANTS", "DelayFit", "TimeAlgorithm", "channel_sums",
            "fit_rpc_delay", "fit_scintillator_delay", "time_calibration",
        ],
        "b2calib.detectors.pxd.masks": [
            "DEAD_LEVELS", "DEAD_PIXELS", "HOT_LEVELS", "MASKED_PIXELS", "N_DRAINS",
            "OCCUPANCY_INFO", "PHYSICS_SKIMS", "MaskConfig", "PixelHitCollector", "PixelHits",
            "PixelMaskAlgorithm", "PixelMasks", "add_pixel_hits", "check_statistics",
            "cosmic_masks_calibration", "drain_of", "false_dead_rate", "find_masks",
            "hot_dead_calibration", "hot_rate_threshold", "pixel_hits", "pixel_index",
            "sensor_medians",
        ],
        "b2calib.fit.novosibirsk_batched": ["fit_novosibirsk_channels", "novosibirsk_density"],
        "b2calib.fit.template_shift": ["fit_template_shift", "template_density"],
        "b2calib.fit.xt_relation": ["XtFits", "fit_xt", "xt_gradient", "xt_slope", "xt_value"],
        "b2calib.fit.truncated_mean": ["truncated_means"],
        "b2calib.fit.isr": [
            "ISR_X_MAX", "MASS_WINDOW_GEV", "MIN_DIMUONS", "IsrMassFit", "fit_isr_mass", "isr_beta",
            "isr_mass_cdf",
        ],
    }  # fmt: skip
    for name, names in expected.items():
        module = importlib.import_module(name)
        assert module.__all__ == names, name
        for attr in names:
            assert hasattr(module, attr), (name, attr)


def test_review_names() -> None:
    import b2calib.review

    assert b2calib.review.__all__ == [
        "ChannelComparison",
        "DetectorMap",
        "FitView",
        "FitViewError",
        "History",
        "PayloadRow",
        "Review",
        "TagSummary",
        "Unstaged",
        "approve",
        "channel_ids",
        "compare_payload",
        "detector_map",
        "export_zip",
        "fit_view",
        "history",
        "may_review",
        "reject",
        "reviews",
        "tag_detectors",
        "tag_summary",
    ]
    assert callable(b2calib.review.history)  # the function, not its module


def test_registered_calibrations() -> None:
    from b2calib.calibration import calibrations

    assert set(calibrations()) >= {
        "ecl-energy",
        "ecl-time",
        "cdc-t0",
        "cdc-xt",
        "cdc-dedx-run-gain",
        "cdc-dedx-cosine",
        "cdc-dedx-wire-gain",
        "top-channel-mask",
        "top-channel-t0",
        "top-module-t0",
        "top-common-t0",
        "pxd-gain",
        "arich-channel-mask",
        "svd-hot-strips",
        "svd-time",
        "klm-strip-efficiency",
        "klm-time",
        "pxd-hot-dead",
        "pxd-hot-dead-cosmic",
        "beamspot",
    }


def test_qa_names() -> None:
    import b2calib.qa
    import b2calib.qa.grl
    import b2calib.qa.monitoring
    import b2calib.qa.store

    assert sorted(dir(b2calib.qa)) == sorted(b2calib.qa.__all__)
    assert b2calib.qa.__all__ == [
        "PRESETS",
        "QA_HISTOGRAMS",
        "VARIABLES",
        "Comparison",
        "FlagEntry",
        "GoodRunList",
        "MonitoringValue",
        "QADatabase",
        "QAStatus",
        "Reference",
        "RunQA",
        "RunState",
        "StoredComparison",
        "Thresholds",
        "Trend",
        "User",
        "ad_test",
        "chi2_test",
        "collect_qa",
        "compare",
        "kolmogorov_prob",
        "ks_test",
    ]
    assert b2calib.qa.store.__all__ == [
        "LUMINOSITY_COLUMNS",
        "ROLES",
        "RUN_STATES",
        "STATUS_COLUMNS",
        "AutoStatus",
        "Certification",
        "Confirmation",
        "Evidence",
        "FlagEntry",
        "GoodRunLists",
        "Histograms",
        "Luminosity",
        "LuminosityTable",
        "LuminosityTotal",
        "Period",
        "Periods",
        "QADatabase",
        "Reference",
        "RunLuminosity",
        "RunState",
        "Runs",
        "Session",
        "Sessions",
        "StoredComparison",
        "Trend",
        "User",
        "Users",
        "hash_password",
        "session_id",
        "verify_password",
    ]
    assert b2calib.qa.grl.__all__ == [
        "DQ_TAG_PRESETS",
        "LUMINOSITY",
        "PRESETS",
        "Expression",
        "ExpressionError",
        "GRLDiff",
        "GRLRun",
        "GRLWarning",
        "GoodRunList",
        "diff",
        "evaluate",
        "parse",
        "runs_expression",
    ]
    for module in (b2calib.qa.store, b2calib.qa.grl, b2calib.qa.monitoring):
        assert sorted(dir(module)) == sorted(module.__all__)


def test_qa_module_names() -> None:
    """The modules of the monitoring and good-run-list packages, and the luminosity's
    measurement next to the simulator."""
    import importlib

    expected = {
        "b2calib.qa.monitoring": [
            "QA_HISTOGRAMS", "SYSTEMS", "VARIABLES", "VISIBLE_CROSS_SECTIONS_NB",
            "VISIBLE_CROSS_SECTION_ECMS", "BhabhaCollector", "GammaGammaCollector",
            "HistogramDef", "MonitoringValue", "MuMuCollector", "OccupancyCollector", "QAPart",
            "RunQA", "SkimCollector", "VariableDef", "collect_qa", "lumi_from_count",
            "qa_parts", "register", "run_qa_from_outputs", "unregister",
        ],
        "b2calib.qa.monitoring.definitions": [
            "SKIM_PREFIX", "SYSTEMS", "HistogramDef", "MonitoringValue", "RunQA", "VariableDef",
        ],
        "b2calib.qa.monitoring.parts": [
            "B_FACTOR", "EXT_HIT_BRANCHES", "LISTING", "LISTING_BLOCKS", "OCCUPANCY_SKIMS",
            "DimuonEvents", "ExtHits", "Histograms", "Occupancy", "QAPart", "RunHistograms",
            "SkimEvents", "TrackHits", "count_histogram", "event_index", "flat",
            "listing_order", "mean_histogram", "occupancy",
        ],
        "b2calib.qa.monitoring.registry": [
            "ENTRY_POINT_GROUP", "QA_HISTOGRAMS", "VARIABLES", "qa_parts", "register",
            "unregister",
        ],
        "b2calib.qa.monitoring.collectors": [
            "COLLECTORS", "BhabhaCollector", "GammaGammaCollector", "MuMuCollector",
            "OccupancyCollector", "SkimCollector", "collector_for", "qa_skims",
        ],
        "b2calib.qa.monitoring.massfit": [
            "MASS_WINDOW_GEV", "MIN_DIMUONS", "DimuonMassFit", "fit_dimuon_mass",
        ],
        "b2calib.qa.monitoring.luminosity": [
            "VISIBLE_CROSS_SECTIONS_NB", "VISIBLE_CROSS_SECTION_ECMS", "expected_count",
            "lumi_from_count",
        ],
        "b2calib.qa.monitoring.collect": ["collect_qa", "run_qa_from_outputs"],
        "b2calib.qa.grl.expression": [
            "DQ_TAG_PRESETS", "PRESETS", "Expression", "ExpressionError", "parse",
        ],
        "b2calib.qa.grl.goodrunlist": [
            "LUMINOSITY", "GRLDiff", "GRLRun", "GRLWarning", "GoodRunList", "diff", "evaluate",
            "runs_expression",
        ],
        "b2calib.qa.store.luminosity": [
            "LUMINOSITY_COLUMNS", "LUMINOSITY_VARIABLES", "Luminosity", "LuminosityTable",
            "LuminosityTotal", "RunLuminosity",
        ],
        "b2calib.qa.store.periods": [
            "FIRST_PERIOD", "Period", "Periods", "period_of", "period_starts", "runs_label",
        ],
        "b2calib.qa.store.certification": [
            "RUN_MOVES", "Certification", "Confirmation", "FlagEntry", "RunState",
        ],
        "b2calib.sim.luminosity": [
            "VISIBLE_CROSS_SECTION_SEED", "main", "measure_visible_cross_sections",
        ],
        "b2calib.skims": [
            "LUMI_SELECTIONS", "SKIMS", "TRIGGER_VARIABLES", "Cut", "Skim", "get_skim",
            "retention",
        ],
    }  # fmt: skip
    for name, names in expected.items():
        module = importlib.import_module(name)
        assert module.__all__ == names, name
        assert sorted(dir(module)) == sorted(names), name


def test_detector_qa_names() -> None:
    """Each detector (and system) package declares its QA in a ``qa`` module whose
    ``qa_parts()`` the ``b2calib.qa`` entry point collects."""
    import importlib

    expected = {
        "pxd": [
            "DIGIT_CHARGE", "HOT_PIXEL_OCCUPANCY", "MIN_HOT_PIXEL_EVENTS", "PXDDigitCharge",
            "PXDHotPixels", "qa_parts",
        ],
        "svd": ["CLUSTER_CHARGE", "SVDClusterCharge", "qa_parts"],
        "cdc": ["qa_parts"],
        "top": [
            "DIGITS_PER_TRACK", "MIN_MODULE_TRACKS", "MIN_PHOTONS", "TIME_RESIDUAL", "TRACK_TIME",
            "TOPDimuonQA", "qa_parts",
        ],
        "arich": ["PHOTONS_PER_TRACK", "ARICHDimuonQA", "qa_parts"],
        "ecl": [
            "CLUSTER_ENERGY", "CLUSTER_TIME", "E_OVER_P", "MIN_TIME_ENERGY", "ECLBhabhaQA",
            "qa_parts",
        ],
        "klm": [
            "DIGITS_PER_EVENT", "DIGIT_LAYER", "GOOD_MUON_MATCH", "MATCHED_FRACTION",
            "MIN_KLM_CROSSINGS", "KLMDimuonQA", "qa_parts",
        ],
        "beam": [
            "DIMUON_MASS", "BhabhaLuminosity", "DimuonMassQA", "GammaGammaLuminosity",
            "HadronBhabhaRatio", "Luminosity", "LuminosityMethodsRatio", "qa_parts",
        ],
        "tracking": ["D0_BINS", "MIN_BEAMSPOT_TRACKS", "Z0_BINS", "ImpactParameterQA", "qa_parts"],
    }  # fmt: skip
    for det, names in expected.items():
        module = importlib.import_module(f"b2calib.detectors.{det}.qa")
        assert module.__all__ == names, det
        assert sorted(dir(module)) == sorted(names), det
    for det in ("tracking",):  # QA only, for now
        assert importlib.import_module(f"b2calib.detectors.{det}").__all__ == []


def test_app_names() -> None:
    """The dashboards' modules: Viewer classes importable without a server."""
    import b2calib_apps.auth
    import b2calib_apps.conditions
    import b2calib_apps.index
    import b2calib_apps.qam
    import b2calib_apps.runsummary
    import b2calib_apps.serve
    import b2calib_apps.signoff

    assert b2calib_apps.qam.__all__ == ["MAX_HISTOGRAMS", "QAM"]
    assert b2calib_apps.signoff.__all__ == ["POLL_SECONDS", "SignOff"]
    assert b2calib_apps.runsummary.__all__ == ["RunSummary"]
    assert b2calib_apps.index.__all__ == ["Index"]
    assert b2calib_apps.conditions.__all__ == ["Conditions", "html_table", "payloads_link"]
    assert b2calib_apps.serve.__all__ == [
        "APPS",
        "current_conditions",
        "current_database",
        "make_server",
    ]
    assert b2calib_apps.auth.__all__ == [
        "ANONYMOUS",
        "COOKIE_MAX_AGE_DAYS",
        "SESSION_COOKIE",
        "SESSION_HEADER",
        "DatabaseAuthProvider",
        "LoginThrottle",
        "SessionStore",
        "safe_next",
        "session_token",
    ]
    assert set(b2calib_apps.serve.APPS) == {
        "",
        "qam",
        "signoff",
        "runsummary",
        "payloads",
        "conditions",
    }


def _lazy_packages() -> list[str]:
    """Packages whose names are imported on first use (b2calib._lazy.attach)."""
    from pathlib import Path

    root = Path(b2calib.__file__).parent
    return sorted(
        ".".join(["b2calib", *p.parent.relative_to(root).parts])
        for p in root.rglob("__init__.py")
        if "attach(" in p.read_text()
    )


@pytest.mark.parametrize("name", _lazy_packages())
def test_lazy_names_resolve_and_are_typed(name: str) -> None:
    """A package with lazy names lists each once in __all__, in its attach() table and in its
    TYPE_CHECKING imports (what type checkers see), and every one resolves to what those
    imports name: a submodule only where one is imported (``from b2calib import geometry``),
    never a submodule in the place of the function of the same name (``b2calib.qa.compare``)."""
    import ast
    import importlib
    import importlib.util
    import types
    from pathlib import Path

    module = importlib.import_module(name)
    tree = ast.parse(Path(str(module.__file__)).read_text())

    def is_submodule(parent: str, child: str) -> bool:
        package = importlib.import_module(parent)
        return hasattr(package, "__path__") and (
            importlib.util.find_spec(f"{parent}.{child}") is not None
        )

    typed = {
        alias.asname or alias.name: is_submodule(imp.module, alias.name)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for imp in node.body
        if isinstance(imp, ast.ImportFrom) and imp.module is not None
        for alias in imp.names
    }
    assert set(typed) == set(module.__all__) - {"__version__"}
    for public, is_module in typed.items():
        assert isinstance(getattr(module, public), types.ModuleType) == is_module, public
