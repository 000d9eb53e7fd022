"""Load time: medsam_gui.io.load_volume against the plain library reads it stands on.

NIfTI: ``load_volume`` ÷ (``nibabel.load`` + ``np.asanyarray(img.dataobj)``).
DICOM: ``load_volume(folder)`` ÷ (``pydicom.dcmread`` of every file + ``pixel_array`` +
``np.stack``).
Medians of several runs, the two sides interleaved so machine noise hits both alike.
"dicom reopen" is the same folder opened again (the GUI lists a folder's series, then loads
one): discovery comes from the header cache, only pixels are read.

    python benchmarks/bench_load.py [--runs 7] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, List, Tuple

import nibabel as nib
import numpy as np
import pydicom

from medsam_gui.io import dicom_scan, load_volume

REPO = Path(__file__).resolve().parents[1]
NIFTI_CASES = [
    "brain_tumour_brats2015/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz",
    "brain_template_mni152_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "abdomen_totalsegmentator/example_ct_sm.nii.gz",
]
DICOM_CASES = [
    "dicom/mr_brain_sag_t1_siemens_HFS",
    "dicom/mr_brain_ax30_dwi_b0_toshiba",
    "dicom/ct_abdomen_siemens_jpeg2000",
]


def _plain_nifti(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _plain_dicom(folder: Path) -> np.ndarray:
    datasets = [pydicom.dcmread(str(f)) for f in sorted(folder.iterdir())]
    return np.stack([ds.pixel_array for ds in datasets], axis=-1)


def _paired(ours: Callable[[], object], plain: Callable[[], object],
            runs: int) -> Tuple[float, float]:
    ours(), plain()  # warm the file cache and imports
    a: List[float] = []
    b: List[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        ours()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        plain()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    print(f"{'case':<58} {'ours ms':>8} {'plain ms':>9} {'ratio':>6}")
    def cold(path: Path) -> object:
        dicom_scan._SCAN_CACHE.clear()  # measure discovery every time
        return load_volume(path)

    for kind, cases, plain, ours in (("nifti", NIFTI_CASES, _plain_nifti, load_volume),
                                     ("dicom", DICOM_CASES, _plain_dicom, cold),
                                     ("dicom reopen", DICOM_CASES, _plain_dicom, load_volume)):
        ratios = []
        for rel in cases:
            path = args.data / rel
            ours_t, plain_t = _paired(lambda: ours(path), lambda: plain(path), args.runs)
            ratios.append(ours_t / plain_t)
            print(f"{kind + ': ' + path.name:<58} {ours_t * 1e3:8.1f} {plain_t * 1e3:9.1f} "
                  f"{ours_t / plain_t:6.2f}")
        median = statistics.median(ratios)
        print(f"{kind} load_volume ÷ plain read, median over cases: {median:.2f}")


if __name__ == "__main__":
    main()
