"""Three linked views in the real window (pytest-qt, offscreen, real scans): the shared
crosshair on an oblique DICOM series, a box drawn in the coronal view, outlines against fills,
what a cursor move or an edit redraws, the layout key."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import qimage2ndarray
from PyQt5.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt5.QtGui import QMouseEvent, QWheelEvent
from PyQt5.QtWidgets import QApplication
from scipy import ndimage

from conftest import DICOM
from test_gui_parts import window  # noqa: F401,F811
from test_gui_window import (FLAIR, TRUTH, backend, bbox, cache, dice, drag,  # noqa: F401
                             make_window, open_and_wait)

pytestmark = pytest.mark.needs_data

OBLIQUE = DICOM / "mr_brain_ax30_dwi_b0_toshiba"  # axial, rotated 30 degrees in plane
OBLIQUE_REF = DICOM / "reference" / "mr_brain_ax30_dwi_b0_toshiba_dcm2niix.nii.gz"


def grey(canvas) -> np.ndarray:
    """The grey image a canvas shows, as uint8 rows x cols."""
    img = canvas._image.pixmap().toImage()
    return qimage2ndarray.rgb_view(img)[..., 0].copy()


def overlay(canvas):
    """(rgb, alpha) of the overlay a canvas shows (zeros when it shows none)."""
    if not canvas._overlay.isVisible():
        return (np.zeros(canvas.slice_shape + (3,), np.uint8),
                np.zeros(canvas.slice_shape, np.uint8))
    img = canvas._overlay.pixmap().toImage()
    return qimage2ndarray.rgb_view(img).copy(), qimage2ndarray.alpha_view(img).copy()


def ctrl_mouse(canvas, kind, x, y):
    """Ctrl + left button press / move / release at slice pixel (x, y) of a canvas."""
    pos = QPointF(canvas.image_to_viewport(x, y))
    types = {"press": QEvent.MouseButtonPress, "move": QEvent.MouseMove,
             "release": QEvent.MouseButtonRelease}
    button = Qt.NoButton if kind == "move" else Qt.LeftButton
    QApplication.sendEvent(canvas.viewport(), QMouseEvent(types[kind], pos, button,
                                                          Qt.LeftButton, Qt.ControlModifier))


def wheel(canvas, steps=1):
    pos = QPointF(canvas.viewport().rect().center())
    event = QWheelEvent(pos, canvas.mapToGlobal(pos.toPoint()), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase,
                        False)
    QApplication.sendEvent(canvas.viewport(), event)


def test_ctrl_click_in_axial_moves_the_other_views_to_that_voxel_oblique_dicom(qtbot, window):
    open_and_wait(qtbot, window, OBLIQUE, session=False)
    vol = window.volume
    rot = vol.affine[:3, :3] / np.array(vol.spacing)
    assert abs(rot[0, 1]) > 0.4  # really oblique: 30 degrees about the scanner's z axis
    qtbot.keyClick(window.slice_view, Qt.Key_L, Qt.ControlModifier)
    assert window.view_state.layout == "three"
    views = window.view_layout.views
    assert all(views[n].isVisible() for n in ("axial", "coronal", "sagittal"))
    axial, index = vol.geometry("axial"), 25
    window.set_index(index)
    row, col = 20, 41
    ctrl_mouse(views["axial"], "press", col + 0.5, row + 0.5)
    ctrl_mouse(views["axial"], "release", col + 0.5, row + 0.5)
    voxel = axial.voxel_index(index, row, col)
    assert window.view_state.cursor == voxel
    assert window.view == "axial" and window.index == index  # the clicked view stays put
    shown = window.window_lw
    from medsam_gui.ui.render import windowed_uint8

    expected = int(windowed_uint8(np.array([[vol.data[voxel]]]), shown)[0, 0])
    for name in ("coronal", "sagittal"):
        geom = vol.geometry(name)
        assert views[name].info_text.startswith(f"{name} {voxel[geom.slice_axis]} /")
        image = grey(views[name])
        assert np.array_equal(image, windowed_uint8(vol.slice(name, voxel[geom.slice_axis]),
                                                    shown))
        r, c = views[name].crosshair  # the crosshair sits on the voxel clicked in axial
        assert (r, c) == geom.display_pixel(voxel)[1:]
        assert image[r, c] == expected
    assert views["axial"].crosshair == (row, col)
    assert grey(views["axial"])[row, col] == expected

    # the status bar gives the scanner's LPS coordinates of the cursor: dcm2niix's NIfTI of
    # the same series (RAS) has this voxel's intensity at those coordinates
    text = window.cursor_label.text()
    assert f"cursor ({voxel[0]}, {voxel[1]}, {voxel[2]})" in text and "LPS" in text
    x, y, z = (float(v) for v in re.search(r"LPS (\S+), (\S+), (\S+) mm", text).groups())
    ref = nib.load(str(OBLIQUE_REF))
    ijk = np.linalg.inv(ref.affine) @ np.array([-x, -y, z, 1.0])
    assert np.allclose(ijk[:3], np.round(ijk[:3]), atol=0.05)  # one decimal shown
    assert np.asarray(ref.dataobj)[tuple(np.round(ijk[:3]).astype(int))] == vol.data[voxel]

    # Ctrl+drag keeps moving it; a plain click with the box tool does not
    ctrl_mouse(views["axial"], "press", col + 0.5, row + 0.5)
    ctrl_mouse(views["axial"], "move", col + 6.5, row - 4.5)
    assert window.view_state.cursor == axial.voxel_index(index, row - 5, col + 6)
    ctrl_mouse(views["axial"], "release", col + 6.5, row - 4.5)
    before = window.view_state.cursor
    qtbot.mouseClick(views["axial"].viewport(), Qt.LeftButton,
                     pos=views["axial"].image_to_viewport(5.5, 5.5))
    assert window.view_state.cursor == before

    # Ctrl+click in the sagittal view moves the axial one; it becomes the active view
    sag = vol.geometry("sagittal")
    ctrl_mouse(views["sagittal"], "press", 10.5, 30.5)
    ctrl_mouse(views["sagittal"], "release", 10.5, 30.5)
    target = sag.voxel_index(before[sag.slice_axis], 30, 10)
    assert window.view_state.cursor == target and window.view == "sagittal"
    assert window.view_state.index("axial") == target[axial.slice_axis]
    assert window.slider.maximum() == sag.n_slices - 1
    assert window.slider.value() == target[sag.slice_axis]


def test_box_in_the_coronal_view_paints_the_right_source_voxels(qtbot, make_window):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    w.set_layout("three")
    vol = w.volume
    truth = np.asarray(nib.load(str(TRUTH)).dataobj) > 0
    cor = vol.geometry("coronal")
    index = int(np.argmax([cor.take(truth, i).sum() for i in range(cor.n_slices)]))
    plane = cor.take(truth, index)
    rows, cols = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
    centre = cor.voxel_index(index, int(rows.mean()), int(cols.mean()))
    w.view_state.set_cursor(centre)  # all three views through the tumour
    follows = []
    w.precomputer.follow = lambda session, view, i, immediate=False: follows.append((view, i))
    canvas = w.view_layout.views["coronal"]
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, bbox(plane), view=canvas)  # the press makes coronal the active view
    assert w.view == "coronal" and w.index == index
    assert ("coronal", index, 1) in w.labelmap.records
    assert w.session.is_cached("coronal", index)  # encoded on the coronal axis
    painted = np.argwhere(w.labelmap.array == 1)
    assert set(painted[:, cor.slice_axis]) == {index}  # only that coronal plane
    sl = [slice(None)] * 3
    sl[cor.slice_axis] = index
    source = (w.labelmap.array == 1)[tuple(sl)]  # in the source array's own order
    score = dice(source, truth[tuple(sl)])
    assert score >= 0.7
    flipped = dice(source[::-1, :], truth[tuple(sl)])
    assert flipped < score - 0.2  # a mirrored mapping would not pass
    # the mask shows at once in the two cross planes, along the crosshair lines
    for name in ("axial", "sagittal"):
        geom = vol.geometry(name)
        lab = w.labelmap.slice(geom, w.view_state.index(name)) == 1
        assert lab.any()
        _rgb, alpha = overlay(w.view_layout.views[name])
        assert np.array_equal(alpha > 0, lab)
    # the background encoder follows the view the user works in
    wheel(w.view_layout.views["sagittal"], 2)
    assert w.view == "sagittal"
    assert follows[-1] == ("sagittal", centre[vol.geometry("sagittal").slice_axis] + 2)


def put_truth(window):
    """BRATS expert labels (1..4) into the window's label map, four labels in the table."""
    truth = np.asarray(nib.load(str(TRUTH)).dataobj).astype(np.uint8)
    for name in ("necrosis", "oedema", "non-enhancing", "enhancing"):
        window.labelmap.table.add(name)
    window.labels.set_table(window.labelmap.table)
    window.labelmap.array[...] = truth
    window._rebuild_lut()
    window._refresh_overlay()
    return truth


