"""``cdiflow quickstart --smoke`` end to end (local Ray, embedded MLflow), and its cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cdiflow import pretrained
from cdiflow.cli import main
from cdiflow.pipelines.tracking import MODEL_NAME, PRETRAINED_TAG, tracking_uri

pytestmark = pytest.mark.integration


# The README runs the quickstart on the real scan 54; without the data it still runs.
SCAN54 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aps-34idc-scan54"


def test_quickstart_smoke_then_cached(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    args = ["quickstart", "--smoke", "--workspace", str(workspace)]
    scan54 = SCAN54 if (SCAN54 / "example.spec").is_file() else None
    if scan54 is not None:
        args += ["--beamtime", str(scan54)]
    assert main(args) == 0
    out = capsys.readouterr().out
    shipped = pretrained.available()
    mine = "2" if shipped else "1"  # a new workspace holds the shipped model as version 1
    assert re.search(rf"registered cdiflow-cnn version {mine} \((champion|champion stays)", out)
    if shipped:
        uri = tracking_uri(workspace)
        client = MlflowClient(uri, registry_uri=uri)
        assert client.get_model_version(MODEL_NAME, "1").tags[PRETRAINED_TAG] == "true"
        decision = json.loads(client.get_model_version(MODEL_NAME, mine).tags["champion_decision"])
        # the shipped champion was scored again on the quickstart's own validation set
        assert decision["champion_rescored"] is True
        assert decision["rescored_fingerprint"] == decision["eval_fingerprint"]
    index = workspace / "report.html"
    assert index.is_file() and f"open {index}" in out
    html = index.read_text()
    assert "reports/synthetic/report.html" in html
    synthetic = (workspace / "reports" / "synthetic" / "report.html").read_text()
    assert synthetic.count("<img") == 2  # both synthetic scans reconstructed
    if scan54 is not None:
        assert "aps-34idc-scan54" in html
        assert (
            "Staff20-1a_S0054"
            in (workspace / "reports" / "aps-34idc-scan54" / "report.html").read_text()
        )

    # a second run reuses the registered champion and the finished results
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "reusing it" in again and "registered" not in again
    assert "0 to reconstruct" in again
