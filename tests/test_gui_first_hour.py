"""The first hour of a clinician (issue 20): the app says which system libraries Qt lacks, the
window says what it does (disabled look, message log, undo keeps the slice, label colours and
names, export folder, keys page, title), and the 3D pane (pytest-qt, offscreen, real data)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medsam_gui.ui import app as gui_app


# ---- 1. setup -----------------------------------------------------------------------------
def test_missing_xcb_libraries_are_named_with_the_apt_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(gui_app, "xcb_plugin_path", lambda: "/fake/libqxcb.so")
    fake_ldd = ("\tlibxcb-icccm.so.4 => not found\n\tlibxcb.so.1 => /usr/lib/libxcb.so.1 (0x1)\n"
                "\tlibxcb-xinerama.so.0 => not found\n\tlibfoo.so.9 => not found\n")

    class Done:
        stdout = fake_ldd

    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    assert gui_app.missing_display_libraries() == ["libfoo.so.9", "libxcb-icccm.so.4",
                                                   "libxcb-xinerama.so.0"]
    assert gui_app.main(["--demo"]) == 2  # before any QApplication: no Qt abort
    err = capsys.readouterr().err
    assert "libxcb-icccm.so.4" in err and "libxcb-xinerama.so.0" in err
    assert "sudo apt-get install libxcb-icccm4 libxcb-xinerama0" in err
    assert "libfoo.so.9" in err and "libxcb.so.1\n" not in err
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no xcb: nothing to check
    assert gui_app.missing_display_libraries() == []


def test_the_real_xcb_plugin_loads_here_and_the_readme_names_its_packages():
    from pathlib import Path

    plugin = gui_app.xcb_plugin_path()
    if plugin is None:
        pytest.skip("this PyQt5 has no xcb plugin")
    assert gui_app.ldd_missing(plugin) == []  # CI installs README's packages: nothing missing
    repo = Path(__file__).resolve().parents[1]
    readme, ci = (repo / "README.md").read_text(), (repo / ".ci" / "run").read_text()
    for package in set(gui_app.XCB_PACKAGES.values()) - {"libx11-6", "libxext6", "libfreetype6"}:
        assert package in readme and package in ci, package


def test_first_start_encodes_with_pytorch_at_once_and_switches_to_openvino(qtbot, tmp_path,
                                                                        monkeypatch):
    """The window is usable as soon as PyTorch has the model; the OpenVINO encoder (converted
    on a first start: 138 s on this busy 2-core machine) replaces it when ready, between two
    encodes, and the status bar says so. The conversion is held back here by a stand-in that
    runs the copied encoder, so the test sees both states without waiting minutes."""
    import threading

    import torch
    from PyQt5.QtCore import QSettings

    from medsam_gui.engine import ov_encoder
    from medsam_gui.ui.main_window import MainWindow

    release, calls = threading.Event(), []

    class Converted:
        converted = True

        def __init__(self, module):
            self.module = module

        def __call__(self, x, gate=None):
            calls.append(x.shape)
            with torch.no_grad():
                return self.module(x.contiguous())

    def fake_encoder_for(module, digest, size, precision):
        assert precision.startswith("ov_") and len(digest) == 64 and size == 256
        release.wait(120)
        return Converted(module), ""

    from medsam_gui.engine import ov_decoder

    real_decoder_for, decoder_release = ov_decoder.decoder_for, threading.Event()

    def held_decoder_for(backend, choice, precision):
        decoder_release.wait(120)  # a first start converts the decoder: ~10 s, held here
        return real_decoder_for(backend, choice, precision)

    monkeypatch.setattr(ov_encoder, "encoder_for", fake_encoder_for)
    monkeypatch.setattr(ov_decoder, "decoder_for", held_decoder_for)
    monkeypatch.setattr("medsam_gui.ui.model_menu.wanted_precision", lambda k, p: "ov_f32")
    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"),
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.backend is not None, timeout=180000)
    first = w.backend
    assert first.runtime == "pytorch" and first.precision == "channels_last"  # usable now
    assert "preparing OpenVINO" in w.model_label.text()
    slice_ = (np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)
    before = first.encode([slice_])
    assert calls == []
    release.set()
    qtbot.waitUntil(lambda: first.runtime == "openvino", timeout=60000)
    assert w.backend is first and first.precision == "ov_f32"
    assert "openvino f32" in w.model_label.text() and "preparing" not in w.model_label.text()
    message = w.statusBar().currentMessage()
    assert "now on OpenVINO" in message and "converted" in message
    after = first.encode([slice_])
    assert len(calls) == 1 and torch.allclose(before, after, atol=1e-4)
    assert "openvino" in first.cache_tag or first.cache_tag.endswith("ov_f32")
    # the decoder: boxes decode on PyTorch until its OpenVINO version is ready, then the same
    assert first.decoder_runtime == "pytorch"
    box = (10, 12, 60, 50)
    with torch.inference_mode():
        mask_pt, _ = first.decode(after, (64, 80), box)
    decoder_release.set()
    qtbot.waitUntil(lambda: first.decoder_note != "", timeout=120000)
    assert first.decoder_runtime in ("pytorch", "openvino f32"), first.decoder_note
    with torch.inference_mode():
        mask_now, _ = first.decode(after, (64, 80), box)
    assert (mask_now == mask_pt).all()  # f32 on either runtime: the same mask
    w.shutdown()


# ---- 2. a window that says what it does ---------------------------------------------------
from conftest import PAT1  # noqa: E402

FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"


@pytest.fixture
def window(qtbot, tmp_path):
    from PyQt5.QtCore import QSettings

    from medsam_gui.ui.main_window import MainWindow

    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    w.use_disk_cache = False
    qtbot.addWidget(w)
    w.resize(1366, 760)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from PyQt5 import sip

    if not sip.isdeleted(w):
        w.shutdown()


def opened(qtbot, w, path=FLAIR):
    if not path.exists():
        pytest.skip(f"real test data not found: {path}")
    with qtbot.waitSignal(w.volume_loaded, timeout=60000):
        w.open_path(str(path))
    w.labels.add_label("tumour")
    return w


def brightest(widget) -> int:
    image = widget.grab().toImage()
    return max(image.pixelColor(x, y).lightness() for x in range(image.width())
               for y in range(image.height()))


def test_disabled_buttons_and_menu_entries_look_disabled(qtbot):
    from PyQt5.QtWidgets import QMenu, QPushButton, QWidget

    host = QWidget()
    host.setStyleSheet(gui_app.style_sheet())
    qtbot.addWidget(host)
    on, off = QPushButton("Start", host), QPushButton("Start", host)
    off.move(0, 40)
    off.setEnabled(False)
    host.show()
    assert brightest(off) < brightest(on) - 60  # the text is visibly dimmer, not the same
    menu = QMenu(host)
    menu.setStyleSheet(gui_app.style_sheet())
    a, b = menu.addAction("Export NIfTI"), menu.addAction("Export DICOM SEG")
    b.setEnabled(False)
    menu.popup(host.mapToGlobal(host.rect().center()))
    qtbot.waitExposed(menu)
    image = menu.grab().toImage()
    ra, rb = menu.actionGeometry(a), menu.actionGeometry(b)
    lum = [max(image.pixelColor(x, y).lightness() for x in range(r.left(), r.right())
               for y in range(r.top(), r.bottom())) for r in (ra, rb)]
    assert lum[1] < lum[0] - 60
    menu.close()


def test_unchecked_boxes_and_radio_buttons_stand_out_from_the_dark_background(qtbot):
    """An option's box must be seen before it is ticked: Fusion's default indicator drew dark
    on the theme's dark background (the SEG encoding choice was barely visible)."""
    from PyQt5.QtWidgets import QCheckBox, QRadioButton, QWidget

    host = QWidget()
    host.setStyleSheet(gui_app.style_sheet())
    qtbot.addWidget(host)
    boxes = [QCheckBox("", host), QRadioButton("", host), QCheckBox("", host)]
    for i, box in enumerate(boxes):
        box.move(0, 30 * i)
    boxes[2].setChecked(True)
    host.show()
    background = host.grab().toImage().pixelColor(host.width() - 1, host.height() - 1)
    for box in boxes[:2]:
        assert brightest(box) > background.lightness() + 100  # the unchecked outline shows
    ticked, unticked = boxes[2].grab().toImage(), boxes[0].grab().toImage()
    count = (lambda im: sum(im.pixelColor(x, y).lightness() > 120 for x in range(im.width())
                            for y in range(im.height())))
    assert count(ticked) > 2 * count(unticked)  # ticked is filled, not only outlined