def test_outlines_and_fills_show_the_same_voxels(qtbot, window):
    open_and_wait(qtbot, window, FLAIR, session=False)
    truth = put_truth(window)
    window.set_layout("three")
    centre = tuple(int(c) for c in np.argwhere(truth == 4).mean(axis=0))
    window.view_state.set_cursor(centre)
    views = window.view_layout.views
    fills = {n: overlay(views[n]) for n in views}
    window.outline_action.trigger()
    assert window.view_state.overlay == "outline"
    cross = ndimage.generate_binary_structure(2, 1)
    for name, canvas in views.items():
        lab = window.labelmap.slice(window.volume.geometry(name), window.view_state.index(name))
        assert len(np.unique(lab)) >= 4  # several labels meet on this plane
        fill_rgb, fill_alpha = fills[name]
        assert np.array_equal(fill_alpha > 0, lab > 0)
        rgb, alpha = overlay(canvas)
        edge = alpha > 0
        # each label's outline: its pixels that erosion removes (scipy, independent of numpy
        # shifting); their union is what is drawn
        want = np.zeros(lab.shape, bool)
        for v in range(1, 5):
            m = lab == v
            want |= m & ~ndimage.binary_erosion(m, cross, border_value=0)
        assert np.array_equal(edge, want)
        # the same colours (the fill is stored premultiplied by its opacity)
        fill = fill_rgb[edge].astype(float) * 255.0 / fill_alpha[edge, None]
        assert np.abs(fill - rgb[edge]).max() <= 3
        assert alpha[edge].min() == 255
        # filling each label's outline gives back the filled voxels (no voxel lost or added)
        for v in range(1, 5):
            m = lab == v
            if m.any():
                assert np.array_equal(ndimage.binary_fill_holes(edge & m) & m, m)
    qtbot.keyClick(window.slice_view, Qt.Key_O)
    assert window.view_state.overlay == "fill"


