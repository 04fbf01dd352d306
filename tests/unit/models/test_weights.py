"""Weight files: round trip, and nothing but plain tensors is ever unpickled."""

from __future__ import annotations

import pytest
import torch

from cdiflow.errors import ModelNotFound
from cdiflow.models import ModelConfig, WeightsError, build_model, load_weights, save_weights


def _model(config: ModelConfig):
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    with torch.no_grad():  # move the BN running stats away from their init
        model(torch.rand(4, 64, 64))
    return model.eval()


def test_round_trip_predicts_identically(tmp_path):
    config = ModelConfig(base_width=4, leaky_slope=0.05)
    model = _model(config)
    path = save_weights(tmp_path / "m.pt", model, config, {"val_chi2": 0.02, "sha": "abc"})
    loaded, loaded_config, metadata = load_weights(path)
    assert loaded_config == config
    assert metadata == {"val_chi2": 0.02, "sha": "abc"}
    assert not loaded.training
    x = torch.rand(3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not (tmp_path / "m.pt.tmp").exists()


class _Payload:
    """An object whose unpickling would create a file (stands in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "cdiflow-cnn", "format_version": 1, "x": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="not a safe"):
        load_weights(path)
    assert not marker.exists()


def test_foreign_and_missing_files(tmp_path):
    with pytest.raises(ModelNotFound):
        load_weights(tmp_path / "absent.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a cdiflow-cnn"):
        load_weights(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "junk.pt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    model = _model(ModelConfig(base_width=4))
    path = save_weights(tmp_path / "m.pt", model, ModelConfig(base_width=8))
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(path)


def test_metadata_must_be_plain(tmp_path):
    config = ModelConfig(base_width=4)
    with pytest.raises(WeightsError):
        save_weights(tmp_path / "m.pt", _model(config), config, {"bad": [1, 2]})