def test_status_line_follows_the_slice_and_keeps_every_message(qtbot, window):
    w = opened(qtbot, window)
    canvas = w.slice_view
    canvas.hovered.emit(100, 90)
    k = w.index
    assert f"axial slice {k} (0–{w.volume.n_slices('axial') - 1})" in w.pos_label.text()
    voxel = w.pos_label.text().split("voxel")[1]
    w.set_index(k + 10)  # the wheel: the mouse does not move
    assert f"axial slice {k + 10} " in w.pos_label.text()
    assert w.pos_label.text().split("voxel")[1] != voxel  # the voxel under the mouse, now
    long = ("Filled 40 slices (axial 60–99) — higher slices: stopped after slice 99 (area grew "
            "2.3x (limit 2.0x)); lower slices: reached the first slice of the scan. Review "
            "with ] and [; Ctrl+Return accepts.")
    w.notify(long, 3000)
    qtbot.wait(50)
    assert w.statusBar().currentMessage() == long  # stays: no timeout
    line = w.statusBar().line
    assert line.text() != long and line.text().endswith("…") and line.width() < 1366
    w.set_index(k)
    assert w.statusBar().currentMessage() == long
    w.statusBar().showMessage("Reading labels.nii.gz…")
    w.statusBar().clearMessage()  # the reading is over (failed): no stale "Reading…"
    assert w.statusBar().currentMessage() == "" and line.text() == ""
    w.messages_action.trigger()
    dialog = w._messages_dialog
    assert long in dialog.text.toPlainText()  # the full text, never cut
    assert "Opened" in dialog.text.toPlainText()  # the open report is kept too
    dialog.close()
    # every permanent field keeps its width at 1366 px
    bar = w.statusBar()
    assert bar.width() <= 1366
    for label in (w.model_label, w.pos_label):
        assert label.isVisible() and label.width() >= min(label.sizeHint().width(), 120)


