"""The real window, driven with synthetic mouse events on real BRATS data (pytest-qt, offscreen).

One LiteMedSAM backend and one embedding cache are shared by all tests, and background
encoding is off, so only the tumour slice is ever encoded (a few CPU seconds in total).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PyQt5.QtCore import QEvent, QPointF, QSettings, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtWidgets import QApplication

from conftest import PAT1

pytestmark = pytest.mark.needs_data

FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
TRUTH = PAT1 / "OTMultiClass.nii.gz"


@pytest.fixture(scope="module")
def backend():
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam")


@pytest.fixture(scope="module")
def cache():
    from medsam_gui.engine import EmbeddingCache

    return EmbeddingCache(max_bytes=256 << 20)


@pytest.fixture
def make_window(qtbot, tmp_path, request):
    from medsam_gui.ui.main_window import MainWindow

    windows = []

    def make(workspace=None, with_model=True):
        w = MainWindow(background=False, workspace_dir=str(workspace or tmp_path / "ws"),
                       cache=request.getfixturevalue("cache"), load_model=False,
                       settings=QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
        w.confirm_close = False
        w.use_disk_cache = False
        if with_model:
            w.backend = request.getfixturevalue("backend")
        qtbot.addWidget(w)
        w.resize(1100, 800)
        w.show()
        qtbot.waitExposed(w)
        windows.append(w)
        return w

    yield make
    from PyQt5 import sip

    for w in windows:
        if not sip.isdeleted(w):  # pytest-qt may have closed and deleted it already
            w.shutdown()


def open_and_wait(qtbot, window, path, session=True):
    with qtbot.waitSignal(window.volume_loaded, timeout=60000):
        window.open_path(str(path))
    if session:
        qtbot.waitUntil(lambda: window.session is not None, timeout=60000)


@pytest.fixture(scope="module")
def tumour():
    """Axial slice with the largest whole-tumour area and its ground truth (display order)."""
    from medsam_gui.io import load_volume

    vol = load_volume(FLAIR)
    truth = np.asarray(nib.load(str(TRUTH)).dataobj) > 0
    geom = vol.geometry("axial")
    index = int(np.argmax([geom.take(truth, i).sum() for i in range(geom.n_slices)]))
    return index, geom.take(truth, index).copy()


def bbox(mask):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def drag(qtbot, window, box, modifier=Qt.NoModifier, button=Qt.LeftButton, view=None):
    """Press, move and release over ``box`` on ``view`` (default: the active view's canvas)."""
    view = view or window.slice_view
    p0 = view.image_to_viewport(box[0], box[1])
    p1 = view.image_to_viewport(box[2], box[3])
    mid = (p0 + p1) / 2
    qtbot.mousePress(view.viewport(), button, modifier, p0)
    for p in (mid, p1):  # QTest's mouseMove sends nothing while a button is held (offscreen)
        QApplication.sendEvent(view.viewport(), QMouseEvent(QEvent.MouseMove, QPointF(p),
                                                            Qt.NoButton, button, modifier))
    qtbot.mouseRelease(view.viewport(), button, modifier, p1)


def label_slice(window, index, value=1):
    return window.labelmap.slice(window.volume.geometry("axial"), index) == value


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def box_on_tumour(qtbot, window, tumour, modifier=Qt.NoModifier):
    index, truth = tumour
    window.set_index(index)
    with qtbot.waitSignal(window.mask_applied, timeout=60000):
        drag(qtbot, window, bbox(truth), modifier)


def test_box_on_tumour_gives_ground_truth_like_mask(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    box_on_tumour(qtbot, w, tumour)
    index, truth = tumour
    assert dice(label_slice(w, index), truth) >= 0.7
    rec = w.labelmap.records[("axial", index, 1)]
    assert rec.status == "model" and len(rec.boxes) == 1
    assert rec.model == w.backend.name and rec.weights_sha256 == w.backend.weights_sha256
    assert rec.iou is not None and rec.model_mask_sha256
    assert len(w.slice_view._box_items) == 1  # the box stays visible

    # the box is redrawable: drag its right edge outwards; it still is one object
    bx0, by0, bx1, by1 = rec.boxes[0]
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, (bx1, (by0 + by1) / 2, bx1 + 6, (by0 + by1) / 2))
    boxes = w.labelmap.records[("axial", index, 1)].boxes
    assert len(boxes) == 1 and boxes[0][2] == pytest.approx(bx1 + 6, abs=1.0)
    assert boxes[0][0] == pytest.approx(bx0) and boxes[0][3] == pytest.approx(by1)

    # a second box on the same object replaces its mask; Shift adds another object
    x0, y0, x1, y1 = bbox(truth)
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, (x0 + 3, y0 + 3, x1 - 3, y1 - 3))
    assert len(w.labelmap.records[("axial", index, 1)].boxes) == 1
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, (20, 20, 60, 60), Qt.ShiftModifier)
    assert len(w.labelmap.records[("axial", index, 1)].boxes) == 2
    assert len(w.slice_view._box_items) == 2

    # a point refines the active object through the same decoder
    w.set_tool("point")
    before = w.labelmap.array.copy()
    p = w.slice_view.image_to_viewport((x0 + x1) / 2, (y0 + y1) / 2)
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        qtbot.mouseClick(w.slice_view.viewport(), Qt.LeftButton, pos=p)
    assert len(w.labelmap.records[("axial", index, 1)].points) == 1
    corner = w.slice_view.image_to_viewport(x0 + 2, y0 + 2)
    with qtbot.waitSignal(w.mask_applied, timeout=60000):  # right click: exclude
        qtbot.mouseClick(w.slice_view.viewport(), Qt.RightButton, pos=corner)
    assert [p[2] for p in w.labelmap.records[("axial", index, 1)].points] == [1, 0]
    w.undo()
    assert w.history.can_undo
    w.undo()
    assert np.array_equal(w.labelmap.array, before)


