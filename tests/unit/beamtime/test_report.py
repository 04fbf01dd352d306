"""The per-scan figure and the HTML reports, on a real run of the per-scan pipeline.

No browser here: ``check_page`` parses a page with ``html.parser`` and checks that every
``<img src>`` is a file inside the report's folder that PIL decodes, and that every
local ``<a href>`` exists.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from cdiflow.beamtime.report import write_report
from cdiflow.beamtime.report_figure import draw_scan, load_truth, real_pixel_nm
from cdiflow.beamtime.results import read_scan_result
from cdiflow.beamtime.steps import plan_scans, run_items_locally
from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig, truth_file, write_truth
from cdiflow.physics.fft import pad_centre
from cdiflow.pipelines.quickstart import _write_index

BEAMTIME = SyntheticBeamtimeConfig(scans=2, frames=6)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def check_page(page: Path) -> tuple[list[Path], list[Path]]:
    """Parse ``page``; assert its images decode and its local links exist; return both.

    Every ``<img src>`` must be a relative path to a file inside the page's folder that
    PIL opens and decodes; every ``<a href>`` without a scheme must name an existing file.
    """
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    root = page.parent.resolve()
    images, links = [], []
    for src in parser.images:
        assert src and not urlparse(src).scheme, src
        path = (root / unquote(src)).resolve()
        assert root in path.parents and path.is_file(), src
        with Image.open(path) as image:
            image.load()  # decodes the whole file, not only its header
            assert image.width > 0 and image.height > 0
        images.append(path)
    for href in parser.links:
        if urlparse(href).scheme or href.startswith("#"):
            continue
        path = (root / unquote(href)).resolve()
        assert path.is_file(), href
        links.append(path)
    return images, links


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, fast_config):
    """A synthetic beamtime of two scans, its truth files kept for the first only, run
    through the per-scan pipeline and reported: (out, summary rows, truth numbers)."""
    base = tmp_path_factory.mktemp("report")
    root = base / "beamtime"
    truth = write_synthetic_beamtime(root, BEAMTIME, np.random.default_rng(3))
    written = write_truth(root, {1: truth[1]}, BEAMTIME)  # what the writer wrote, again
    assert [p.name for p in written] == [f"{truth[1]['name']}.npz"]
    assert (root / "truth" / f"{truth[2]['name']}.npz").is_file()  # the writer's own
    (root / "truth" / f"{truth[2]['name']}.npz").unlink()  # scan 2: a scan without truth
    out = base / "out"
    items = plan_scans([root])
    provenance = {"model_version": "m", "config_hash": "c"}
    rows = run_items_locally(items, tiny_model, fast_config, out, provenance)
    write_report(out, rows, {"beamtime": "synthetic"})
    return out, rows, truth


def _full_row(out: Path, summary: dict) -> tuple[dict, dict]:
    """(a row for ``draw_scan``, the arrays) from a finished scan's HDF5 file."""
    arrays, attrs = read_scan_result(out / summary["result"])
    return {
        "scan": attrs["scan"],
        "source": attrs["source"],
        "verdict": attrs["verdict"],
        "refined_chi2": attrs["refined_chi2"],
        "parameters": json.dumps(attrs["preprocessing"]),
        "chi2_curve": arrays["chi2"],
        "start_chi2_curves": arrays["chi2_starts"],
        "answer_start": attrs["summary"]["answer_start"],
        **{k: arrays[k] for k in ("amplitude", "phase", "support", "modulus", "mask")},
        "refine_modulus": arrays["refine_modulus"],
        "refine_mask": arrays["refine_mask"],
    }, arrays


def test_report_images_decode_and_links_resolve(run):
    out, rows, _ = run
    assert [r["status"] for r in rows] == ["ok", "ok"]
    images, links = check_page(out / "report.html")
    assert sorted(p.name for p in images) == sorted(f"{r['key']}.png" for r in rows)
    assert set(images) <= set(links)  # each figure is a link to the full PNG
    assert "width:min(100%, 900px)" in (out / "report.html").read_text()


