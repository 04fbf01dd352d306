"""Per-scan results in CXI (cxidb.org CXI 1.6), the HDF5 layout PyNX and silx read.

``cdiflow reconstruct`` writes ``OUT/scans/<key>.cxi`` beside ``OUT/scans/<key>.h5``:
the ``.h5`` stays cdiflow's own record (the resume logic reads its ``complete`` flag and
summary row); the ``.cxi`` holds the same answer in the community layout. Layout (all
arrays centred: the object box and the detector pattern both have their centre at
index ``n // 2``, see ``cdiflow.physics.fft``)::

    /cxi_version                         160 (dataset, as the spec has it; also a root attribute)
    /entry_1                             NXentry
      sample_1/name                      the scan name (NXsample)
      image_1                            NXdata, signal "data"
        data                             complex64 (S, S): the object, amplitude * exp(i phase)
        data_type                        "complex"
        data_space                       "real"
        support                          uint8 (S, S): the answer's support, 1 inside
        mask                             uint32 (P, P): the detector mask, CXI bits (below)
        process_1                        NXprocess
          program, version, git_sha, date    "cdiflow", its version, the commit, ISO 8601 UTC
          configuration                  JSON: the reconstruction config (ReconstructConfig)
          model                          the model version: "sha256:<hex>" or "models:/NAME/V"
          model_info                     JSON: the model's reference, config and metrics
          preprocessing                  JSON: the preprocessing parameters of this scan
          verdict                        "ok" or "suspect: <reason>"
          chi2                           float32 (iterations,): chi^2 (eq. 5) per iteration
      instrument_1/detector_1/mask       the same mask (a hard link): the CXI detector's mask
      data_1                             NXdata; data -> /entry_1/image_1/data (soft link)

Mask: the detector mask of the phased P x P pattern, as CXI's pixel mask, where a zero
value marks a good pixel and a nonzero one a pixel to leave out. cdiflow knows only
measured or not, so a measured pixel is 0 and an unmeasured one (detector gap, hot
pixel, beamstop, ...) is ``MASK_INVALID`` = 1 (CXI bit 0, ``PIXEL_IS_INVALID``);
``measured = mask == 0``. Unlike PyNX's object files, where ``image_1/mask`` is the
support, ``mask`` here is the detector's and the support is ``image_1/support``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cdiflow.formats import atomic

CXI_VERSION = 160
MASK_INVALID = np.uint32(1)  # CXI pixel-mask bit 0: PIXEL_IS_INVALID


@dataclass(frozen=True)
class CXIProcess:
    """What made a reconstruction: the strings of ``/entry_1/image_1/process_1``.

    ``configuration``, ``model_info`` and ``preprocessing`` are JSON text.
    """

    version: str
    git_sha: str
    configuration: str
    model: str
    model_info: str
    preprocessing: str
    verdict: str


def cxi_mask(measured: np.ndarray) -> np.ndarray:
    """A boolean mask of measured pixels -> CXI pixel mask (uint32: 0 good, 1 invalid)."""
    measured = np.asarray(measured, bool)
    return np.where(measured, np.uint32(0), MASK_INVALID).astype(np.uint32)


def write_cxi_result(
    path: Path,
    obj: np.ndarray,
    support: np.ndarray,
    measured: np.ndarray,
    chi2: np.ndarray,
    process: CXIProcess,
    scan: str = "",
) -> Path:
    """Write one scan's CXI file atomically (temp file in the same folder, then rename).

    Parameters
    ----------
    path : the final ``scans/<key>.cxi`` path (from ``cdiflow.beamtime.results.result_path``).
    obj : (S, S) complex object box, centred (written as complex64).
    support : (S, S) bool, the answer's support (the final one, or the start's).
    measured : (P, P) bool, True where the detector pixel was measured.
    chi2 : (iterations,) chi^2 curve.
    process : the provenance strings (``CXIProcess``).
    scan : the scan name, stored as ``/entry_1/sample_1/name``.

    Raises
    ------
    ValueError : ``obj`` and ``support`` differ in shape, or an array is not 2-D.
    """
    obj = np.asarray(obj).astype(np.complex64)
    support = np.asarray(support, bool)
    measured = np.asarray(measured, bool)
    if obj.ndim != 2 or measured.ndim != 2 or obj.shape != support.shape:
        raise ValueError(
            f"need a 2-D object and support of one shape and a 2-D mask, got object "
            f"{obj.shape}, support {support.shape}, mask {measured.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        _write_root(h5, scan)
        image = _write_image(h5["entry_1"], obj, support, measured)
        _process(image.create_group("process_1"), process, chi2)
        _write_links(h5["entry_1"], image)
    return path


def _write_root(h5, scan: str) -> None:
    """The file's CXI version and ``/entry_1`` with its sample name (created first)."""
    h5.create_dataset("cxi_version", data=CXI_VERSION)
    h5.attrs["cxi_version"] = CXI_VERSION
    h5.attrs["creator"] = "cdiflow"
    h5.attrs["default"] = "entry_1"
    entry = h5.create_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "data_1"
    sample = entry.create_group("sample_1")
    sample.attrs["NX_class"] = "NXsample"
    sample.create_dataset("name", data=str(scan))


def _write_image(entry, obj: np.ndarray, support: np.ndarray, measured: np.ndarray):
    """``image_1``: the object, its support and the detector mask; returns the group."""
    gzip = {"compression": "gzip", "compression_opts": 4}
    image = entry.create_group("image_1")
    _nxdata(image)
    image.create_dataset("data", data=obj, **gzip)
    image.create_dataset("data_type", data="complex")
    image.create_dataset("data_space", data="real")
    image.create_dataset("support", data=support.astype(np.uint8), **gzip)
    image.create_dataset("mask", data=cxi_mask(measured), **gzip)
    image["mask"].attrs["note"] = (
        "detector mask of the phased pattern (not of data): 0 measured, "
        "1 = CXI PIXEL_IS_INVALID (not measured)"
    )
    return image


def _write_links(entry, image) -> None:
    """The detector's mask and ``data_1``: links into ``image_1``, no second copy."""
    instrument = entry.create_group("instrument_1")
    instrument.attrs["NX_class"] = "NXinstrument"
    detector = instrument.create_group("detector_1")
    detector.attrs["NX_class"] = "NXdetector"
    detector["mask"] = image["mask"]  # a hard link: one dataset, two names

    data = entry.create_group("data_1")
    _nxdata(data)
    data["data"] = h5py.SoftLink("/entry_1/image_1/data")


def _nxdata(group) -> None:
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "data"
    group.attrs["interpretation"] = "image"


def _process(group, process: CXIProcess, chi2: np.ndarray) -> None:
    group.attrs["NX_class"] = "NXprocess"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fields = {
        "program": "cdiflow",
        "version": process.version,
        "git_sha": process.git_sha,
        "date": now,
        "configuration": process.configuration,
        "model": process.model,
        "model_info": process.model_info,
        "preprocessing": process.preprocessing,
        "verdict": process.verdict,
    }
    for name, text in fields.items():
        group.create_dataset(name, data=str(text))
    group.create_dataset("chi2", data=np.asarray(chi2, np.float32))
    group["chi2"].attrs["note"] = "chi^2 (eq. 5) of the answer's run, per iteration"
