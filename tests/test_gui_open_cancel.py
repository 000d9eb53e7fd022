"""Opening a big scan in the window (issue 25): progress in the status bar and a Cancel that
leaves the window as it was and gives back the workspace lock the cancelled open took
(pytest-qt, offscreen; no model is loaded)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PyQt5.QtCore import Qt

from conftest import ABDOMEN
from test_gui_window import cache, make_window  # noqa: F401 (fixtures)

pytestmark = pytest.mark.needs_data
CT = ABDOMEN / "example_ct_sm.nii.gz"


@pytest.fixture(scope="module")
def big_ct(tmp_path_factory):
    """The abdominal CT (122×101×30 int16) tiled to 512×512×300 (150 MiB), uncompressed."""
    img = nib.load(str(CT))
    data = np.asanyarray(img.dataobj)
    big = np.tile(data, (5, 6, 10))[:512, :512, :300]
    path = tmp_path_factory.mktemp("big") / "ct_512x512x300.nii"
    nib.save(nib.Nifti1Image(np.asfortranarray(big.astype(np.int16)), img.affine), str(path))
    return path


@pytest.fixture
def window(make_window):
    return lambda: make_window(with_model=False)  # no model: nothing here segments


def _open(qtbot, window, path):
    with qtbot.waitSignal(window.volume_loaded, timeout=120000):
        window.open_path(str(path))


def _paint(window, value=1):
    """A square of ``value`` on the middle axial slice, as one undoable edit."""
    geom = window.volume.geometry("axial")
    k = window.volume.n_slices("axial") // 2
    mask = np.zeros(geom.slice_shape, bool)
    mask[10 + 30 * value:30 + 30 * value, 30:60] = True
    window.history.push(window.labelmap.paint(geom, k, mask, value))
    window.changed()
    return geom, k, mask


def test_cancel_open_keeps_the_scan_and_frees_the_lock(qtbot, window, big_ct, tmp_path):
    from medsam_gui.annotation import Workspace, lock
    from medsam_gui.io import load_volume

    w = window()
    _open(qtbot, w, CT)
    before_volume, before_labels = w.volume, w.labelmap
    geom, k, mask = _paint(w)
    prev_folder = w.workspace.volume_dir(w.volume)
    big_folder = Workspace(tmp_path / "ws").volume_dir(load_volume(big_ct))
    assert prev_folder != big_folder

    # 1. Cancel pressed while the file is read: the first progress report clicks Cancel
    task = w.open_path(str(big_ct))
    assert task is not None and w.opening
    bar, button = w.open_progress, w.open_cancel_button
    assert bar.isVisible() and button.isVisible()
    seen = []

    def on_progress(done, total):
        seen.append(done)
        if len(seen) == 1:
            qtbot.mouseClick(button, Qt.LeftButton)

    task.progress.connect(on_progress)
    qtbot.waitUntil(lambda: not w.opening, timeout=60000)
    assert seen and task.cancelled
    assert "cancelled" in w.statusBar().currentMessage()
    assert not bar.isVisible() and not button.isVisible()
    assert w.volume is before_volume and w.labelmap is before_labels
    assert geom.take(w.labelmap.array, k)[mask].all()
    assert not lock.holds(big_folder, w.workspace_owner)
    assert lock.holds(prev_folder, w.workspace_owner)

    # 2. Cancel pressed after the worker has read the scan and taken its lock
    task = w.open_path(str(big_ct))
    assert task.wait(120000)  # ended; its result waits in the GUI thread's queue
    assert lock.holds(big_folder, w.workspace_owner)  # so the release below is tested
    w.cancel_open()
    qtbot.waitUntil(lambda: not w.opening, timeout=60000)
    assert not lock.holds(big_folder, w.workspace_owner)
    assert w.volume is before_volume and w.labelmap is before_labels

    # the previous scan is still editable and its work is saved
    assert w.workspace.read_only_reason(w.volume) == ""
    _paint(w, value=2)
    assert w.flush_autosave() and not w.has_unsaved_work
    saved = Workspace(tmp_path / "ws").load(load_volume(CT))
    assert np.array_equal(saved.array, w.labelmap.array)
    assert {1, 2} <= set(np.unique(saved.array).tolist())

    # 3. the cancelled scan opens in another window (another lock holder), not read-only
    other = window()
    _open(qtbot, other, big_ct)
    assert other.volume.shape == (512, 512, 300)
    assert other.workspace.read_only_reason(other.volume) == ""
    assert lock.holds(big_folder, other.workspace_owner)
