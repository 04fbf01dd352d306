"""``cdiflow compare-init --patterns N``: the paper's Fig. 5(f) on many patterns, batched."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cdiflow.cli import main
from cdiflow.phasing.compare_batch import RANDOM_KINDS, compare_patterns
from cdiflow.phasing.compare_summary import (
    first_reach,
    fraction_below,
    median_reach,
    row_median,
    summarise,
)

STARTS = ["random-rectangle", "random-cnn-support", "cnn", "nns"]
SCHEDULE = "20*HIO+10*ER"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real data set folder (manifest + shards, train and test splits), without Ray."""
    from cdiflow.formats.dataset_folder import write_dataset
    from cdiflow.formats.layout import DatasetConfig

    root = tmp_path_factory.mktemp("scale-data")
    config = DatasetConfig(seed=3, num_patterns=20, test_patterns=3, shards=1, chunk_size=16)
    write_dataset(root, config)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny real CNN, untrained, saved as a weights file."""
    from cdiflow.models import ModelConfig, build_model, save_weights

    path = tmp_path_factory.mktemp("scale-model") / "cnn.pt"
    config = ModelConfig(base_width=4, depth=2)
    save_weights(path, build_model(config, seed=0), config)
    return path


@pytest.fixture(scope="module")
def scale_run(dataset, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale-out") / "cmp"
    argv = ["compare-init", "--data", str(dataset / "test"), "--model", str(weights)]
    argv += ["--train", str(dataset), "--patterns", "3", "--repeats", "2"]
    argv += ["--schedule", SCHEDULE, "--batch-size", "4", "--out", str(out)]
    code = main(argv)
    result = json.loads((out / "compare_init.json").read_text())
    with np.load(out / "compare_init_runs.npz") as npz:
        arrays = dict(npz)
    return code, out, result, arrays


def test_the_json_holds_every_start_of_every_pattern(scale_run):
    code, _out, result, arrays = scale_run
    assert code == 0
    assert set(result) == {"patterns", "summary"}
    patterns = result["patterns"]
    assert [p["index"] for p in patterns] == [0, 1, 2]
    for p in patterns:
        assert list(p["starts"]) == STARTS
        for name in RANDOM_KINDS:
            start = p["starts"][name]
            assert start["runs"] == 2 and start["failed"] == 0
            for key in ("best_chi2", "amplitude_error", "phase_rms"):
                assert set(start[key]) == {"median", "mean", "std", "p16", "p84", "finite"}
                assert start[key]["finite"] == 2
        for name in ("cnn", "nns"):
            assert p["starts"][name]["runs"] == 1
            assert all(isinstance(p["starts"][name][k], float) for k in ("best_chi2", "phase_rms"))
        assert set(p["cnn_iterations_to_random_median"]) == set(RANDOM_KINDS)
    assert arrays["random-rectangle.best_chi2"].shape == (3, 2)
    assert arrays["random-cnn-support.chi2_band"].shape == (3, 3, 30)
    assert arrays["cnn.chi2"].shape == (3, 30) and arrays["nns.chi2"].shape == (3, 30)
    assert arrays["random-rectangle.example_chi2"].shape == (2, 30)
    for i, p in enumerate(patterns):  # the JSON medians are those of the stored runs
        runs = arrays["random-rectangle.best_chi2"][i].astype(np.float64)
        assert p["starts"]["random-rectangle"]["best_chi2"]["median"] == np.median(runs)
        assert p["starts"]["cnn"]["best_chi2"] == float(arrays["cnn.best_chi2"][i, 0])


def test_the_summary_matches_the_patterns_and_the_stored_curves(scale_run):
    _code, _out, result, arrays = scale_run
    summary, patterns = result["summary"], result["patterns"]
    assert summary["patterns"] == 3 and summary["repeats"] == 2
    assert summary["schedule"] == SCHEDULE and summary["iterations"] == dict.fromkeys(STARTS, 30)
    for kind in STARTS:  # one schedule for every start
        assert summary["start_settings"][kind]["schedule"] == SCHEDULE
        assert summary["start_settings"][kind]["shrinkwrap"]["start"] == 100
    assert summary["model"].endswith("cnn.pt")
    assert summary["failed_runs"] == dict.fromkeys(STARTS, 0)
    for kind in STARTS:  # answers' supports: inside the 32 x 32 upper bound, not empty
        pixels = arrays[f"{kind}.support_pixels"]
        assert summary["median_support_pixels"][kind] == np.median(pixels)
        assert (pixels > 0).all() and (pixels <= 32 * 32).all()
    for kind in RANDOM_KINDS:
        medians = [p["starts"][kind]["best_chi2"]["median"] for p in patterns]
        cnn = [p["starts"]["cnn"]["best_chi2"] for p in patterns]
        fraction = summary["fraction_cnn_below_random_median_chi2"][kind]
        assert 0 <= fraction <= 1
        assert fraction == np.mean(np.array(cnn) < np.array(medians))
        for error in summary["fraction_cnn_below_random_median_image_error"][kind].values():
            assert 0 <= error <= 1
        expected = []
        for i, p in enumerate(patterns):  # recompute from the stored CNN curve
            curve = arrays["cnn.chi2"][i].astype(np.float64)
            hits = np.flatnonzero(curve <= medians[i])
            expected.append(int(hits[0]) + 1 if hits.size else None)
            assert p["cnn_iterations_to_random_median"][kind] == expected[-1]
        reach = summary["iterations_to_random_median"][kind]
        assert reach["nulls"] == expected.count(None)
        never_last = sorted(expected, key=lambda k: math.inf if k is None else k)
        middle = never_last[(len(expected) - 1) // 2 : len(expected) // 2 + 1]
        if None in middle:  # half or more never get there
            assert reach["median"] is None
        else:
            assert reach["median"] == float(np.mean(middle))


def test_the_figures_are_written(scale_run):
    out = scale_run[1]
    for name in ("chi2_curves.png", "final_chi2.png", "cnn_vs_random.png"):
        assert (out / name).stat().st_size > 1000


def test_patterns_without_a_cnn_is_a_clear_error(dataset, tmp_path, capsys):
    argv = ["compare-init", "--data", str(dataset / "test"), "--patterns", "2"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--model or --predictions" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_patterns_runs_do_not_depend_on_the_chunking(dataset):
    from cdiflow.phasing.nns import read_patterns

    modulus, amplitude, phase = read_patterns(dataset, 3, split="test")
    kwargs = {"repeats": 2, "seed": 5, "schedule": "10*HIO+5*ER", "shrinkwrap": None}
    pred = (amplitude, phase)
    one = compare_patterns(modulus, amplitude, phase, pred, batch_size=2, **kwargs)
    all_ = compare_patterns(modulus, amplitude, phase, pred, batch_size=64, example=2, **kwargs)
    sub = compare_patterns(
        modulus[1:], amplitude[1:], phase[1:], (amplitude[1:], phase[1:]), indices=[1, 2], **kwargs
    )
    assert list(one) == ["random-rectangle", "random-cnn-support", "cnn"]
    for name in one:
        np.testing.assert_allclose(one[name].best_chi2, all_[name].best_chi2, rtol=1e-4)
        np.testing.assert_allclose(one[name].chi2_band, all_[name].chi2_band, rtol=1e-4)
    np.testing.assert_allclose(
        all_["cnn"].example_chi2, one["cnn"].chi2_curve[2:3], rtol=1e-4, atol=1e-7
    )
    for name in sub:  # a pattern's runs do not depend on the other patterns compared
        np.testing.assert_allclose(sub[name].best_chi2, one[name].best_chi2[1:], rtol=1e-4)


def test_summarise_on_known_arrays():
    best = np.array([0.1, 0.5, 0.2, np.nan])
    random = np.array([[0.2, 0.3, 0.4], [0.1, 0.2, 0.3], [0.2, 0.2, 0.2], [0.1, 0.1, 0.1]])
    curves = np.array(
        [
            [1.0, 0.5, 0.3, 0.2, 0.1],  # reaches its median 0.3 at iteration 3
            [1.0, 1.0, 1.0, 1.0, 0.5],  # never reaches 0.2
            [0.2, 0.1, 0.1, 0.1, 0.1],  # at once
            [np.nan] * 5,  # a failed run never reaches anything
        ]
    )
    amp = np.array([0.1, 0.1, 0.1, 0.1])
    random_amp = np.array([[0.2] * 3, [0.05] * 3, [np.nan] * 3, [0.3, 0.3, np.nan]])
    s = summarise(best, curves, {"amplitude_error": amp}, random, {"amplitude_error": random_amp})
    np.testing.assert_allclose(s["random_median_chi2"], [0.3, 0.2, 0.2, 0.1])
    assert s["iterations"] == [3, None, 1, None]
    assert s["fraction_below_median_chi2"] == pytest.approx(1 / 3)  # 0.2 < 0.2 is not below
    assert s["fraction_below_median_image_error"] == {"amplitude_error": pytest.approx(2 / 3)}
    # [1, 3, never, never]: the median falls among the patterns that never get there
    assert s["iterations_to_median"] == {"median": None, "nulls": 2}
    assert median_reach([3, None, 1]) == 3.0  # not 2.0, the median of those that get there
    assert median_reach([4, 2, None, 1, 5]) == 4.0


def test_the_summary_helpers_on_edge_cases():
    assert first_reach(np.ones((2, 3)), [np.nan, 0.5]) == [None, None]
    assert first_reach([[3.0, 2.0, 1.0]], [2.0]) == [2]
    assert fraction_below([np.nan, 1.0], [1.0, np.nan]) is None
    np.testing.assert_array_equal(row_median([[np.nan, np.nan], [1.0, np.nan]]), [np.nan, 1.0])
    nothing = summarise([np.nan], [[np.nan]], {}, [[np.nan, np.nan]], {})
    assert nothing["iterations_to_median"] == {"median": None, "nulls": 1}
    assert nothing["fraction_below_median_chi2"] is None


def test_each_start_kind_is_refined_with_its_own_settings(dataset):
    from cdiflow.phasing.compare_summary import comparison_json
    from cdiflow.phasing.nns import read_patterns
    from cdiflow.phasing.settings import RefineSettings

    modulus, amplitude, phase = read_patterns(dataset, 2, split="test")
    guess, blind = RefineSettings("6*ER", 0.5, None), RefineSettings("10*HIO+5*ER", 0.9, None)
    runs = compare_patterns(
        modulus,
        amplitude,
        phase,
        (amplitude, phase),
        repeats=2,
        settings=lambda kind: guess if kind == "cnn" else blind,
    )
    assert runs["cnn"].chi2_band.shape[-1] == 6
    assert runs["random-rectangle"].chi2_band.shape[-1] == 15
    assert runs["random-cnn-support"].chi2_band.shape[-1] == 15
    summary = comparison_json(runs, np.arange(2))["summary"]  # curves of unequal length
    for kind in ("random-rectangle", "random-cnn-support"):
        assert 0.0 <= summary["fraction_cnn_below_random_median_chi2"][kind] <= 1.0


def test_without_a_schedule_each_start_gets_its_default_settings(dataset, weights, tmp_path):
    from cdiflow.phasing.settings import PAPER_SETTINGS, SEEDED_SETTINGS

    out = tmp_path / "cmp"
    argv = ["compare-init", "--data", str(dataset / "test"), "--model", str(weights)]
    argv += ["--patterns", "1", "--repeats", "1", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "compare_init.json").read_text())["summary"]
    assert summary["schedule"] is None
    assert summary["start_settings"]["cnn"] == SEEDED_SETTINGS.to_dict()
    assert summary["start_settings"]["random-rectangle"] == PAPER_SETTINGS.to_dict()
    assert summary["iterations"] == {
        "random-rectangle": 600,
        "random-cnn-support": 600,
        "cnn": SEEDED_SETTINGS.iterations,
    }
    with np.load(out / "compare_init_runs.npz") as npz:
        assert npz["cnn.chi2"].shape == (1, SEEDED_SETTINGS.iterations)


def test_gradient_start_runs_beside_the_cnn_and_is_summarised(dataset, weights, tmp_path):
    from cdiflow.phasing.settings import GRADIENT_SETTINGS, SEEDED_SETTINGS

    out = tmp_path / "cmp"
    argv = ["compare-init", "--data", str(dataset / "test"), "--model", str(weights)]
    argv += ["--patterns", "2", "--repeats", "1", "--gradient", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "compare_init.json").read_text())
    summary = result["summary"]
    assert summary["starts"][-1] == "cnn-gradient"
    assert summary["start_settings"]["cnn-gradient"] == GRADIENT_SETTINGS.to_dict()
    assert set(summary["by_start"]) == {"cnn", "cnn-gradient"}
    # the CNN's own entry in by_start is the headline summary
    cnn = summary["by_start"]["cnn"]["random-rectangle"]
    assert (
        cnn["fraction_below_random_median_chi2"]
        == (summary["fraction_cnn_below_random_median_chi2"]["random-rectangle"])
    )
    with np.load(out / "compare_init_runs.npz") as npz:
        curve = npz["cnn-gradient.chi2"]
        assert curve.shape == (2, GRADIENT_SETTINGS.iterations)
        # the CNN start runs its candidates, the gradient start the gentle 120 alone
        assert npz["cnn.chi2"].shape == (2, SEEDED_SETTINGS.iterations)
        assert np.isfinite(curve[:, :120]).all()
        # the Adam steps never leave the answer worse than the iterate they started from
        assert (npz["cnn-gradient.best_chi2"][:, 0] <= curve[:, 120] * (1 + 1e-5)).all()
    for p in result["patterns"]:
        assert set(p["starts"]) == {"random-rectangle", "random-cnn-support", "cnn", "cnn-gradient"}
