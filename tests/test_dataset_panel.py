"""The worklist dock on a real dataset: File ▸ Open dataset, statuses, next / previous case with
each case's work from the dataset folder, mark done asks about unreviewed slices, time spent,
reopening where the user left off. Offscreen, no model."""

from __future__ import annotations

import pytest
from PyQt5.QtCore import QSettings
from PyQt5.QtWidgets import QMessageBox

from conftest import PAT1, PAT2
from medsam_gui.dataset import Dataset, dataset_status

pytestmark = pytest.mark.needs_data

FLAIR = "Flair_subtrMeanDivStd.nii.gz"


def _window(qtbot, tmp_path, name):
    from medsam_gui.ui.main_window import MainWindow

    w = MainWindow(background=False, workspace_dir=str(tmp_path / f"ws-{name}"),
                   load_model=False,
                   settings=QSettings(str(tmp_path / f"{name}.ini"), QSettings.IniFormat))
    w.confirm_close = False
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_worklist_next_mark_done_and_reopen(qtbot, tmp_path, monkeypatch):
    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.training.seed_workspace import workspace_from_labels
    from medsam_gui.ui.dataset_panel import open_dataset

    ds = Dataset.create(tmp_path / "ds")
    cases, _, _ = discover_all([PAT1 / FLAIR, PAT2 / FLAIR])
    first, second = ds.add_cases(cases)
    # the second case has 4 slices the model made and nobody reviewed
    workspace_from_labels(second.image, str(PAT2 / "OTMultiClass.nii.gz"),
                          str(ds.case_dir(second)), n_slices=4, status="model")
    w = _window(qtbot, tmp_path, "a")
    assert w.open_dataset_action.text() == "Open dataset…"
    panel = w.dataset_panel
    with qtbot.waitSignal(panel.case_opened, timeout=60000) as opened:
        open_dataset(w, str(ds.folder))
    assert opened.args == [first.id] and w.dataset_dock.isVisible()
    assert panel.table.rowCount() == 2
    assert (panel.status_of(first.id), panel.status_of(second.id)) == ("new", "in progress")
    assert w.workspace.folder == ds.case_dir(first)  # the case's work lives in the dataset
    assert w.labelmap is not None and not w.labelmap.records
    with qtbot.waitSignal(panel.case_opened, timeout=60000) as opened:
        panel.step(1)
    assert opened.args == [second.id]
    assert w.workspace.folder == ds.case_dir(second) and len(w.labelmap.records) == 4
    assert panel.unreviewed() == 4
    asked = []

    def answer(reply):
        def question(*args, **kwargs):
            asked.append(args[2])
            return reply
        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.No))
    assert not panel.mark_done()
    assert "4 slices are not reviewed" in asked[-1]
    assert Dataset.open(ds.folder).case(second.id).state == ""
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.Yes))
    assert panel.mark_done()  # the last case: stays, says so
    saved = Dataset.open(ds.folder)
    assert saved.case(second.id).state == "done" and saved.case(second.id).done_by
    assert panel.status_of(second.id) == "done"
    assert saved.case(first.id).seconds > 0  # time counted while the first case was open
    assert w.open_dataset_action.isEnabled() and all(a.isEnabled() for a in w.case_actions)
    w.shutdown()
    # another window reopens the dataset where the user left off
    w2 = _window(qtbot, tmp_path, "b")
    with qtbot.waitSignal(w2.dataset_panel.case_opened, timeout=60000) as opened:
        open_dataset(w2, str(ds.folder))
    assert opened.args == [second.id]
    assert [s.status for s in dataset_status(Dataset.open(ds.folder))] == ["new", "done"]
    with qtbot.waitSignal(w2.dataset_panel.case_opened, timeout=60000) as opened:
        w2.dataset_panel.step(-1)
    assert opened.args == [first.id]
    w2.shutdown()