def test_reopen_restores_the_boxes(qtbot, make_window, tumour, tmp_path):
    ws = tmp_path / "ws_boxes"
    w = make_window(workspace=ws)
    open_and_wait(qtbot, w, FLAIR)
    box_on_tumour(qtbot, w, tumour)
    index, truth = tumour
    saved = w.labelmap.array.copy()
    w.flush_autosave()
    w2 = make_window(workspace=ws)
    open_and_wait(qtbot, w2, FLAIR)
    w2.set_index(index)
    assert np.array_equal(w2.labelmap.array, saved)
    assert w2.labelmap.records[("axial", index, 1)].status == "model"
    assert len(w2.slice_view._box_items) == 1  # the box is back on the slice
    x0, y0, x1, y1 = bbox(truth)
    with qtbot.waitSignal(w2.mask_applied, timeout=60000):  # and replaces its object
        drag(qtbot, w2, (x0 + 4, y0 + 4, x1 - 4, y1 - 4))
    rec = w2.labelmap.records[("axial", index, 1)]
    assert len(rec.boxes) == 1
    expected = w2.session.predict("axial", index, rec.boxes[0]).mask
    assert np.array_equal(label_slice(w2, index), expected)  # the old mask is gone


def test_undo_redo_restore_exact_arrays(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    index, truth = tumour
    states = [w.labelmap.array.copy()]
    box_on_tumour(qtbot, w, tumour)
    states.append(w.labelmap.array.copy())
    w.set_tool("brush")
    w.brush_size.setValue(4)
    drag(qtbot, w, (30, 30, 60, 40))
    states.append(w.labelmap.array.copy())
    w.set_tool("eraser")
    x0, y0, x1, y1 = bbox(truth)
    drag(qtbot, w, (x0, (y0 + y1) / 2, x1, (y0 + y1) / 2 + 1))
    states.append(w.labelmap.array.copy())
    assert all(not np.array_equal(a, b) for a, b in zip(states, states[1:]))
    for expected in reversed(states[:-1]):
        w.undo()
        assert np.array_equal(w.labelmap.array, expected)
    assert not w.history.can_undo
    for expected in states[1:]:
        w.redo()
        assert np.array_equal(w.labelmap.array, expected)
    # >= 100 undo steps
    for i in range(105):
        w.annotator.stroke("axial", index, 1, _disc(truth.shape, 10 + i % 50, 10), i % 2 == 1)
    for _ in range(105):
        w.undo()
    assert np.array_equal(w.labelmap.array, states[-1])


def _disc(shape, x, y, r=3):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def test_brush_and_eraser_change_pixels_and_mark_edited(qtbot, make_window, tumour):
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, FLAIR, session=False)
    index, _truth = tumour
    w.set_index(index)
    w.set_tool("brush")
    w.brush_size.setValue(3)
    drag(qtbot, w, (100, 100, 140, 110))
    painted = label_slice(w, index)
    assert 100 < painted.sum() < 2000
    assert painted[100, 100] and painted[110, 140] and not painted[50, 50]
    assert w.labelmap.records[("axial", index, 1)].status == "edited"
    w.set_tool("eraser")
    drag(qtbot, w, (120, 98, 121, 112))
    erased = label_slice(w, index)
    assert erased.sum() < painted.sum() and not erased[105, 120]
    # a ring, then fill-hole; clear slice empties it; accept marks the record
    w.annotator.stroke("axial", index, 1, _disc(painted.shape, 60, 60, 8) & ~_disc(painted.shape, 60, 60, 5), False)
    w.fill_holes()
    assert label_slice(w, index)[60, 60]
    w.accept_slice()
    assert w.labelmap.records[("axial", index, 1)].status == "accepted"
    w.clear_slice()
    assert not label_slice(w, index).any()


