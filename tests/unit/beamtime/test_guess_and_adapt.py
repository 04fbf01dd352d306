"""The CNN's run gets the guessed-start settings; --adapt fine-tunes the CNN per scan."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.beamtime.steps import (
    ReconstructConfig,
    batch_to_rows,
    plan_scans,
    predict_batch,
    read_and_preprocess,
    refine_batch,
    rows_to_batch,
)
from cdiflow.models.adapt import AdaptConfig
from cdiflow.phasing.settings import SEEDED_SETTINGS, RefineSettings
from cdiflow.physics.generator import GeneratorConfig, generate_samples

GUESS = RefineSettings("12*ER", 0.5, None)


def _rows(tmp_path, config, count: int = 2) -> list[dict]:
    for i in range(count):
        modulus = generate_samples(GeneratorConfig(), 0, [i]).modulus[0].astype(np.float64)
        np.save(tmp_path / f"p{i}.npy", (modulus**2 * 1e6).astype(np.float32))
    return [read_and_preprocess(item, config) for item in plan_scans([tmp_path])]


def test_the_default_guess_is_the_gentle_schedule_and_random_runs_keep_theirs():
    config = ReconstructConfig()
    assert config.run_settings(0) == SEEDED_SETTINGS
    assert config.run_settings(1).schedule == config.schedule == "5*(100*HIO+20*ER)"
    assert config.iterations == 600
    assert ReconstructConfig(start="random-rectangle").run_settings(0) == config.run_settings(1)
    assert ReconstructConfig(guess=None).run_settings(0) == config.run_settings(1)
    assert ReconstructConfig(starts=1).iterations == SEEDED_SETTINGS.iterations


def test_each_run_is_refined_with_its_settings_and_the_row_says_how_many_iterations(
    tmp_path, tiny_model, fast_config
):
    config = fast_config.replace(guess=GUESS, starts=3)
    rows = _rows(tmp_path, config)
    assert len(rows[0]["chi2_curve"]) == config.iterations == 50
    out = batch_to_rows(refine_batch(predict_batch(tiny_model, rows_to_batch(rows)), config))
    for row in out:
        assert row["status"] == "ok", row["reason"]
        assert row["iterations"] in (12, 50) and row["starts"] == 3
        curve = np.asarray(row["chi2_curve"])
        assert np.isfinite(curve[: row["iterations"]]).all()
        assert np.isnan(curve[row["iterations"] :]).all()


@pytest.mark.parametrize("scope", ["scan", "batch"])
def test_adapting_the_cnn_never_raises_its_chi2(tmp_path, tiny_model, fast_config, scope):
    config = fast_config.replace(adapt=AdaptConfig(steps=4, lr=1e-3), adapt_scope=scope)
    rows = _rows(tmp_path, config)
    plain = batch_to_rows(predict_batch(tiny_model, rows_to_batch(rows)))
    adapted = batch_to_rows(predict_batch(tiny_model, rows_to_batch(rows), config=config))
    for a, p in zip(adapted, plain, strict=True):
        assert a["cnn_chi2"] == pytest.approx(p["cnn_chi2"])  # the shipped CNN's, as before
        assert np.isnan(p["adapted_cnn_chi2"])
        if scope == "scan":  # each scan's copy keeps its best step: never worse on it
            assert a["adapted_cnn_chi2"] <= a["cnn_chi2"] * (1 + 1e-5)
        assert np.isfinite(a["adapted_cnn_chi2"])
    assert not np.allclose(adapted[0]["cnn_amplitude"], plain[0]["cnn_amplitude"])


def test_adapt_and_guess_schedule_flags_reach_the_config():
    from cdiflow.cli import build_parser
    from cdiflow.commands.reconstruct import load_config

    def config(*flags):
        return load_config(build_parser().parse_args(["reconstruct", "bt", "--out", "o", *flags]))

    assert config().adapt.steps == 0 and config().guess == SEEDED_SETTINGS
    assert config("--adapt").adapt.steps == 100
    adapted = config("--adapt", "7", "--adapt-scope", "batch")
    assert adapted.adapt.steps == 7 and adapted.adapt_scope == "batch"
    guess = config("--guess-schedule", "30*ER").guess
    assert guess.schedule == "30*ER" and guess.beta == SEEDED_SETTINGS.beta
    assert guess.shrinkwrap.stop == 0  # the default's freeze belongs to its own schedule
    assert config("--guess-schedule", "same").guess is None
    assert config("--adapt", "7").config_hash != config().config_hash