def test_stop_reasons_in_a_readers_words():
    from medsam_gui.engine.propagation import Stop
    from medsam_gui.ui.propagation_actions import stop_words

    assert stop_words(Stop(-1, -1, "volume edge", 0)) == \
        "lower slices: reached the first slice of the scan"
    assert stop_words(Stop(1, 155, "volume edge", 154)) == \
        "higher slices: reached the last slice of the scan"
    said = stop_words(Stop(1, 101, "area grew 2.3x (limit 2.0x)", 100))
    assert said == ("higher slices: stopped after slice 100 (the mask grew 2.3× from one slice "
                    "to the next, limit 2×)")
    said = stop_words(Stop(-1, 40, "moved 0.412 of its diameter (limit 0.35); model IoU 0.41 "
                                   "below 0.50", 41))
    assert said == ("lower slices: stopped after slice 41 (the mask jumped sideways by 41% of "
                    "its width, limit 35%; the model was unsure: score 0.41, below 0.50)")
    assert stop_words(Stop(1, 70, "met the front from key slice 80", 69)).endswith(
        "(met the fill from slice 80)")
    assert stop_words(Stop(1, 70, "cancelled", 69)).endswith("(cancelled)")
    assert "by 35.3% of its width, limit 35%" in stop_words(
        Stop(1, 100, "moved 0.353 of its diameter (limit 0.35)", 99))
    assert "-1" not in stop_words(Stop(-1, -1, "volume edge", 0))


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_undo_stays_on_the_slice_or_goes_there_and_says_so(qtbot, window):
    w = opened(qtbot, window)
    geom = w.volume.geometry("axial")
    k = w.index
    w.annotator.stroke("axial", k - 5, 1, disc(geom.slice_shape, 100, 100, 8), False)
    w.annotator.stroke("axial", k + 5, 1, disc(geom.slice_shape, 100, 100, 8), False)
    w.annotator.stroke("axial", k + 5, 1, disc(geom.slice_shape, 100, 100, 4), True)
    # a change of one other slice: go there and say so
    w.set_index(k + 20)
    w.undo()
    assert w.index == k + 5
    assert "went to axial slice" in w.statusBar().currentMessage()
    assert f"axial slice {k + 5} " in w.pos_label.text()  # the status bar agrees
    # a change over many slices (a label deleted): stay, and say which slices changed
    w.annotator.push(w.labelmap.remove_label(1))
    w.labels.refresh()
    w.set_index(k + 20)
    w.undo()
    assert w.index == k + 20
    assert f"slices {k - 5}–{k + 5}; you stay on slice {k + 20}" in w.statusBar().currentMessage()
    # on a slice the change touched: stay without a word
    w.redo()
    w.set_index(k - 5)
    before = w.statusBar().currentMessage()
    w.undo()
    assert w.index == k - 5 and w.statusBar().currentMessage() == before


