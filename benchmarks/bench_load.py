"""Load time: medsam_gui.io.load_volume against the plain library reads it stands on.

NIfTI: ``load_volume`` ÷ (``nibabel.load`` + ``np.asanyarray(img.dataobj)``).
DICOM: ``load_volume(folder)`` ÷ (``pydicom.dcmread`` of every file + ``pixel_array`` +
``np.stack``).
Medians of several runs, the two sides interleaved so machine noise hits both alike.
"dicom reopen" is the same folder opened again (the GUI lists a folder's series, then loads
one): discovery comes from the header cache, only pixels are read.
"kinds" lists and loads (cold, no header cache) the same series stored three ways: classic (a
file per slice), enhanced multi-frame (one file, per-frame functional groups, converted with
highdicom's legacy converter) and Siemens mosaic (one tiled file with a CSA header), each
÷ the classic series.

    python benchmarks/bench_load.py [--runs 7] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, List, Tuple

import sys
import tempfile

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
    kinds(args.data, args.runs)


def _timed(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        dicom_scan._SCAN_CACHE.clear()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kinds(data: Path, runs: int) -> None:
    """Seconds to list and to load each kind of DICOM storage of one series."""
    sys.path.insert(0, str(REPO / "tests"))
    from medsam_gui.io import list_series
    from test_dicom_vendors import enhanced, mosaic_of  # builds from the real classic series

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_model_input import cpu_model

    tmp = Path(tempfile.mkdtemp())
    print(f"\nCPU: {cpu_model()}; medians of {runs} cold runs (no header cache)")
    print(f"{'series / kind':<40} {'list s':>8} {'load s':>8} {'list ÷':>7} {'load ÷':>7}")
    for rel, make_mosaic in (("dicom/mr_brain_ax30_dwi_b0_toshiba", True),
                             ("dicom/ct_abdomen_siemens_jpeg2000", False),
                             ("dicom/mr_brain_sag_t1_siemens_HFS", False)):
        series = data / rel
        folders = {"classic": series}
        (tmp / series.name / "enhanced").mkdir(parents=True)
        enhanced(series).save_as(str(tmp / series.name / "enhanced" / "e.dcm"))
        folders["enhanced"] = tmp / series.name / "enhanced"
        if make_mosaic:
            (tmp / series.name / "mosaic").mkdir()
            mosaic_of(series).save_as(str(tmp / series.name / "mosaic" / "m.dcm"))
            folders["mosaic"] = tmp / series.name / "mosaic"
        base = None
        for kind, folder in folders.items():
            listing = _timed(lambda: list_series(folder), runs)
            loading = _timed(lambda: load_volume(folder), runs)
            base = base or (listing, loading)
            print(f"{series.name[:30] + ' ' + kind:<40} {listing:8.3f} {loading:8.3f} "
                  f"{listing / base[0]:7.2f} {loading / base[1]:7.2f}")


if __name__ == "__main__":
    main()
