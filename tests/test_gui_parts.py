"""GUI pieces on real data without the model: rendering, views, window/level, labels panel,
opening paths, closing, background-encoding retry. Offscreen, no encoder runs here."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PyQt5.QtCore import QEvent, QMimeData, QPointF, QSettings, Qt, QUrl
from PyQt5.QtGui import QDropEvent
from PyQt5.QtWidgets import QMessageBox

from conftest import ABDOMEN, DICOM, PAT1

FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
SAG_T1 = DICOM / "mr_brain_sag_t1_siemens_HFS"
CT = DICOM / "ct_abdomen_siemens_jpeg2000"


@pytest.fixture
def window(qtbot, tmp_path):
    from medsam_gui.ui.main_window import MainWindow

    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    qtbot.addWidget(w)
    w.resize(1000, 760)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from PyQt5 import sip

    if not sip.isdeleted(w):
        w.shutdown()


def move(widget, pos, buttons=Qt.NoButton):
    """A real mouse-move event (QTest's mouseMove does not deliver one while a button is held
    on the offscreen platform)."""
    from PyQt5.QtGui import QMouseEvent
    from PyQt5.QtWidgets import QApplication

    event = QMouseEvent(QEvent.MouseMove, QPointF(pos), Qt.NoButton, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, event)


def open_and_wait(qtbot, w, path):
    with qtbot.waitSignal(w.volume_loaded, timeout=60000):
        w.open_path(str(path))


def test_render_window_level_and_overlay():
    from medsam_gui.ui import render

    data = np.array([[-100.0, 0.0], [50.0, 300.0]], np.float32)
    copy = data.copy()
    out = render.windowed_uint8(data, (50.0, 100.0))  # 0..100 -> 0..255
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0], [127, 255]]
    assert np.array_equal(data, copy)
    lut = render.color_lut([(1, (255, 0, 0), True), (2, (0, 255, 0), False)], 0.5)
    assert lut[1].tolist() == [255, 0, 0, 128] and lut[2, 3] == 0 and lut[0, 3] == 0
    assert render.overlay_image(np.zeros((4, 4), np.uint16), lut) is None
    assert render.overlay_image(np.full((4, 4), 2, np.uint16), lut) is None  # hidden label
    img = render.overlay_image(np.eye(4, dtype=np.uint16), lut)
    assert (img.width(), img.height()) == (4, 4)


@pytest.mark.needs_data
def test_views_letters_aspect_and_slider(qtbot, window):
    open_and_wait(qtbot, window, SAG_T1)  # 1.016 x 1.016 x 4.8 mm voxels
    vol = window.volume
    for view in ("axial", "coronal", "sagittal"):
        window.set_view(view)
        geom = vol.geometry(view)
        assert window.slice_view.letters == geom.edge_letters
        assert window.slider.maximum() == geom.n_slices - 1
        assert window.slice_view.slice_shape == geom.slice_shape
        sx, sy = window.slice_view.pixel_aspect
        col_mm, row_mm = vol.spacing[geom.col_axis], vol.spacing[geom.row_axis]
        assert sx / sy == pytest.approx(col_mm / row_mm, rel=1e-6)
    window.set_view("sagittal")
    assert window.slice_view.letters[2:] == ("A", "P")
    n = window.slider.maximum()
    window.set_index(3)
    qtbot.keyClick(window.slice_view, Qt.Key_PageUp)
    assert window.index == 4
    qtbot.keyClick(window.slice_view, Qt.Key_Down)
    assert window.index == 3
    window.slider.setValue(n)
    assert window.index == n


@pytest.mark.needs_data
def test_hover_shows_voxel_and_intensity(qtbot, window):
    open_and_wait(qtbot, window, FLAIR)
    window.set_index(70)
    view = window.slice_view
    move(view.viewport(), view.image_to_viewport(100.5, 120.5))
    p = view.to_image(view.image_to_viewport(100.5, 120.5))
    row, col = int(p.y()), int(p.x())
    i, j, k = window.volume.voxel_index("axial", 70, row, col)
    text = window.pos_label.text()
    assert f"voxel ({i}, {j}, {k})" in text
    assert f"{float(window.volume.data[i, j, k]):.5g}" in text


@pytest.mark.needs_data
def test_window_level_drag_and_presets_never_touch_voxels(qtbot, window):
    open_and_wait(qtbot, window, CT)
    vol = window.volume
    before = vol.data.copy()
    assert window.preset_box.currentText() == "DICOM"
    assert window.window_lw == tuple(float(v) for v in vol.source.window_preset)
    view = window.slice_view
    start = window.window_lw
    a, b = view.image_to_viewport(200, 200), view.image_to_viewport(260, 230)
    qtbot.mousePress(view.viewport(), Qt.RightButton, pos=a)
    move(view.viewport(), (a + b) / 2, Qt.RightButton)
    mid = window.window_lw
    assert mid[1] > start[1] and mid[0] < start[0]  # right: wider; down: lower level
    move(view.viewport(), b, Qt.RightButton)
    qtbot.mouseRelease(view.viewport(), Qt.RightButton, pos=b)
    assert window.window_lw[1] > mid[1]
    window.apply_preset("Lung")
    assert window.window_lw == (-600.0, 1500.0)
    assert np.array_equal(vol.data, before)
    assert window.labelmap.array.max() == 0  # a right-drag never paints


@pytest.mark.needs_data
def test_second_volume_in_the_same_window(qtbot, window):
    open_and_wait(qtbot, window, FLAIR)
    window.set_index(120)
    open_and_wait(qtbot, window, ABDOMEN / "example_mr_sm.nii.gz")
    assert window.volume.shape == (117, 91, 20)
    assert 0 <= window.index < window.volume.n_slices("axial")
    assert window.labelmap.array.shape == window.volume.shape
    recent = window.settings.value("recent")
    assert str(ABDOMEN / "example_mr_sm.nii.gz") == recent[0] and len(recent) == 2
    assert len(window.recent_menu.actions()) == 2


@pytest.mark.needs_data
def test_drop_a_file_opens_it(qtbot, window):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(FLAIR))])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(window.volume_loaded, timeout=60000):
        window.slice_view.dropEvent(event)
    assert window.volume.shape == (240, 240, 155)


@pytest.mark.needs_data
def test_label_panel_edits_and_undoable_delete(qtbot, window, monkeypatch):
    open_and_wait(qtbot, window, FLAIR)
    panel = window.labels
    value = panel.add_label("oedema")
    assert value == 2 and window.active_label == 2
    panel.rename(2, "edema")
    panel.recolor(2, (0, 200, 255))
    lab = window.labelmap.table.get(2)
    assert (lab.name, lab.color) == ("edema", (0, 200, 255))
    mask = np.zeros(window.volume.geometry("axial").slice_shape, bool)
    mask[50:60, 50:60] = True
    window.annotator.stroke("axial", window.index, 2, mask, False)
    window._refresh_overlay()
    assert window._lut[2].tolist() == [0, 200, 255, 128]
    panel.set_visible(2, False)
    assert window._lut[2, 3] == 0
    painted = window.labelmap.array.copy()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    window.delete_label(2)
    assert window.labelmap.table.get(2) is None and not (window.labelmap.array == 2).any()
    assert panel.list.count() == 1
    window.undo()
    assert window.labelmap.table.get(2) is not None
    assert np.array_equal(window.labelmap.array, painted)
    assert panel.list.count() == 2


@pytest.mark.needs_data
def test_close_with_unexported_changes_asks(qtbot, window, monkeypatch):
    open_and_wait(qtbot, window, FLAIR)
    mask = np.zeros(window.volume.geometry("axial").slice_shape, bool)
    mask[10:20, 10:20] = True
    window.annotator.stroke("axial", window.index, 1, mask, False)
    window.changed()
    window.confirm_close = True
    answers = [QMessageBox.Cancel, QMessageBox.No]
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or answers.pop(0))
    window.close()
    assert window.isVisible() and len(asked) == 1
    window.close()
    assert not window.isVisible() and len(asked) == 2
    assert "workspace" in asked[0]
    window.confirm_close = False
    assert window.last_saved_folder is None or window.last_saved_folder.exists()


@pytest.mark.needs_data
def test_corrupt_file_shows_error_and_window_still_works(qtbot, window, tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: errors.append(a[2]))
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(FLAIR.read_bytes()[:20000])
    w = window
    w.open_path(str(bad))
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert "truncated.nii.gz" in errors[0]
    assert w.volume is None
    open_and_wait(qtbot, w, FLAIR)
    assert w.volume.shape == (240, 240, 155)


@pytest.mark.needs_data
def test_folder_with_several_series_asks_which(qtbot, window, tmp_path, monkeypatch, data_dir):
    from medsam_gui.io import list_series
    from medsam_gui.ui import series_dialog

    folder = tmp_path / "mixed"
    folder.mkdir()
    for sub in ("ct_abdomen_siemens_jpeg2000", "mr_brain_ax30_dwi_b0_toshiba"):
        for f in (data_dir / "dicom" / sub).iterdir():
            shutil.copy(f, folder / f"{sub[:2]}_{f.name}")
    series = list_series(folder)
    assert len(series) == 2
    dialog = series_dialog.SeriesDialog(series, str(folder))
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 2
    texts = {dialog.table.item(r, 3).text() for r in range(2)}
    assert texts == {"20", "40"}
    dialog.select(1)
    assert dialog.selected_uid == series[1].uid
    mr = next(s for s in series if s.modality == "MR")
    asked = []
    monkeypatch.setattr(series_dialog, "choose_series",
                        lambda s, f, p=None: asked.append(len(s)) or mr.uid)
    w = window
    open_and_wait(qtbot, w, folder)
    assert asked == [2] and w.volume.modality == "MR" and w.volume.shape[2] == 40


def test_background_encoding_retries_once_then_reports(qtbot):
    from types import SimpleNamespace

    from medsam_gui.ui.workers import Precomputer

    calls = []

    class Failing:
        volume = SimpleNamespace(n_slices=lambda axis: 10)

        def precompute(self, axis, center, progress=None, cancel=None, indices=None):
            calls.append((axis, center, tuple(indices)))
            raise RuntimeError("encoder exploded")

    pre = Precomputer(radius=2, delay_ms=0)
    with qtbot.waitSignal(pre.failed, timeout=10000) as blocker:
        pre.follow(Failing(), "axial", 5, immediate=True)
    assert len(calls) == 2 and calls[0] == ("axial", 5, (3, 4, 5, 6, 7))
    assert "encoder exploded" in blocker.args[0] and "twice" in blocker.args[0]
    qtbot.waitUntil(lambda: not pre.running, timeout=5000)


def test_background_encoding_is_not_restarted_by_a_redraw_of_the_same_slice(qtbot):
    """The linked views redraw (and ask the encoder to follow the active slice) on every
    crosshair move; the same slice must not cancel the encoding under way."""
    import threading
    from types import SimpleNamespace

    from medsam_gui.ui.workers import Precomputer

    runs, release = [], threading.Event()

    class Slow:
        volume = SimpleNamespace(n_slices=lambda axis: 10)

        def precompute(self, axis, center, progress=None, cancel=None, indices=None):
            runs.append([axis, center, "running"])
            release.wait(10)
            runs[-1][2] = "cancelled" if cancel() else "done"
            return 0

    pre = Precomputer(radius=2, delay_ms=0)
    session = Slow()
    pre.follow(session, "axial", 5, immediate=True)
    qtbot.waitUntil(lambda: bool(runs), timeout=5000)
    for _ in range(3):
        pre.follow(session, "axial", 5)  # a redraw of the coronal and sagittal views
        qtbot.wait(20)
    release.set()
    qtbot.waitUntil(lambda: not pre.running, timeout=5000)
    assert runs == [["axial", 5, "done"]]
    release.clear()
    pre.follow(session, "coronal", 7)  # the user works in another view: it moves there
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: not pre.running, timeout=5000)
    assert runs[1] == ["coronal", 7, "done"]


def test_app_arguments():
    from medsam_gui.ui.app import parse_args

    a = parse_args(["scan.nii.gz", "--model", "medsam_vit_b", "--checkpoint", "m.pth",
                    "--workspace", "ws"])
    assert (a.path, a.model, a.checkpoint, a.workspace, a.demo) == (
        "scan.nii.gz", "medsam_vit_b", "m.pth", "ws", False)
    assert parse_args(["--demo"]).demo


def test_stamp_line_covers_the_segment():
    from medsam_gui.ui.tools import stamp_line

    m = np.zeros((20, 30), bool)
    stamp_line(m, (2.5, 10.5), (25.5, 10.5), 1.5)
    assert m[10, 2:26].all() and not m[10, 28] and not m[5].any()


def test_bad_checkpoint_shows_error_and_keeps_the_window(qtbot, window, tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: errors.append(a[2]))
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint at all")
    window.switch_model("medsam_vit_b", str(bad))
    qtbot.waitUntil(lambda: bool(errors), timeout=60000)
    assert "broken.pth" in errors[0]
    assert window.backend is None and "none" in window.model_label.text()
