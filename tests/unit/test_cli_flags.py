"""The flags that several verbs share are declared once (``cdiflow.commands.common``).

Built from the real parser (``cdiflow.cli.build_parser``): every verb that takes
``--workspace``, ``--address``, ``--model`` or ``--verbose`` has it with the same type,
default and help text (``--address`` and ``--model`` end with what the verb does without
them), and ``--model`` turns the same user input into the same reference in every verb.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from cdiflow.cli import build_parser
from cdiflow.commands import common

# verb -> the flags it takes; a new verb with one of these flags must be added here
EXPECTED = {
    "--workspace": set(
        "compare-init evaluate generate nns quickstart reconstruct train tune".split()
    ),
    "--address": {"generate", "quickstart", "reconstruct", "train", "tune"},
    "--model": {"compare-init", "evaluate", "nns", "reconstruct"},
    # every verb that starts Ray
    "--verbose": {"generate", "quickstart", "reconstruct", "train", "tune"},
}
HELP = {
    "--workspace": common.WORKSPACE_HELP,
    "--address": common.ADDRESS_HELP,
    "--model": common.MODEL_HELP,
    "--verbose": common.VERBOSE_HELP,
}
COMMANDS = Path(common.__file__).parent


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def flag(parser: argparse.ArgumentParser, name: str) -> argparse.Action | None:
    return next((a for a in parser._actions if name in a.option_strings), None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_flag_is_the_same_in_every_verb(name):
    parsers = verb_parsers()
    having = {verb for verb, p in parsers.items() if flag(p, name) is not None}
    assert having == EXPECTED[name]
    first = flag(parsers[min(having)], name)
    for verb in sorted(having):
        action = flag(parsers[verb], name)
        same = (action.type, action.default, action.dest, action.metavar)
        assert same == (first.type, first.default, first.dest, first.metavar), verb
        assert action.help.startswith(HELP[name]), verb


def test_flag_types_and_defaults():
    parsers = verb_parsers()
    workspace = flag(parsers["evaluate"], "--workspace")
    assert workspace.type is Path and workspace.default == Path("cdiflow-workspace")
    address = flag(parsers["train"], "--address")
    assert address.type is None and address.default is None
    model = flag(parsers["reconstruct"], "--model")
    assert model.type is common.parse_model and model.default is None
    assert flag(parsers["evaluate"], "--model").required
    assert not flag(parsers["reconstruct"], "--model").required
    verbose = flag(parsers["quickstart"], "--verbose")
    assert verbose.default is False and verbose.nargs == 0  # a switch


def test_address_help_says_each_verbs_default():
    # the quickstart ignores RAY_ADDRESS and starts its own local Ray; the others use it
    from cdiflow.commands import quickstart

    parsers = verb_parsers()
    for verb in sorted(EXPECTED["--address"]):
        default = quickstart.ADDRESS_DEFAULT if verb == "quickstart" else common.ADDRESS_DEFAULT
        expected = f"{common.ADDRESS_HELP} (default: {default})"
        assert flag(parsers[verb], "--address").help == expected, verb
    assert "RAY_ADDRESS is ignored" in quickstart.ADDRESS_DEFAULT
    assert common.ADDRESS_DEFAULT.startswith("RAY_ADDRESS")


def test_each_shared_flag_is_declared_in_one_module_only():
    for name in EXPECTED:
        declared = re.compile(r"add_argument\(\s*" + re.escape(f'"{name}"'))
        where = sorted(p.name for p in COMMANDS.glob("*.py") if declared.search(p.read_text()))
        assert where == ["common.py"], (name, where)


def parsed_model(verb: str, value: str) -> str:
    argv = {
        "evaluate": ["evaluate", "--data", "d", "--out", "o"],
        "reconstruct": ["reconstruct", "beamtime", "--out", "o"],
        "nns": ["nns", "--data", "d", "--test", "t"],
        "compare-init": ["compare-init", "--data", "d"],
    }[verb]
    return build_parser().parse_args([*argv, "--model", value]).model


@pytest.mark.parametrize("verb", sorted(EXPECTED["--model"]))
def test_model_forms_normalise_the_same_in_every_verb(verb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").write_bytes(b"")  # a bare word that names a file is a file
    expected = {
        "3": "models:/cdiflow-cnn/3",
        "champion": "models:/cdiflow-cnn@champion",
        "staging": "models:/cdiflow-cnn@staging",
        "models:/cdiflow-cnn/3": "models:/cdiflow-cnn/3",
        "models:/cdiflow-cnn@champion": "models:/cdiflow-cnn@champion",
        "path/to/w.pt": str(tmp_path.resolve() / "path" / "to" / "w.pt"),
        "w.pt": str(tmp_path.resolve() / "w.pt"),
        "weights": str(tmp_path.resolve() / "weights"),
    }
    for value, ref in expected.items():
        assert parsed_model(verb, value) == ref, value


def test_evaluate_and_reconstruct_agree_on_model_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in ("3", "champion", "models:/cdiflow-cnn/3", "path/to/w.pt"):
        assert parsed_model("evaluate", value) == parsed_model("reconstruct", value), value


@pytest.mark.parametrize("verb", ["evaluate", "reconstruct"])
def test_malformed_registry_reference_is_a_usage_error(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        parsed_model(verb, "models:/cdiflow-cnn")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model" in err and "models:/NAME@ALIAS" in err


def test_model_reference_defaults_and_paths(tmp_path):
    from cdiflow.pipelines.tracking import DEFAULT_MODEL, model_reference

    assert model_reference(None) == DEFAULT_MODEL == "models:/cdiflow-cnn@champion"
    assert model_reference(tmp_path / "3") == str(tmp_path.resolve() / "3")  # a Path is a file
    assert model_reference(model_reference("7")) == "models:/cdiflow-cnn/7"  # idempotent


def test_kuberay_job_entrypoint_parses_with_the_real_parser():
    # the RayJob used --num-workers / --use-gpu, flags `cdiflow train` never had
    import shlex

    import yaml

    rayjob = COMMANDS.parents[2] / "cluster" / "kuberay" / "rayjob.yaml"
    words = shlex.split(yaml.safe_load(rayjob.read_text())["spec"]["entrypoint"])
    assert words[:2] == ["python", "jobs/train.py"]
    args = build_parser().parse_args(["train", *words[2:]])
    assert args.workers == 8 and args.gpus is True