def test_each_scan_figure_is_a_png_with_its_panels_and_truth_only_where_known(run):
    out, rows, truth = run
    sizes = {}
    for summary in rows:
        png = out / summary["preview"]
        with Image.open(png) as image:
            assert image.format == "PNG"
            sizes[summary["number"]] = image.size
        row, arrays = _full_row(out, summary)
        fig, panels = draw_scan(row, arrays["phase_unwrapped"])
        data_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(data_axes) == len(panels)
        if summary["number"] == 1:
            assert truth_file(row["source"]) is not None
            assert panels[-2:] == ["truth amplitude", "truth phase"] and len(panels) == 6
            assert "error" in data_axes[4].get_title()
        else:
            assert truth_file(row["source"]) is None
            assert panels == ["pattern", "amplitude", "phase", "chi2"]
        assert data_axes[1].get_xlabel() == "pixels"  # no geometry in the record
        assert "grey: unmeasured" in data_axes[0].get_title()
        pattern = data_axes[0].images[0]
        unmeasured = np.ma.getmaskarray(pattern.get_array())
        np.testing.assert_array_equal(unmeasured, ~np.asarray(row["refine_mask"], bool))
        assert pattern.cmap.get_bad() == pytest.approx((0.6, 0.6, 0.6, 1.0))
    for width, height in sizes.values():
        assert 700 <= width <= 1400 and 500 <= height <= 800
    assert sizes[1][0] > sizes[2][0]  # the written figure has the truth column


def test_start_curves_hold_every_start_and_the_answer(run, fast_config):
    out, rows, _ = run
    for summary in rows:
        row, arrays = _full_row(out, summary)
        curves, best = arrays["chi2_starts"], arrays["chi2"]
        assert curves.shape == (fast_config.starts, fast_config.iterations)
        assert np.isfinite(curves[:, 0]).all()  # every start ran
        answer = summary["answer_start"]  # the summary's and the .h5's summary agree
        assert answer == row["answer_start"] and 0 <= answer < fast_config.starts
        np.testing.assert_array_equal(curves[answer], best)
        finals = curves[:, -1]
        assert np.nanmin(finals) <= best[-1]  # the answer is one of these starts
        assert len({float(f) for f in finals}) == fast_config.starts  # distinct runs
        fig, panels = draw_scan(row, arrays["phase_unwrapped"])
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        legend = [text.get_text() for text in axes[panels.index("chi2")].get_legend().texts]
        assert f"answer (start {answer})" in legend


def test_the_answer_start_names_the_start_whose_curve_is_the_answer(fast_config):
    """``_keep_best`` records which start it took: here the third of four (the second
    failed), whose curve, not the first start's, is the row's ``chi2_curve``."""
    from cdiflow.beamtime.refine import _keep_best
    from cdiflow.beamtime.rows import rows_to_batch
    from cdiflow.beamtime.schema import empty_row
    from cdiflow.errors import PhasingError
    from cdiflow.phasing.refine import RefineResult
    from cdiflow.phasing.refine_groups import GroupedResult

    config = fast_config.replace(starts=4)
    n, size = config.iterations, 64
    item = {"scan": "s", "key": "s", "number": 1, "source": "s.h5"}
    batch = rows_to_batch([empty_row(item, n, config.starts)])
    rng = np.random.default_rng(0)
    box = torch.zeros(size, size, dtype=torch.bool)
    box[16:48, 16:48] = True
    obj = torch.from_numpy(rng.standard_normal((4, size, size)) + 1j).to(torch.complex64) * box
    ends = torch.tensor([0.3, 0.1, 0.05, 0.2])  # start 1 lowest, but it failed
    chi2 = ends[:, None] * torch.linspace(4.0, 1.0, n)[None]
    result = RefineResult(
        obj=obj,
        final_obj=obj,
        support=box.expand(4, size, size),
        chi2=chi2,
        best_chi2=ends,
        final_chi2=ends,
        errors=(None, PhasingError("support collapsed"), None, None),
    )
    grouped = GroupedResult(result=result, iterations=torch.full((4,), n, dtype=torch.int64))
    _keep_best(batch, 0, grouped, 0, 32, config)
    assert batch["status"][0] == "ok" and batch["answer_start"][0] == 2
    curves = batch["start_chi2_curves"][0]
    np.testing.assert_array_equal(curves[batch["answer_start"][0]], batch["chi2_curve"][0])
    assert not np.array_equal(curves[0], batch["chi2_curve"][0])
    assert np.isnan(curves[1]).all()  # the failed start has no curve


def test_a_perfect_answer_scores_zero_after_twin_shift_and_phase(run):
    out, rows, truth = run
    row, _ = _full_row(out, rows[0])
    with np.load(truth_file(row["source"])) as data:
        k, d = 2, int(data["fourier_pixels"])
        obj = data["amplitude"][k] * np.exp(1j * data["phase"][k].astype(np.float64))
    size = row["amplitude"].shape[-1]
    placed = pad_centre(torch.from_numpy(obj), size).numpy()
    answer = np.roll(np.conj(placed[::-1, ::-1]), (2, -3), axis=(0, 1)) * np.exp(0.7j)
    row.update(amplitude=np.abs(answer), phase=np.angle(answer))
    found = load_truth(row, {"frame_index": k, "refine": {"crop": d}})
    assert found["frame"] == k
    assert found["amplitude_error"] < 1e-4 and found["phase_rms"] < 1e-2
    assert load_truth(dict(row, source=str(out / "nowhere")), {}) is None


