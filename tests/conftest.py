"""Shared fixtures: the real data pack in ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSAM_TEST_DATA", REPO.parent / "shared" / "data"))

BRATS = DATA / "brain_tumour_brats2015"
PAT1 = BRATS / "brats_2013_pat0001_1"
PAT2 = BRATS / "brats_2013_pat0002_1"
ABDOMEN = DATA / "abdomen_totalsegmentator"
MNI = DATA / "brain_template_mni152_nilearn"
DICOM = DATA / "dicom"


def pytest_collection_modifyitems(config, items):
    if DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real test data not found at {DATA} (../shared/data)")
    for item in items:
        if "needs_data" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data: reads the real data in ../shared/data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (../shared/data)")
    return DATA


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs that can be filled up, for full-disk tests (needs root and mount; else
    the test is skipped, saying why)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up here ({r.stderr.strip()})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill_up(disk: Path) -> Path:
    """Write zeros into ``disk`` until it is full; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def queue_labelmap(shape, geom, keys, fills):
    """A label map of label 1 as the window holds it after a propagation: key slices reviewed
    (``keys``: slice -> (mask,) or () for an empty key slice), fills with their model IoU
    (``fills``: slice -> (mask, iou))."""
    from medsam_gui.annotation.labels import LabelMap, SliceRecord

    lm = LabelMap(shape)
    for k, m in keys.items():
        lm.records[("axial", k, 1)] = SliceRecord("axial", k, 1, status="edited")
        if m:
            geom.take(lm.array, k)[m[0]] = 1
    for i, (mask, iou) in fills.items():
        lm.records[("axial", i, 1)] = SliceRecord("axial", i, 1, iou=iou, method="propagated",
                                                  from_slices=[i])
        geom.take(lm.array, i)[mask] = 1
    return lm