def test_export_dataset_from_the_window(qtbot, tmp_path, monkeypatch):
    """File ▸ Export ▸ Dataset (nnU-Net v2)…: the done case (not the open, unfinished one) in
    a new DatasetNNN_<name> folder of the chosen folder, labels equal to the saved work on the
    scan's grid; the folder is remembered as the other exports' is; a second export takes the
    next number."""
    import json

    import nibabel as nib
    import numpy as np

    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.training.seed_workspace import workspace_from_labels
    from medsam_gui.ui.dataset_export import default_parent, export_dataset
    from medsam_gui.ui.dataset_panel import open_dataset

    ds = Dataset.create(tmp_path / "ds", name="brain tumour")
    cases, _, _ = discover_all([PAT1 / FLAIR, PAT2 / FLAIR])
    first, second = ds.add_cases(cases)
    workspace_from_labels(first.image, str(PAT1 / "OTMultiClass.nii.gz"),
                          str(ds.case_dir(first)), n_slices=5)
    ds.set_state(first.id, "done")
    w = _window(qtbot, tmp_path, "x")
    assert w.export_dataset_action.text() == "Dataset (nnU-Net v2)…"
    assert not w.export_dataset_action.isEnabled()  # no dataset yet
    with qtbot.waitSignal(w.dataset_panel.case_opened, timeout=60000) as opened:
        open_dataset(w, str(ds.folder))
    assert opened.args == [second.id] and w.export_dataset_action.isEnabled()
    assert not default_parent(w).startswith(str(ds.folder))
    raw = tmp_path / "nnUNet_raw"
    raw.mkdir()
    for n in (1, 2):
        task = export_dataset(w, str(raw))
        with qtbot.waitSignal(task.finished, timeout=120000):
            pass
        qtbot.waitUntil(lambda: getattr(w, "dataset_export_done", None) is not None)
        result, w.dataset_export_done = w.dataset_export_done, None
        assert result.folder == raw / f"Dataset00{n}_brain_tumour" and result.cases == [first.id]
    assert w.settings.value("export/folder") == str(raw)  # remembered: the next dialog's start
    assert "Dataset002_brain_tumour" in w.last_report[1]
    out = raw / "Dataset001_brain_tumour"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and meta["labels"] == {"background": 0, "lesion": 1}
    label = nib.load(str(out / "labelsTr" / f"{first.id}.nii.gz"))
    image = nib.load(str(out / "imagesTr" / f"{first.id}_0000.nii.gz"))
    scan = nib.load(str(PAT1 / FLAIR))
    assert label.shape == image.shape == scan.shape
    assert np.allclose(label.affine, scan.affine) and np.allclose(image.affine, scan.affine)
    truth = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    got = np.asarray(label.dataobj)
    z = np.flatnonzero(got.any(axis=(0, 1)))
    assert len(z) == 5 and np.array_equal(got[:, :, z] == 1, truth[:, :, z])
    assert not got[:, :, np.setdiff1d(np.arange(got.shape[2]), z)].any()
    # inside the dataset folder: refused with a reason, nothing written
    said = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: said.append(a[2]))
    assert export_dataset(w, str(ds.folder)) is None
    assert "outside the dataset folder" in said[-1]
    assert not list(ds.folder.glob("Dataset*"))
    w.shutdown()


def test_next_case_is_encoded_in_the_background(qtbot, tmp_path):
    """While the first case is open, the next one is loaded and its first slices (the middle
    axial slice and its neighbours) are encoded into the window's cache: opening it finds
    them cached, and only them (background encoding of the open case is off here)."""
    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.engine import load_backend
    from medsam_gui.ui.dataset_panel import open_dataset

    ds = Dataset.create(tmp_path / "ds")
    cases, _, _ = discover_all([PAT1 / FLAIR, PAT2 / FLAIR])
    first, second = ds.add_cases(cases)
    w = _window(qtbot, tmp_path, "n")
    w.use_disk_cache = False  # memory only: nothing cached by an earlier run
    w.backend = load_backend("litemedsam")
    panel = w.dataset_panel
    panel.next_case.radius = 1
    with qtbot.waitSignal(panel.case_opened, timeout=60000):
        open_dataset(w, str(ds.folder))
    qtbot.waitUntil(lambda: w.session is not None, timeout=60000)
    with qtbot.waitSignal(panel.next_case.ready, timeout=300000) as ready:
        assert panel.next_case.start() is not None
    assert ready.args == [second.id, 3]
    assert panel.next_case.start() is None  # prepared already: not again
    with qtbot.waitSignal(panel.case_opened, timeout=60000):
        panel.step(1)
    assert panel.current == second.id
    qtbot.waitUntil(lambda: w.session is not None and w.session.volume is w.volume,
                    timeout=60000)
    mid = w.volume.n_slices("axial") // 2
    assert w.index == mid and w.view == "axial"
    assert w.session.cached_indices("axial") == {mid - 1, mid, mid + 1}
    w.shutdown()
