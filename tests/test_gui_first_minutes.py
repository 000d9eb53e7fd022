"""What a clinician hits first: several boxes of one label on one slice, and where the work is
saved (pytest-qt, offscreen; the JPEG 2000 abdominal CT and BRATS FLAIR, the real model)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PyQt5.QtCore import QSettings

from conftest import DICOM, PAT1
from test_model_input import on_grid
from test_gui_window import (backend, bbox, cache, drag, make_window,  # noqa: F401
                             open_and_wait)

pytestmark = pytest.mark.needs_data

CT = DICOM / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
SPLEEN, LIVER = 1, 5


def box(qtbot, w, b, **kw):
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, b, **kw)
    return w.labelmap.slice(w.volume.geometry("axial"), w.index).copy()


def test_a_second_box_elsewhere_adds_and_an_overlapping_box_replaces(qtbot, make_window):
    w = make_window()
    open_and_wait(qtbot, w, CT)
    geom = w.volume.geometry("axial")
    organs = on_grid(CT_LABELS, w.volume)
    k = int(np.argmax([(geom.take(organs, i) == SPLEEN).sum() for i in range(geom.n_slices)]))
    w.set_index(k)
    spleen, liver = (geom.take(organs, k) == v for v in (SPLEEN, LIVER))
    states = [w.labelmap.slice(geom, k).copy()]
    states.append(box(qtbot, w, bbox(spleen)))
    first = states[-1] == 1
    assert (first & spleen).sum() > 0.8 * spleen.sum()
    states.append(box(qtbot, w, bbox(liver)))  # no Shift, overlaps nothing: a new object
    both = states[-1] == 1
    assert (both & first).sum() == first.sum()  # the spleen mask is all still there
    assert (both & liver).sum() > 0.8 * liver.sum()
    assert len(w.annotator.objects[("axial", k, 1)]) == 2
    x0, y0, x1, y1 = bbox(liver)
    # inside the liver box (away from its edges, which would resize it): replaces that object
    smaller = (x0 + 10, y0 + 10, (x0 + x1) / 2, y1 - 10)
    states.append(box(qtbot, w, smaller))
    replaced = states[-1] == 1
    assert (replaced & first).sum() == first.sum()  # the spleen is untouched
    assert replaced.sum() < both.sum()  # the liver mask shrank to the half box
    assert len(w.annotator.objects[("axial", k, 1)]) == 2
    for expected in reversed(states[:-1]):  # undo of each step restores the exact arrays
        w.undo()
        assert np.array_equal(w.labelmap.slice(geom, k), expected)


def window_without_workspace(qtbot, tmp_path, place=None):
    from medsam_gui.ui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    if place:
        settings.setValue("workspace/place", place)
    w = MainWindow(background=False, load_model=False, settings=settings)
    w.confirm_close = False
    w.use_disk_cache = False
    qtbot.addWidget(w)
    return w


def stroke(w, index):
    mask = np.zeros(w.volume.geometry("axial").slice_shape, bool)
    mask[100:120, 100:120] = True
    w.set_index(index)
    w._on_stroke(mask, erase=False)
    assert w.flush_autosave()


@pytest.fixture
def scans(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAM_GUI_DATA_DIR", str(tmp_path / "userdata"))
    folder = tmp_path / "scans"
    folder.mkdir()
    scan = folder / "flair.nii.gz"
    shutil.copy(PAT1 / "Flair_subtrMeanDivStd.nii.gz", scan)
    return scan


def test_work_is_saved_in_the_user_folder_and_found_from_a_copy(qtbot, tmp_path, scans,
                                                                 monkeypatch):
    opened = []
    monkeypatch.setattr("medsam_gui.ui.workspace_menu.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()))
    w = window_without_workspace(qtbot, tmp_path)
    open_and_wait(qtbot, w, scans, session=False)
    stroke(w, 70)
    assert os.listdir(scans.parent) == ["flair.nii.gz"]  # nothing written beside the scan
    assert w.workspace.folder == tmp_path / "userdata" / "workspaces"
    assert (w.workspace.volume_dir(w.volume) / "labels.nii.gz").is_file()
    assert w.workspace_label.text() == "saved in: user data folder"
    assert str(w.workspace.volume_dir(w.volume)) in w.workspace_label.toolTip()
    assert w.show_workspace_folder() == str(w.workspace.volume_dir(w.volume)) == opened[0]
    saved = w.labelmap.array.copy()
    w.shutdown()
    copy = tmp_path / "cd-rom" / "same_scan.nii.gz"
    copy.parent.mkdir()
    shutil.copy(scans, copy)
    w2 = window_without_workspace(qtbot, tmp_path)
    open_and_wait(qtbot, w2, copy, session=False)
    assert np.array_equal(w2.labelmap.array, saved)
    w2.shutdown()


def test_an_autosave_that_fails_goes_to_the_user_folder_and_says_so(qtbot, tmp_path, scans):
    w = window_without_workspace(qtbot, tmp_path, place="beside")
    open_and_wait(qtbot, w, scans, session=False)
    beside = scans.parent / "flair.medsam"
    assert w.workspace.folder == beside
    assert w.workspace_label.text() == "saved in: beside the scan"
    stroke(w, 70)
    assert (beside / w.workspace.key(w.volume) / "labels.nii.gz").is_file()
    shutil.rmtree(beside)
    beside.write_bytes(b"")  # the place went away: saving there now fails
    stroke(w, 71)
    assert w.workspace.folder == tmp_path / "userdata" / "workspaces"
    assert "instead" in w.statusBar().currentMessage()
    assert w.workspace_label.text() == "saved in: user data folder"
    from medsam_gui.annotation import Workspace

    restored = Workspace(tmp_path / "userdata" / "workspaces").load(w.volume)
    assert np.array_equal(restored.array, w.labelmap.array)
    w.shutdown()


def test_an_unwritable_beside_place_falls_back_when_opening(qtbot, tmp_path, scans):
    (scans.parent / "flair.medsam").write_bytes(b"")  # cannot become a folder
    w = window_without_workspace(qtbot, tmp_path, place="beside")
    open_and_wait(qtbot, w, scans, session=False)
    assert w.workspace.folder == tmp_path / "userdata" / "workspaces"
    assert "instead" in w.statusBar().currentMessage()
    w.shutdown()