def test_undo_steps_dropped_to_the_memory_bound_are_said_once(qtbot, window):
    w = opened(qtbot, window)
    geom = w.volume.geometry("axial")
    k = w.index
    w.history.max_bytes = 1  # every older step is beyond the bound: the newest is kept
    w.annotator.stroke("axial", k, 1, disc(geom.slice_shape, 100, 100, 8), False)
    w.changed()  # as the window's edit handlers do after each change
    assert "dropped" not in w.message_log.as_text()
    w.annotator.stroke("axial", k + 1, 1, disc(geom.slice_shape, 100, 100, 8), False)
    w.changed()
    log = w.message_log.as_text()
    assert "The oldest 1 undo step was dropped" in log and "of memory" in log
    w.undo()
    assert not w.history.can_undo  # only the newest step was left
    assert w.labelmap.array[..., k].any()  # the first stroke, beyond undo, stays


def test_objects_of_a_label_share_its_colour_and_an_erased_object_loses_its_box(qtbot, window):
    w = opened(qtbot, window)
    geom = w.volume.geometry("axial")
    k, value = w.index, w.active_label
    key = ("axial", k, value)
    for box, centre in (((80, 80, 110, 110), (95, 95)), ((150, 150, 170, 170), (160, 160))):
        mask = disc(geom.slice_shape, centre[1], centre[0], 8)
        slot = w.annotator.slot_for_box(key, box, True)
        w.annotator.apply_prediction(key, slot, box, [], mask, 0.9, "test", "0" * 64, True)
    w._refresh_overlay()
    colour = w.labelmap.table.get(value).color
    pens = [item.pen() for item in w.slice_view._box_items]
    assert len(pens) == 2
    assert all(p.color().getRgb()[:3] == tuple(colour) for p in pens)
    assert {p.style() for p in pens} != {pens[0].style()} or len(set(p.width() for p in pens)) == 2
    w.annotator.stroke("axial", k, value, disc(geom.slice_shape, 160, 160, 12), True)  # erase it
    w._refresh_overlay()
    assert len(w.annotator.objects[key]) == 1 and len(w.slice_view._box_items) == 1
    w.undo()
    assert len(w.annotator.objects[key]) == 2 and len(w.slice_view._box_items) == 2


def test_a_new_label_is_named_when_it_is_made(qtbot, window):
    from PyQt5.QtCore import QTimer

    w = opened(qtbot, window)
    panel = w.labels

    def type_name(text):
        panel._name_dialog.setTextValue(text)
        panel._name_dialog.accept()

    QTimer.singleShot(0, lambda: type_name("liver"))
    value = panel.new_label()
    assert w.labelmap.table.get(value).name == "liver" and w.active_label == value
    assert "“liver”" in w.windowTitle() and FLAIR.name in w.windowTitle()
    QTimer.singleShot(0, lambda: panel._name_dialog.accept())  # Enter keeps the default
    value = panel.new_label()
    assert w.labelmap.table.get(value).name == f"label {value}"
    QTimer.singleShot(0, lambda: panel._name_dialog.reject())  # Cancel adds nothing
    n = len(w.labelmap.table.labels)
    assert panel.new_label() == 0 and len(w.labelmap.table.labels) == n


def test_export_starts_in_documents_then_the_last_export_folder(qtbot, window, tmp_path,
                                                                monkeypatch):
    from PyQt5.QtCore import QStandardPaths
    from PyQt5.QtWidgets import QFileDialog

    w = opened(qtbot, window)
    geom = w.volume.geometry("axial")
    w.annotator.stroke("axial", w.index, 1, disc(geom.slice_shape, 100, 100, 8), False)
    w.accept_slice()
    asked = []
    target = tmp_path / "exports" / "tumour.nii.gz"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (asked.append(a[2]), (str(target), ""))[1])
    assert w.export_labels() == target
    docs = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
    start = asked[0]
    assert not start.startswith(str(FLAIR.parent))  # never the scan's (data) folder
    assert start.startswith(docs if docs and __import__("os").path.isdir(docs)
                            else str(__import__("pathlib").Path.home()))
    title, text, details = w.last_report
    assert "tumour.nii.gz" in text and str(target.parent) in text
    assert f"1 axial slices ({w.index}–{w.index}), all reviewed by you" in text
    assert str(target) in details
    assert "Exported NIfTI label map" in w.message_log.as_text()
    w.export_labels()
    assert asked[1].startswith(str(target.parent))  # remembered


