"""Damaged DICOM series (issue 18): every left-out file is named with its reason, the slices
that remain keep their true positions, special files never hang a scan, duplicates are named,
and the window shows what a load left out. All fixtures are real series from ../shared/data,
copied into tmp_path and then damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_fragments

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from conftest import DICOM, REPO

SAG = DICOM / "mr_brain_sag_t1_siemens_HFS"
TOSHIBA = DICOM / "mr_brain_ax30_dwi_b0_toshiba"
CT = DICOM / "ct_abdomen_siemens_jpeg2000"
pytestmark = pytest.mark.needs_data

_clean = {}


def _reference(series):
    """The undamaged load, and its files in slice order."""
    if series not in _clean:
        _clean[series] = load_volume(series)
    vol = _clean[series]
    return vol, list(vol.source.extra["files"])


def _copy(series, dst):
    """A writable copy of a series (the data pack is read-only)."""
    dst.mkdir()
    for f in sorted(series.iterdir()):
        shutil.copy(f, dst / f.name)
        os.chmod(dst / f.name, 0o644)
    return dst


def _in_copy(folder, path):
    return folder / os.path.basename(path)


def _slots(vol):
    """Slice index of each source file of ``vol`` (blank slices have none)."""
    missing = set(vol.source.extra["missing_slices"])
    present = [k for k in range(vol.shape[2]) if k not in missing]
    return dict(zip((os.path.basename(f) for f in vol.source.extra["files"]), present))


def _assert_same_places(damaged, clean):
    """Every slice of ``damaged`` shows the same pixels at the same world position as in the
    undamaged load."""
    ref_slots = _slots(clean)
    for name, k in _slots(damaged).items():
        r = ref_slots[name]
        assert np.array_equal(damaged.data[:, :, k], clean.data[:, :, r]), name
        world = damaged.affine @ np.array([0.0, 0.0, k, 1.0])
        assert np.allclose(world, clean.affine @ np.array([0.0, 0.0, r, 1.0]), atol=1e-3), name
    assert np.allclose(damaged.affine[:3, :3], clean.affine[:3, :3], atol=1e-6)


def _text_in_position(path):
    """Overwrite the ImagePositionPatient value bytes with text of the same length."""
    raw = pydicom.dcmread(path, stop_before_pixels=True).get_item(0x00200032).value
    data = path.read_bytes()
    assert data.count(raw) == 1
    path.write_bytes(data.replace(raw, b"unknown".ljust(len(raw), b" ")))


def _rewrite(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _set_matrix(ds):
    ds.Rows, ds.Columns = 128, 128  # the header only: the pixels stay 256 x 256


def _damage_sagittal(folder):
    """Cut one header short, put text in one position, change one matrix size, add a FIFO.
    Returns {file name: expected words in its reason} and the FIFO path."""
    _clean_vol, order = _reference(SAG)
    cut, text, matrix = (_in_copy(folder, order[k]) for k in (5, 17, 30))
    cut.write_bytes(cut.read_bytes()[:3000])
    _text_in_position(text)
    _rewrite(matrix, _set_matrix)
    fifo = folder / "pipe.dcm"
    os.mkfifo(fifo)
    return {cut.name: "ends at byte 3000, inside its header",
            text.name: "ImagePositionPatient is not 3 numbers",
            matrix.name: "matrix 128×128, not 256×256",
            fifo.name: "named pipe (FIFO)"}, fifo


def _run_load(folder, timeout=120):
    """load_volume in a child process: a hang fails the test instead of stopping it."""
    code = ("import json, sys\n"
            "from medsam_gui.io import load_volume\n"
            "v = load_volume(sys.argv[1])\n"
            "print(json.dumps({'shape': v.shape, 'dropped': v.source.dropped_files,\n"
            "                  'warnings': v.source.warnings,\n"
            "                  'missing': v.source.extra['missing_slices']}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, timeout=timeout,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_damaged_series_names_each_file_and_keeps_positions(tmp_path):
    folder = _copy(SAG, tmp_path / "sag")
    expected, _fifo = _damage_sagittal(folder)
    result = _run_load(folder)  # the FIFO must not hang the scan
    assert {os.path.basename(p) for p, _why in result["dropped"]} == set(expected)
    for path, why in result["dropped"]:
        assert expected[os.path.basename(path)] in why, (path, why)
    assert result["shape"] == [256, 256, 35] and result["missing"] == [5, 17, 30]
    assert "4 file(s) left out" in result["warnings"][0]
    assert sum(name in result["warnings"][0] for name in expected) == 3  # the first three...
    assert "and 1 more" in result["warnings"][0]  # ...then a count
    assert any("missing" in w and "5, 17, 30" in w for w in result["warnings"])

    damaged = load_volume(folder)  # in this process too, for the voxels and the affine
    clean, _order = _reference(SAG)
    assert damaged.shape == clean.shape and np.array_equal(damaged.affine, clean.affine)
    _assert_same_places(damaged, clean)
    assert all(damaged.data[:, :, k].max() == damaged.data.min() for k in (5, 17, 30))
    # the chooser offers the series once (the stray 128x128 header is no series of its own)
    infos = list_series(folder)
    assert len(infos) == 1 and infos[0].n_slices == 32
    assert {os.path.basename(p) for p, _w in infos[0].skipped_files} == set(expected) - {
        next(n for n, w in expected.items() if "matrix" in w)}


def test_gap_at_the_edge_moves_the_origin_not_the_slices(tmp_path):
    folder = _copy(TOSHIBA, tmp_path / "t")
    clean, order = _reference(TOSHIBA)
    first, inner = _in_copy(folder, order[0]), _in_copy(folder, order[8])
    _text_in_position(first)
    _text_in_position(inner)
    vol = load_volume(folder)
    assert vol.shape == (64, 64, 39) and vol.source.extra["missing_slices"] == [7]
    _assert_same_places(vol, clean)
    assert sorted(os.path.basename(p) for p, _w in vol.source.dropped_files) == sorted(
        [first.name, inner.name])


def test_fifo_given_directly_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "scan.dcm"
    os.mkfifo(fifo)
    code = ("import sys\nfrom medsam_gui.errors import MedsamError\n"
            "from medsam_gui.io import load_volume\n"
            "try:\n    load_volume(sys.argv[1])\nexcept MedsamError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(fifo)], cwd=REPO, timeout=120,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(fifo) in out.stdout and "FIFO" in out.stdout


def test_folder_of_damaged_files_only_names_them(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for f in sorted(TOSHIBA.iterdir())[:3]:
        (folder / f.name).write_bytes(f.read_bytes()[:2500])
    (folder / "empty.dcm").write_bytes(b"")
    with pytest.raises(MedsamError) as info:
        load_volume(folder)
    text = str(info.value)
    assert "no DICOM image series found (" in text and "1 empty file (0 bytes)" in text
    for name in ("0001.dcm", "0002.dcm", "0003.dcm"):  # each named: cut short
        assert f"{name}: no pixel data (the file ends after 2500 bytes: cut short?)" in text


def test_exact_duplicate_is_ignored_and_named(tmp_path):
    folder = _copy(TOSHIBA, tmp_path / "dup")
    clean, order = _reference(TOSHIBA)
    original = _in_copy(folder, order[11])
    shutil.copy(original, folder / "copy_of_0012.dcm")
    vol = load_volume(folder)
    assert np.array_equal(vol.data, clean.data) and np.array_equal(vol.affine, clean.affine)
    assert vol.source.dropped_files == [
        (str(folder / "copy_of_0012.dcm"),
         f"exact duplicate of {original.name} (same SOPInstanceUID and pixel data)")]
    assert any("copy_of_0012.dcm" in w for w in vol.source.warnings)


def test_same_sop_instance_with_other_pixels_names_both(tmp_path):
    folder = _copy(TOSHIBA, tmp_path / "conflict")
    _clean_vol, order = _reference(TOSHIBA)
    original = _in_copy(folder, order[11])
    twin = folder / "twin.dcm"
    shutil.copy(original, twin)
    os.chmod(twin, 0o644)

    def brighter(ds):
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()

    _rewrite(twin, brighter)
    with pytest.raises(MedsamError) as info:
        load_volume(folder)
    text = str(info.value)
    assert "claim the same SOPInstanceUID" in text
    assert original.name in text and "twin.dcm" in text


def test_many_files_at_one_position_are_named(tmp_path):
    folder = _copy(TOSHIBA, tmp_path / "flat")
    same = [float(v) for v in pydicom.dcmread(sorted(folder.iterdir())[0]).ImagePositionPatient]
    for f in sorted(folder.iterdir()):
        _rewrite(f, lambda ds: setattr(ds, "ImagePositionPatient", same))
    with pytest.raises(MedsamError) as info:
        load_volume(folder)
    text = str(info.value)
    assert "all 40 image files" in text and "lie at one position" in text
    assert "0001.dcm, 0002.dcm, 0003.dcm and 37 more" in text
    assert "2D image" not in text


def test_irregular_positions_are_refused_naming_the_file(tmp_path):
    folder = _copy(TOSHIBA, tmp_path / "irregular")
    _clean_vol, order = _reference(TOSHIBA)
    victim = _in_copy(folder, order[10])

    def shift(ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 1.8]  # 0.6 of the 3 mm spacing

    _rewrite(victim, shift)
    with pytest.raises(MedsamError, match="too irregular for one voxel grid") as info:
        load_volume(folder)
    assert victim.name in str(info.value)


def test_jpeg2000_decoder_errors_name_the_file(tmp_path):
    folder = _copy(CT, tmp_path / "ct")
    clean, order = _reference(CT)
    cut, broken = _in_copy(folder, order[4]), _in_copy(folder, order[12])
    cut.write_bytes(cut.read_bytes()[:-20000])  # the file ends inside its pixel data

    def half_codestream(ds):
        frames = [f for f in generate_fragments(ds.PixelData) if f]
        stream = frames[0][: len(frames[0]) // 2]
        ds.PixelData = encapsulate([stream + b"\0" * (len(stream) % 2)])

    _rewrite(broken, half_codestream)  # a whole file whose JPEG 2000 stream is cut
    vol = load_volume(folder)
    reasons = {os.path.basename(p): why for p, why in vol.source.dropped_files}
    assert set(reasons) == {cut.name, broken.name}
    assert "inside its pixel data" in reasons[cut.name]
    assert "cannot be decoded" in reasons[broken.name] and "JPEG 2000" in reasons[broken.name]
    assert vol.source.extra["missing_slices"] == [4, 12]
    _assert_same_places(vol, clean)


def test_undecodable_series_is_refused_with_names(tmp_path):
    folder = _copy(CT, tmp_path / "ct")
    for f in sorted(folder.iterdir())[:12]:
        f.write_bytes(f.read_bytes()[:-20000])
    with pytest.raises(MedsamError) as info:
        load_volume(folder)
    text = str(info.value)
    assert "12 of the 20 image files of this series cannot be used" in text
    assert sum(f.name in text for f in sorted(folder.iterdir())[:12]) == 3
    assert "and 9 more" in text and "inside its pixel data" in text


def test_scan_reports_progress_and_can_be_cancelled(tmp_path):
    import medsam_gui.io.dicom_scan as scan
    from medsam_gui.io.dicom_scan import ScanCancelled, list_dicom_series

    folder = _copy(TOSHIBA, tmp_path / "p")
    seen = []
    list_dicom_series(folder, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 40) and seen[-1] == (40, 40)
    calls = []
    scan._SCAN_CACHE.clear()  # the folder is cached now: scan it again
    with pytest.raises(ScanCancelled):
        list_dicom_series(folder, cancel=lambda: calls.append(1) or len(calls) > 1)


# ---- the window ------------------------------------------------------------------------------
@pytest.fixture
def window(qtbot, tmp_path):
    from PyQt5.QtCore import QSettings

    from medsam_gui.engine import EmbeddingCache
    from medsam_gui.ui.main_window import MainWindow

    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"),
                   cache=EmbeddingCache(max_bytes=1 << 20), load_model=False,
                   settings=QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    w.confirm_close = False
    w.use_disk_cache = False
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from PyQt5 import sip

    if not sip.isdeleted(w):
        w.shutdown()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_window_shows_a_warning_bar_naming_the_dropped_files(qtbot, window, tmp_path):
    folder = _copy(SAG, tmp_path / "sag")
    expected, _fifo = _damage_sagittal(folder)
    with qtbot.waitSignal(window.volume_loaded, timeout=60000):
        window.open_path(str(folder))
    bar = window.load_warning_bar
    qtbot.waitUntil(bar.isVisible, timeout=5000)
    text = bar.label.text()
    assert "4 file(s) left out" in text and "missing" in text
    assert sum(name in text for name in expected) == 3
    assert all(name in bar.label.toolTip() for name in expected)  # every one, with its reason
    assert bar.geometry().bottom() < window.slice_view.mapTo(window.centralWidget(),
                                                             window.slice_view.rect().topLeft()).y()
    bar.close_button.click()
    assert not bar.isVisible()
    with qtbot.waitSignal(window.volume_loaded, timeout=60000):  # a clean series: no bar
        window.open_path(str(TOSHIBA))
    assert not bar.isVisible()


def test_window_scans_a_folder_in_a_worker_and_can_cancel(qtbot, window, tmp_path, monkeypatch):
    import medsam_gui.io.dicom_scan as scan

    folder = _copy(TOSHIBA, tmp_path / "slow")
    release = threading.Event()
    real = scan.read_header

    def blocked(path):  # a folder on a hanging disk
        release.wait(30)
        return real(path)

    monkeypatch.setattr(scan, "read_header", blocked)
    scan._SCAN_CACHE.clear()
    task = window.open_path(str(folder))  # returns at once: the window keeps working
    progress = window.scan_progress
    assert task is not None and task.isRunning() and progress.isVisible()
    window.scan_progress.cancel_button.click()
    release.set()
    qtbot.waitUntil(lambda: not progress.isVisible(), timeout=30000)
    assert window.volume is None
    assert "Stopped reading" in window.statusBar().currentMessage()
