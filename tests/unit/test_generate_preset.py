"""``cdiflow generate --preset``: paper (default, unchanged bytes) or realistic (masked)."""

from __future__ import annotations

import pytest

from cdiflow.cli import build_parser, main
from cdiflow.formats.layout import DatasetConfig
from cdiflow.physics.generator import GeneratorConfig

SMALL = ["--num-patterns", "40", "--test-patterns", "4", "--shards", "1"]


def _config(tmp_path, *flags):
    from cdiflow.commands.generate import load_config

    args = build_parser().parse_args(["generate", *SMALL, "--out", str(tmp_path / "o"), *flags])
    return load_config(args)


def test_default_is_the_paper_preset_with_its_old_fingerprint(tmp_path):
    config = _config(tmp_path)
    assert config.generator == GeneratorConfig() and config.generator.preset == "paper"
    assert "variation" not in config.dataset().to_dict()["generator"]
    old = DatasetConfig(num_patterns=40, test_patterns=4, shards=1)
    assert config.dataset().fingerprint() == old.fingerprint()
    assert _config(tmp_path, "--preset", "paper").dataset() == config.dataset()


def test_realistic_preset_sets_the_variation(tmp_path):
    config = _config(tmp_path, "--preset", "realistic")
    assert config.generator == GeneratorConfig.realistic()
    assert config.generator.has_mask
    assert config.dataset().to_dict()["generator"]["variation"]["photons"] == [1e4, 1e9]


def test_yaml_variation_mapping_is_the_realistic_preset_with_its_ranges(tmp_path):
    yaml = tmp_path / "gen.yaml"
    yaml.write_text(
        "generator:\n  variation:\n    photons: [1.0e+5, 1.0e+6]\n    gap_probability: 0\n"
    )
    for flags in ([], ["--preset", "realistic"]):
        config = _config(tmp_path, "--config", str(yaml), *flags)
        variation = config.generator.variation
        assert config.generator.preset == "realistic"
        assert variation.photons == (1e5, 1e6) and variation.gap_probability == 0.0
        assert variation.edge_sigmas == (0.4, 0.55, 0.7)  # the rest keep their defaults


@pytest.mark.parametrize(
    "yaml, flags, words",
    [
        ("generator:\n  variation: {}\n", ["--preset", "paper"], "preset paper"),
        ("preset: noisy\n", [], "preset must be one of"),
        ("generator:\n  detector:\n    photons: 1000.0\n", ["--preset", "realistic"], "detector"),
    ],
)
def test_contradictions_are_refused(capsys, tmp_path, yaml, flags, words):
    config = tmp_path / "gen.yaml"
    config.write_text(yaml)
    argv = ["generate", *SMALL, "--config", str(config), "--out", str(tmp_path / "o"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cdiflow generate: error:") and words in err, err
    assert not (tmp_path / "o").exists()


def test_unknown_preset_flag_is_an_argparse_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *SMALL, "--out", str(tmp_path / "o"), "--preset", "noisy"])
    assert exit_info.value.code == 2


def test_realistic_data_set_has_one_mask_per_row_and_the_manifest_says_so(tmp_path):
    import numpy as np

    from cdiflow.formats.dataset import read_manifest
    from cdiflow.formats.dataset_folder import write_dataset
    from cdiflow.pipelines.data import has_mask, list_shards, read_split_arrays

    config = _config(tmp_path, "--preset", "realistic").dataset()
    write_dataset(tmp_path / "data", config)
    assert read_manifest(tmp_path / "data").generator == GeneratorConfig.realistic()
    assert has_mask(list_shards(tmp_path / "data", "train"))
    arrays = read_split_arrays(tmp_path / "data", "train")
    assert arrays["mask"].shape == arrays["modulus"].shape == (38, 64, 64)
    assert arrays["mask"].dtype == np.float32 and set(np.unique(arrays["mask"])) <= {0.0, 1.0}
    assert len({arrays["mask"][i].tobytes() for i in range(38)}) > 1  # one mask per row
    assert (arrays["modulus"][arrays["mask"] == 0] == 0).all()