def test_keys_page_close_scan_and_title(qtbot, window):
    from medsam_gui.ui.help_keys import page_html, shortcut_rows

    w = opened(qtbot, window)
    rows = dict((what, keys) for keys, what in shortcut_rows(w))
    assert rows["Edit ▸ Undo"] == "Ctrl+Z" and rows["File ▸ Close scan"] == "Ctrl+W"
    assert rows["View ▸ Messages"] == "Ctrl+M" and "Help ▸ Keys and mouse" in rows
    assert len(rows) >= 25
    assert "Right-drag" in page_html(w) and "count from 0" in page_html(w)
    assert "window / level" in page_html(w)
    from medsam_gui.ui.view_painter import window_text

    assert w.slice_view.info_text.splitlines()[1] == window_text(w.window_lw)
    assert w.windowTitle() == f"{FLAIR.name} — editing {w.active_label} “tumour” — medsam-gui"
    assert w.close_scan()
    assert w.volume is None and w.windowTitle() == "medsam-gui"
    assert not w.close_scan_action.isEnabled()
    assert "Closed" in w.statusBar().currentMessage()
    opened(qtbot, w)  # the next scan opens in the same window
    assert w.close_scan_action.isEnabled()


def test_window_level_is_shown_rounded():
    from medsam_gui.ui.view_painter import window_text

    assert window_text((-3.6, 476.4)) == "W 476  L \u22124"
    assert window_text((0.523, 3.714)) == "W 3.71  L 0.523"


# ---- 3. see it in 3D ---------------------------------------------------------------------------
def test_label_mesh_bounding_box_matches_the_label():
    from medsam_gui.ui.view3d import label_mesh

    array = np.zeros((60, 70, 50), np.uint16)
    yy, xx, zz = np.mgrid[:60, :70, :50]
    array[((yy - 30) ** 2 + (xx - 40) ** 2 + ((zz - 20) * 1.5) ** 2) <= 15 ** 2] = 3
    array[0:6, 0:5, 0:4] = 3  # a block at the scan's corner: the surface closes at the edge
    verts, faces = label_mesh(array, 3)
    lo, hi = verts.min(0), verts.max(0)
    idx = np.argwhere(array == 3)
    assert np.all(np.abs(lo - idx.min(0)) <= 1.0) and np.all(np.abs(hi - idx.max(0)) <= 1.0)
    assert faces.max() < len(verts) and len(faces) > 500
    small = label_mesh(array, 3, max_faces=800)[1]
    assert len(small) <= 800 < len(faces)  # decimated to the budget
    assert label_mesh(array, 4) is None


def test_quad_layout_builds_surfaces_and_says_when_opengl_is_missing(qtbot, window):
    import nibabel as nib

    from conftest import PAT1 as case

    w = opened(qtbot, window)
    truth = np.asarray(nib.load(str(case / "OTMultiClass.nii.gz")).dataobj) > 0
    assert truth.shape == w.volume.shape
    w.labelmap.array[truth] = 1  # the whole tumour, as after a propagation
    w.set_layout("quad")
    pane = w.view3d
    assert pane is not None and pane.isVisible()
    assert all(v.isVisible() for v in w.view_layout.views.values())
    widths = [v.width() for v in w.view_layout.views.values()]
    assert min(widths) > 0.35 * w.view_layout.width()  # 2×2: each image gets half the width
    if pane.problem:  # offscreen: no OpenGL, and the pane says so in words
        assert "3D view unavailable" in pane.note.text() and pane.gl is None
    with qtbot.waitSignal(pane.mesh_ready, timeout=60000):
        w.changed()  # an edit: the surfaces follow (debounced, in a worker)
    verts, _faces = pane.meshes[1]
    idx = np.argwhere(truth)
    # within 2 voxels: the smoothing rounds off one-voxel spurs of the real tumour
    assert np.all(np.abs(verts.min(0) - idx.min(0)) <= 2.0)
    assert np.all(np.abs(verts.max(0) - idx.max(0)) <= 2.0)
    # the slice views still work in the quad layout
    w.set_index(w.index + 3)
    assert f"axial slice {w.index} " in w.pos_label.text()
    w.set_layout("three")
    assert not pane.isVisible() and all(v.isVisible() for v in w.view_layout.views.values())


