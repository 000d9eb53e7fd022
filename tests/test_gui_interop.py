"""File ▸ Import segmentation / Export in the real window (pytest-qt, offscreen): a DICOM CT
with its reference organs imported, one slice accepted, SEG and RTSTRUCT written; a NIfTI scan
offers NIfTI only; bad files leave the labels as they were."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PyQt5.QtWidgets import QMessageBox

from medsam_gui.annotation.labels import REVIEWED
from test_dicom_export import CT, CT_LABELS, LIVER, ct_reference
from test_gui_window import FLAIR, backend, cache, make_window, open_and_wait  # noqa: F401

pytestmark = pytest.mark.needs_data


@pytest.fixture
def quiet(monkeypatch):
    """Message boxes answer at once; what they said is kept."""
    said = []
    for kind in ("information", "warning"):
        monkeypatch.setattr(QMessageBox, kind,
                            lambda *a, _k=kind, **k: said.append((_k, a[1], a[2])))
    return said


def wait_task(qtbot, w, task):
    assert task is not None
    qtbot.waitUntil(lambda: task.isFinished() and not w.statusBar().currentMessage()
                    .startswith(("Reading", "Writing")), timeout=60000)


def test_import_correct_export_seg_and_rtstruct(qtbot, make_window, quiet, tmp_path):
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, CT, session=False)
    assert all(a.isEnabled() for a in w.dicom_export_actions.values())
    wait_task(qtbot, w, w.import_segmentation(str(CT_LABELS)))
    truth = ct_reference(w.volume)
    assert np.array_equal(w.labelmap.array, truth)
    assert "marked unreviewed" in w.statusBar().currentMessage()
    assert w.labelmap.records_for(REVIEWED) == []
    assert w.history.can_undo
    # accept the liver's slice 10 as it is: it alone becomes training data
    w.set_view("axial")
    w.set_index(10)
    w.accept_slice()
    reviewed = {(r.index, r.label) for r in w.labelmap.records_for(REVIEWED)}
    assert (10, LIVER) in reviewed and all(index == 10 for index, _ in reviewed)
    w.labelmap.table.rename(LIVER, "liver")
    seg = tmp_path / "organs.seg.dcm"
    wait_task(qtbot, w, w.export_dicom("seg", str(seg), types={LIVER: "Liver"}))
    assert "Read back and checked" in w.last_report[1] and str(seg) in w.last_report[2]
    ds = pydicom.dcmread(str(seg), stop_before_pixels=True)
    liver = [s for s in ds.SegmentSequence if s.SegmentLabel == "liver"][0]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert w.labelmap.table.get(LIVER).property_type == "Liver"  # remembered for next time
    rt = tmp_path / "organs.rtstruct.dcm"
    wait_task(qtbot, w, w.export_dicom("rtstruct", str(rt), types={}))
    names = {r.ROIName for r in pydicom.dcmread(str(rt)).StructureSetROISequence}
    assert "liver" in names and len(names) == len(np.unique(truth)) - 1
    # undo the acceptance and the import: the map is empty again
    w.undo()
    w.undo()
    assert not w.labelmap.array.any()


def test_bad_import_changes_nothing_and_names_the_file(qtbot, make_window, quiet, tmp_path,
                                                       monkeypatch):
    errors = []
    w = make_window(with_model=False)
    monkeypatch.setattr(w, "show_error", lambda title, msg: errors.append(msg))
    open_and_wait(qtbot, w, FLAIR, session=False)
    w.labelmap.array[100:110, 100:110, 70] = 1
    before = w.labelmap.array.copy()
    bad = tmp_path / "probabilities.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full(w.volume.shape, 0.3, np.float32), w.volume.affine),
             str(bad))
    task = w.import_segmentation(str(bad), mode="replace")
    qtbot.waitUntil(lambda: bool(errors), timeout=60000)
    assert task.isFinished() or task.wait(5000)
    assert str(bad) in errors[0] and "fractional values" in errors[0]
    assert np.array_equal(w.labelmap.array, before) and not w.history.can_undo
    errors.clear()
    assert not w.import_descriptions(str(tmp_path / "missing.txt"))
    assert "missing.txt" in errors[0]


def test_nifti_scan_disables_dicom_exports_and_says_why(qtbot, make_window, quiet, tmp_path):
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, FLAIR, session=False)
    for act in w.dicom_export_actions.values():
        assert not act.isEnabled() and "opened from NIfTI" in act.toolTip()
    assert w.export_dicom("seg", str(tmp_path / "x.seg.dcm"), types={}) is None
    assert "no DICOM instances" in quiet[-1][2]
    w.labelmap.array[100:110, 100:110, 70] = 1
    out = w.export_labels(str(tmp_path / "flair_labels.nii.gz"))
    assert out is not None and (tmp_path / "flair_labels.itksnap.txt").exists()
    assert (tmp_path / "flair_labels.ctbl").exists() and (tmp_path / "flair_labels.json").exists()


def test_label_descriptions_rename_and_recolour_undoably(qtbot, make_window, quiet, tmp_path):
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, FLAIR, session=False)
    w.labelmap.array[100:110, 100:110, 70] = 2
    path = tmp_path / "names.ctbl"
    path.write_text("0 Background 0 0 0 0\n1 whole_tumour 10 20 30 255\n2 oedema 40 50 60 255\n"
                    "9 not_here 1 2 3 255\n")
    assert w.import_descriptions(str(path))
    assert w.labelmap.table.get(1).name == "whole tumour"
    assert w.labelmap.table.get(2).color == (40, 50, 60)
    assert w.labelmap.table.get(9) is None  # no voxels and no entry: not added
    assert "1 entries name labels this scan does not have" in w.statusBar().currentMessage()
    w.undo()
    assert w.labelmap.table.get(1).name == "label 1" and w.labelmap.table.get(2) is None