def test_export_matches_source_grid(qtbot, make_window, tumour, tmp_path, monkeypatch):
    from PyQt5.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: shown.append(a[2]))
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, FLAIR, session=False)
    index, truth = tumour
    w.annotator.stroke("axial", index, 1, truth, False)
    out = w.export_labels(str(tmp_path / "out_labels.nii.gz"))
    assert out is not None and str(out) in w.last_report[2]  # the Details of the report
    src, img = nib.load(str(FLAIR)), nib.load(str(out))
    assert img.shape == src.shape
    assert np.allclose(img.affine, src.affine)
    data = np.asarray(img.dataobj)
    gt = np.asarray(nib.load(str(TRUTH)).dataobj) > 0
    geom = w.volume.geometry("axial")
    assert np.array_equal(geom.take(data, index) > 0, geom.take(gt, index))
    assert (tmp_path / "out_labels.json").exists()
    assert not w.unexported


def test_autosave_and_reopen_restore_labels(qtbot, make_window, tumour, tmp_path):
    ws = tmp_path / "workspace"
    w = make_window(workspace=ws, with_model=False)
    open_and_wait(qtbot, w, FLAIR, session=False)
    index, truth = tumour
    w.labels.add_label("oedema")
    w.annotator.stroke("axial", index, 2, truth, False)
    w.changed()
    qtbot.waitUntil(lambda: w.last_saved_folder is not None, timeout=30000)
    saved = w.labelmap.array.copy()
    w2 = make_window(workspace=ws, with_model=False)
    open_and_wait(qtbot, w2, FLAIR, session=False)
    assert np.array_equal(w2.labelmap.array, saved)
    assert [l.name for l in w2.labelmap.table.labels] == ["label 1", "oedema"]
    assert w2.labelmap.records[("axial", index, 2)].status == "edited"