def test_training_dialog_follows_the_theme_and_shows_one_of_cancel_close(qtbot):
    from types import SimpleNamespace

    import torch
    from PyQt5.QtGui import QColor
    from PyQt5.QtWidgets import QApplication

    from medsam_gui.ui.training_dialog import TrainingDialog

    app = QApplication.instance()
    old = app.styleSheet()
    app.setStyleSheet(gui_app.style_sheet())
    try:
        backend = SimpleNamespace(device=torch.device("cpu"), name="LiteMedSAM",
                                  kind="litemedsam", checkpoint=None)
        dialog = TrainingDialog([], backend)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        assert dialog.plot.backgroundBrush().color() == QColor("#202124")  # not white
        assert dialog.close_btn.isVisible() and not dialog.cancel_btn.isVisible()
        assert not dialog.start_btn.isEnabled()
        assert brightest(dialog.start_btn) < 140  # a disabled Start looks disabled
        for spin in (dialog.batch, dialog.lr, dialog.wd, dialog.patience, dialog.seed):
            assert len(spin.toolTip()) > 60  # says what it does in plain words
        qtbot.waitUntil(lambda: dialog._count_call is None or not dialog._count_call.isRunning())
        dialog.close()
    finally:
        app.setStyleSheet(old)


def test_import_names_labels_from_dataset_json_and_says_what_add_does(qtbot, window, tmp_path,
                                                                      monkeypatch):
    import json

    import nibabel as nib
    from PyQt5.QtWidgets import QMessageBox

    from medsam_gui.io.label_import import read_segmentation

    w = opened(qtbot, window)
    src = nib.load(str(PAT1 / "OTMultiClass.nii.gz"))
    (tmp_path / "labelsTr").mkdir()
    path = tmp_path / "labelsTr" / "pat0001.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj).astype(np.uint8), src.affine), str(path))
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3,
                    "enhancing": 4}}))  # nnU-Net v2 style
    imported = read_segmentation(path, w.volume)
    assert imported.names[2] == "edema" and 0 not in imported.names
    assert any("dataset.json" in n for n in imported.notes)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background",
                                                                  "1": "tumour core"}}))
    assert read_segmentation(path, w.volume).names == {1: "tumour core"}  # MSD style
    geom = w.volume.geometry("axial")
    truth = np.asarray(src.dataobj) > 0
    k = int(np.argmax([geom.take(truth, i).sum() for i in range(geom.n_slices)]))
    w.annotator.stroke("axial", k, 1, geom.take(truth, k), False)
    monkeypatch.setattr(QMessageBox, "exec_", lambda self: 0)
    assert w._ask_import_mode(path, imported) is None  # nothing clicked: cancelled
    both = int((geom.take(truth, k)).sum())
    assert f"{both:,} voxels have a label in both" in w._import_question


def test_one_annotated_scan_trains_on_blocks_of_its_slices_with_a_plain_warning(qtbot):
    from types import SimpleNamespace

    import torch

    from medsam_gui.training import TrainConfig, collect_samples, plan
    from medsam_gui.ui.training_dialog import ONE_VOLUME_WARNING, SLICE_SPLIT, TrainingDialog
    from test_training_fixtures import brats_workspaces

    w1, _w2 = brats_workspaces()
    train, val = plan(TrainConfig([w1], split="slices", val_fraction=0.25, seed=3))
    assert {s.volume_id for s in train} == {s.volume_id for s in val}  # one volume
    val_idx = {(s.axis, s.index) for s in val}
    assert val_idx and all(min(abs(s.index - i) for a, i in val_idx if a == s.axis) > 2
                           for s in train)  # no training slice within 2 of a validation one
    keys = sorted({(s.axis, s.index) for s in collect_samples([w1])})
    assert len(val_idx) == round(0.25 * len(keys))
    first = keys.index(min(val_idx))
    assert set(keys[first:first + len(val_idx)]) == val_idx  # one contiguous block
    assert len(train) + len(val) == len(keys)  # annotated 6 slices apart: none is that near
    backend = SimpleNamespace(device=torch.device("cpu"), name="LiteMedSAM",
                              kind="litemedsam", checkpoint=None)
    dialog = TrainingDialog([w1], backend)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.start_btn.isEnabled(), timeout=60000)  # not refused
    assert dialog.val_combo.currentData() == SLICE_SPLIT
    assert ONE_VOLUME_WARNING in dialog.counts.text() and "optimistic" in dialog.counts.text()
    assert dialog.config().split == "slices" and dialog.config().val_workspaces is None
    dialog.close()
