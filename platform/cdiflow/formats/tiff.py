"""TIFF pages as arrays: the one reader the 34-ID-C layout and generic sources share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from cdiflow.formats.scan import ScanReadError, check_source_size, declared_nbytes


def read_tiff_stack(
    path: Path, error: type[ScanReadError] = ScanReadError, max_bytes: int | None = None
) -> np.ndarray:
    """All pages of a TIFF as one array: (H, W) for one page, (F, H, W) for several.

    Every failure (missing, truncated, no image page) raises ``error`` naming the file;
    pages that decode to more than ``max_bytes`` raise ``SourceTooLarge`` unread.
    """
    if not path.is_file():
        raise error(path, "file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            if pages == 0:
                raise error(path, "unreadable TIFF (no image page)")
            first = tif.pages[0]  # the stack needs every page of this shape and dtype
            check_source_size(pages * declared_nbytes(first.shape, first.dtype), max_bytes, path)
            return tif.asarray(key=range(pages)) if pages > 1 else tif.asarray()
    except ScanReadError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise error(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None