def test_background_encoding_follows_the_slice(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    index, _truth = tumour
    w.set_index(index)
    w.precomputer.enabled, w.precomputer.radius = True, 1  # 3 slices: little CPU in CI
    w.precomputer.follow(w.session, "axial", index, immediate=True)
    qtbot.waitUntil(lambda: {index - 1, index, index + 1} <= w.session.cached_indices("axial")
                    and not w.precomputer.running, timeout=120000)
    w._update_strip_cache()
    assert {index - 1, index, index + 1} <= w.strip.cached and w.strip.current == index


def test_encode_whole_volume_can_be_cancelled(qtbot, make_window):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    w.set_index(5)
    w.encode_volume()
    task = w._encode_task
    with qtbot.waitSignal(task.progress, timeout=60000):
        pass
    task.cancel()
    qtbot.waitUntil(task.isFinished, timeout=120000)
    cached = w.session.cached_indices("axial")
    assert 0 < len(cached) < w.volume.n_slices("axial")
    qtbot.waitUntil(lambda: w.strip.cached == cached, timeout=10000)


def test_model_menu_and_training_dialog_wiring(qtbot, make_window, monkeypatch, tmp_path):
    import json
    import sys
    import types

    from PyQt5.QtCore import pyqtSignal
    from PyQt5.QtWidgets import QDialog

    from medsam_gui.engine.loading import bundled_checkpoint

    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    w._rebuild_model_menu()
    names = [a.text() for a in w.model_menu.actions() if a.text()]
    assert names[0] == "LiteMedSAM (bundled)" and w.model_menu.actions()[0].isChecked()
    assert "Load checkpoint…" in names and "Train on annotations…" in names

    class StubDialog(QDialog):  # stands in for the training engineer's dialog
        model_ready = pyqtSignal(str)
        made = []

        def __init__(self, workspace_dirs, base_backend, parent=None):
            super().__init__(parent)
            StubDialog.made.append((workspace_dirs, base_backend))

    module = types.ModuleType("medsam_gui.ui.training_dialog")
    module.TrainingDialog = StubDialog
    monkeypatch.setitem(sys.modules, "medsam_gui.ui.training_dialog", module)
    w.open_training()
    assert StubDialog.made == [([str(w.workspace.folder)], w.backend)]
    # "Use this model": a fine-tuned checkpoint (here a copy of the bundled weights + metadata)
    ckpt = tmp_path / "tuned.pth"
    ckpt.write_bytes(open(bundled_checkpoint()[0], "rb").read())
    (tmp_path / "tuned.json").write_text(json.dumps({"kind": "litemedsam", "base": {}}))
    old_backend, session = w.backend, w.session
    w._training_dialog.model_ready.emit(str(ckpt))
    qtbot.waitUntil(lambda: w.backend is not old_backend, timeout=60000)
    assert w.session is session and session.backend is w.backend
    assert w.backend.checkpoint == str(ckpt) and "LiteMedSAM" in w.model_label.text()


def _submenu(menu, title):
    return next(a.menu() for a in menu.actions() if a.menu() is not None and a.text() == title)


def _action(menu, starts):
    return next(a for a in menu.actions() if a.text().startswith(starts))


def test_model_modality_and_input_menus(qtbot, make_window, tumour, monkeypatch):
    """Model ▸ Modality and Model ▸ Model input: shown in the status bar, keyed per choice,
    recorded in each slice's provenance; "Same as display window" follows a window drag."""
    w = make_window()
    errors = []
    monkeypatch.setattr(w, "show_error", lambda title, msg: errors.append((title, msg)))
    open_and_wait(qtbot, w, FLAIR)
    assert w.input_label.text().startswith("input: MR (guessed) · foreground 0.5–99.5 %")
    w._rebuild_model_menu()
    modality, model_input = _submenu(w.model_menu, "Modality"), _submenu(w.model_menu, "Model input")
    assert _action(modality, "Automatic (MR, guessed").isChecked()
    assert not _action(model_input, "CT lung").isEnabled()  # CT presets need CT

    session = w.session
    _action(modality, "CT").trigger()
    qtbot.waitUntil(lambda: session.model_input.modality == "CT", timeout=30000)
    # the label is set on the GUI thread after the worker has changed the session
    qtbot.waitUntil(lambda: w.input_label.text().startswith("input: CT · soft tissue L 40 W 400"),
                    timeout=30000)
    w._rebuild_model_menu()
    assert _action(_submenu(w.model_menu, "Model input"), "CT lung").isEnabled()
    _action(_submenu(w.model_menu, "Modality"), "Automatic").trigger()
    qtbot.waitUntil(lambda: session.model_input.modality == "auto", timeout=30000)

    w.set_model_input(w.model_input.__class__("CT", (5000.0, 10.0)))  # no voxel reaches it
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert "no voxel lies inside the model window" in errors[-1][1]
    assert session.model_input.modality == "auto" and w.model_input.window is None

    _action(_submenu(w.model_menu, "Model input"), "Same as display window").trigger()
    qtbot.waitUntil(lambda: w.follows_display and session.model_input.window is not None,
                    timeout=30000)
    before = session.model_input.window
    index, truth = tumour
    w.set_index(index)
    drag(qtbot, w, (100, 100, 140, 120), button=Qt.RightButton)  # window/level, then release
    assert w.window_lw != before
    qtbot.waitUntil(lambda: session.model_input.window == tuple(w.window_lw), timeout=30000)
    assert not session.is_cached("axial", index)  # re-encoded lazily, at the next box
    box_on_tumour(qtbot, w, tumour)
    rec = w.labelmap.records[("axial", index, 1)]
    assert rec.model_input["rule"] == "window" and rec.model_input["name"] == "display window"
    assert rec.model_input["level"] == pytest.approx(w.window_lw[0])
    assert dice(label_slice(w, index), truth) >= 0.6
    assert len(errors) == 1  # only the refused window


def test_constant_volume_opens_and_says_why_it_cannot_be_segmented(qtbot, make_window, tmp_path,
                                                                  monkeypatch):
    w = make_window()
    errors = []
    monkeypatch.setattr(w, "show_error", lambda title, msg: errors.append((title, msg)))
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((20, 20, 8), 3.0, np.float32), np.eye(4)), str(path))
    open_and_wait(qtbot, w, path, session=False)
    qtbot.waitUntil(lambda: w.session_error is not None, timeout=30000)
    assert "constant" in w.session_error and str(path) in w.session_error
    assert errors and "constant" in errors[-1][1]
    drag(qtbot, w, (2, 2, 12, 12))
    assert len(errors) == 2 and "constant" in errors[-1][1]  # asked again, still no crash
    assert w.volume is not None and not w.labelmap.array.any()
