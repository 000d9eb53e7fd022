"""Siemens mosaic images: one 2D image holding every slice of a volume as tiles.

Siemens EPI (fMRI, diffusion) is stored one volume per file, its N slices tiled row by row into
a square grid of ceil(sqrt(N))² tiles. ``tile_headers`` turns such a file into one header per
tile, with the tile's own ImagePositionPatient, so the ordinary series pipeline sorts, stacks
and splits volumes (4D: each file is one volume) as for classic files.

Taken from nibabel's ``nicom`` (maintained, and what dcm2niix's logic was checked against):
the CSA header parser (``csareader``: NumberOfImagesInMosaic, SliceNormalVector) and the
mosaic geometry of ``MosaicWrapper`` (the position of the first tile, correcting Siemens'
ImagePositionPatient, which refers to the corner of the whole mosaic; the slice normal's sign
taken from the CSA header, which says in which direction the tiles advance). Written here:
only the per-tile positions (first position + k × slice spacing along that normal, spacing from
SpacingBetweenSlices, else SliceThickness, as nibabel and dcm2niix do) and the tile cutting.
Without a CSA header, Siemens' (0019,100A) NumberOfImagesInMosaic is used and the tiles are
assumed to advance along the cross product of the orientation (said in a note).
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .dicom_enhanced import clone

with warnings.catch_warnings():  # "The DICOM readers are highly experimental": the wrappers
    warnings.simplefilter("ignore")  # are not used to read data here
    from nibabel.nicom import csareader
    from nibabel.nicom.dicomwrappers import MosaicWrapper

# header tags discovery must read for mosaics: CSA image header (private block 0x10..0x12),
# Siemens NumberOfImagesInMosaic, ImageType and the slice spacing
MOSAIC_TAGS = [Tag(0x0029, 0x0010), Tag(0x0029, 0x0011), Tag(0x0029, 0x0012),
               Tag(0x0029, 0x1010), Tag(0x0029, 0x1110), Tag(0x0029, 0x1210),
               Tag(0x0019, 0x0010), Tag(0x0019, 0x100A), "ImageType", "Manufacturer",
               "SpacingBetweenSlices", "SliceThickness"]


def _csa(ds: Dataset) -> Optional[dict]:
    try:
        return csareader.get_csa_header(ds)
    except Exception:
        return None


def mosaic_count(ds: Dataset) -> Optional[int]:
    """The number of tiles of a Siemens mosaic, or None when ``ds`` is no mosaic."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    csa = _csa(ds)
    n = None
    if csa is not None:
        try:
            n = csareader.get_n_mosaic(csa)
        except Exception:
            n = None
    if not n and "MOSAIC" in image_type:
        try:
            creator = ds.get(Tag(0x0019, 0x0010))
            if creator is not None and "SIEMENS" in str(creator.value).upper():
                n = int(ds[Tag(0x0019, 0x100A)].value)
        except Exception:
            n = None
    if not n or int(n) < 2 or ("MOSAIC" not in image_type and not (csa and csareader.is_mosaic(csa))):
        return None
    return int(n)


def tile_headers(ds: Dataset) -> Tuple[List[Dataset], List[str], int]:
    """One header per tile of the mosaic ``ds`` (tile order), notes, and the tile grid side.

    Raises ``ValueError`` with the reason when the mosaic cannot be cut (the size does not
    divide, no slice spacing, no position).
    """
    n = mosaic_count(ds)
    if not n:
        raise ValueError("not a mosaic")
    side = int(math.ceil(math.sqrt(n)))
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows % side or cols % side:
        raise ValueError(f"Siemens mosaic of {n} images: {cols}×{rows} does not divide into "
                         f"{side}×{side} tiles")
    csa = _csa(ds)
    notes: List[str] = []
    wrapper = MosaicWrapper(ds, csa_header=csa or {}, n_mosaic=n)
    first = wrapper.image_position
    if first is None:
        raise ValueError("Siemens mosaic without ImagePositionPatient, ImageOrientationPatient "
                         "or PixelSpacing")
    normal = np.asarray(wrapper.slice_normal, dtype=float)
    if csa is None or csareader.get_slice_normal(csa) is None:
        notes.append("Siemens mosaic without a CSA slice normal: tiles assumed to advance "
                     "along the row × column direction")
    spacing = None
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            value = 0.0
        if value > 0:
            spacing = value
            break
    if spacing is None:
        raise ValueError("Siemens mosaic without SpacingBetweenSlices or SliceThickness: the "
                         "slices cannot be placed")
    out = []
    for k in range(n):
        h = clone(ds)
        for tag in MOSAIC_TAGS[:6]:  # the big private header is not needed per tile
            if tag in h:
                del h[tag]
        h.Rows, h.Columns = rows // side, cols // side
        h.ImagePositionPatient = [float(v) for v in first + k * spacing * normal]
        out.append(h)
    return out, notes, side


def cut_tile(mosaic: np.ndarray, k: int, side: int) -> np.ndarray:
    """Tile ``k`` (row-major over the ``side`` × ``side`` grid) of a mosaic image."""
    rows, cols = mosaic.shape[0] // side, mosaic.shape[1] // side
    r, c = divmod(k, side)
    return mosaic[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols]
