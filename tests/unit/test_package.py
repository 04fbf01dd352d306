"""The package layout keeps its promises: no shadowing, imports do no work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_platform_source_root_does_not_shadow_stdlib_platform():
    assert not (REPO / "platform" / "__init__.py").exists()
    # From the repo root (where a `platform/` folder sits on sys.path[0]) the standard
    # library module must still win.
    out = _run("import platform; print(platform.python_version()); print(platform.__file__)", REPO)
    assert out.returncode == 0, out.stderr
    version, path = out.stdout.split()
    assert version.count(".") == 2
    assert "platform/cdiflow" not in path and path.endswith("platform.py")


def test_importing_cdiflow_does_no_work(tmp_path):
    code = (
        "import os, sys\n"
        "before = set(os.listdir('.'))\n"
        "import cdiflow, cdiflow.physics.generator, cdiflow.metrics, cdiflow.cli\n"
        "heavy = [m for m in ('ray', 'mlflow', 'matplotlib') if m in sys.modules]\n"
        "print('heavy', heavy)\n"
        "print('new', sorted(set(os.listdir('.')) - before))\n"
        "print('uri', os.environ.get('MLFLOW_TRACKING_URI'))\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "heavy []" in out.stdout
    assert "new []" in out.stdout
    assert "uri None" in out.stdout


def test_cli_help_lists_every_verb():
    out = subprocess.run(
        [sys.executable, "-m", "cdiflow.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    from cdiflow.cli import VERBS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    for verb in sub.choices:
        assert verb in VERBS
        assert verb in out.stdout
        sub_help = subprocess.run(
            [sys.executable, "-m", "cdiflow.cli", verb, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sub_help.returncode == 0, sub_help.stderr
        assert "usage: cdiflow" in sub_help.stdout