def test_redraws_only_what_changed(qtbot, window):
    open_and_wait(qtbot, window, FLAIR, session=False)
    window.labelmap.table.add("tumour")
    window.labels.set_table(window.labelmap.table)
    window._rebuild_lut()
    window.set_layout("three")
    views, painters = window.view_layout.views, window.painters
    vol = window.volume
    axial = vol.geometry("axial")
    counts = lambda: {n: (p.image_renders, p.overlay_renders) for n, p in painters.items()}
    c0 = counts()
    row, col = window.view_state.cursor_pixel("axial")
    ctrl_mouse(views["axial"], "press", col + 20.5, row + 0.5)  # along the coronal line
    ctrl_mouse(views["axial"], "release", col + 20.5, row + 0.5)
    c1 = counts()
    assert c1["axial"] == c0["axial"] and c1["coronal"] == c0["coronal"]  # planes unchanged
    assert c1["sagittal"][0] == c0["sagittal"][0] + 1
    window.apply_preset("Auto" if window.window_lw != window._presets()["Auto"] else "Lung")
    c2 = counts()
    assert all(c2[n][0] == c1[n][0] + 1 and c2[n][1] == c1[n][1] for n in c2)  # grey only
    # a brush stroke on the axial slice away from both crosshair lines: only axial redraws
    window.set_tool("brush")
    row, col = window.view_state.cursor_pixel("axial")
    drag(qtbot, window, (col - 40, row - 40, col - 30, row - 30), view=views["axial"])
    assert (window.labelmap.slice(axial, window.index) == 1).sum() > 20
    c3 = counts()
    assert c3["axial"][1] == c2["axial"][1] + 1
    assert c3["coronal"] == c2["coronal"] and c3["sagittal"] == c2["sagittal"]
    # a stroke across the crosshair touches the coronal and sagittal planes: they redraw
    drag(qtbot, window, (col - 3, row - 3, col + 3, row + 3), view=views["axial"])
    c4 = counts()
    assert all(c4[n][1] == c3[n][1] + 1 and c4[n][0] == c3[n][0] for n in c4)
    for name in ("coronal", "sagittal"):
        lab = window.labelmap.slice(vol.geometry(name), window.view_state.index(name))
        assert np.array_equal(overlay(views[name])[1] > 0, lab == 1)
    # undo redraws the planes it changes
    window.undo()
    c5 = counts()
    assert c5["coronal"][1] == c4["coronal"][1] + 1
    assert not overlay(views["coronal"])[1].any()


def test_layout_key_keeps_the_single_view_and_follows_the_active_view(qtbot, window):
    open_and_wait(qtbot, window, FLAIR, session=False)
    views = window.view_layout.views
    assert window.view_state.layout == "single"
    assert [n for n in views if views[n].isVisible()] == ["axial"]
    assert views["axial"].crosshair is None  # no lines in the single view
    assert not window.cursor_label.isVisible()  # its status bar as before
    qtbot.keyClick(window.slice_view, Qt.Key_L, Qt.ControlModifier)
    assert all(v.isVisible() for v in views.values())
    assert window.layout_actions["three"].isChecked()
    assert window.cursor_label.isVisible() and "RAS" in window.cursor_label.text()
    wheel(views["coronal"], -3)
    assert window.view == "coronal"
    assert window.labels.size_view == "coronal"  # the panel's slice ranges follow
    cor = window.volume.geometry("coronal")
    assert window.index == cor.n_slices // 2 - 3
    axial_index, line_row = window.view_state.index("axial"), views["axial"].crosshair[0]
    voxel = window.volume.voxel_index("axial", axial_index, line_row, 0)
    assert voxel[cor.slice_axis] == window.index  # the coronal line moved in the axial view
    qtbot.keyClick(window.slice_view, Qt.Key_L, Qt.ControlModifier)
    assert [n for n in views if views[n].isVisible()] == ["coronal"]  # the active one, large
    assert views["coronal"].crosshair is None
    assert window.slider.maximum() == cor.n_slices - 1
    window.set_view("sagittal")
    assert [n for n in views if views[n].isVisible()] == ["sagittal"]