def test_pixel_size_from_the_record_or_none():
    record = {"refine": {"crop": 192}}
    assert real_pixel_nm(record) is None
    geometry = {"wavelength_m": 1.5e-10, "distance_m": 1.0, "pixel_m": 55e-6}
    expected = 1.5e-10 * 1.0 / (192 * 55e-6) * 1e9
    assert real_pixel_nm({**record, "geometry": geometry}) == pytest.approx(expected)
    by_energy = {"energy_kev": 1.2398419843320026e-9 / 1.5e-10, "distance_m": 1.0, "pixel_m": 55e-6}
    assert real_pixel_nm({**record, **by_energy}) == pytest.approx(expected)
    assert real_pixel_nm({**record, "geometry": {**geometry, "pixel_m": None}}) is None


def test_axes_are_in_nm_when_the_geometry_is_recorded(run):
    out, rows, _ = run
    row, arrays = _full_row(out, rows[1])
    parameters = json.loads(row["parameters"])
    parameters["geometry"] = {"wavelength_m": 1.5e-10, "distance_m": 1.0, "pixel_m": 55e-6}
    fig, panels = draw_scan(dict(row, parameters=json.dumps(parameters)), arrays["phase_unwrapped"])
    data_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_xlabel() for ax in data_axes[1:3]] == ["nm", "nm"]
    half = data_axes[1].get_xlim()
    assert abs(half[1] - half[0]) == pytest.approx(real_pixel_nm(parameters) * 56, rel=1e-6)


def test_truth_file_rule(tmp_path):
    scan = tmp_path / "bt" / "DET" / "S_0001"
    scan.mkdir(parents=True)
    assert truth_file(str(scan)) is None
    (tmp_path / "bt" / "truth").mkdir()
    (tmp_path / "bt" / "truth" / "S_0001.npz").write_bytes(b"")
    assert truth_file(str(scan)) == tmp_path / "bt" / "truth" / "S_0001.npz"
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "x.h5.npz").write_bytes(b"")
    assert truth_file(f"{tmp_path / 'x.h5'}:/entry/data") == tmp_path / "truth" / "x.h5.npz"


def test_quickstart_index_shows_the_figures_in_the_workspace(tmp_path):
    figures = {
        "mlartifacts/r1/artifacts/figures/training_curves.png": (60, 40),
        "mlartifacts/r2/artifacts/evaluation/chi2_histograms.png": (80, 30),
        "mlartifacts/r2/artifacts/evaluation/samples.png": (50, 90),
    }
    for rel, size in figures.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / rel)
    report = tmp_path / "reports" / "synthetic" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    results = {"synthetic": {"report": str(report), "ok": 1, "failed": 0, "source": "s"}}
    page = _write_index(tmp_path, "3", True, results, {"reconstruct": 1.0})
    images, links = check_page(page)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == list(figures)
    assert report in links
    empty = tmp_path / "empty"
    empty.mkdir()
    page = _write_index(empty, "3", False, {}, {})
    assert check_page(page) == ([], []) and "No training" in page.read_text()


def test_an_unreadable_truth_file_draws_no_truth_panels(run, tmp_path):
    out, rows, _ = run
    row, arrays = _full_row(out, rows[1])
    scan = tmp_path / "DET" / "S_0002"
    scan.mkdir(parents=True)
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "S_0002.npz").write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="truth file unreadable"):
        _, panels = draw_scan(dict(row, source=str(scan)), arrays["phase_unwrapped"])
    assert panels == ["pattern", "amplitude", "phase", "chi2"]


@pytest.mark.parametrize("figures", ["none", "suspect"])
def test_figures_can_be_limited_and_the_report_still_checks(
    tmp_path, tiny_model, fast_config, figures
):
    root = tmp_path / "beamtime"
    write_synthetic_beamtime(root, BEAMTIME, np.random.default_rng(3))
    config = fast_config.replace(figures=figures)
    out = tmp_path / "out"
    rows = run_items_locally(plan_scans([root]), tiny_model, config, out, {})
    write_report(out, rows, {"beamtime": "synthetic"})
    drawn = {r["key"] for r in rows if r["preview"]}
    suspect = {r["key"] for r in rows if r["verdict"].startswith("suspect")}
    expected = suspect if figures == "suspect" else set()
    assert drawn == expected
    assert sorted(p.stem for p in (out / "previews").glob("*.png")) == sorted(drawn)
    assert all((out / r["result"]).is_file() for r in rows if r["status"] == "ok")
    images, _links = check_page(out / "report.html")
    assert len(images) == len(drawn)
    assert fast_config.replace(figures=figures).config_hash == fast_config.config_hash
