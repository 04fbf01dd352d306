"""Importing the formats modules does no work and pulls in no Ray / MLflow / matplotlib."""

from __future__ import annotations

import subprocess
import sys


def test_formats_imports_are_light():
    code = (
        "import sys\n"
        "import cdiflow.formats.aps34idc, cdiflow.formats.generic, cdiflow.beamtime.preprocess\n"
        "import cdiflow.formats.spec, cdiflow.formats.scan\n"
        # h5py and tifffile are light and imported at the top (test_import_discipline.py)
        "heavy = [m for m in ('ray', 'mlflow', 'matplotlib', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=None
    )
    assert out.stdout.strip() == ""
