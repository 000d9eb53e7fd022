"""Segmentations from elsewhere, in: grids matched through the affines, bad files refused with
their name, imported slices unreviewed until a person looks, round trips through SEG and the
label description files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.annotation import History
from medsam_gui.annotation.importing import import_segmentation
from medsam_gui.annotation.labels import REVIEWED, Label, LabelMap, LabelTable
from medsam_gui.annotation.review import FILLED, REVIEWED as REVIEWED_STATE, slice_states
from medsam_gui.engine.evaluate import dice
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume
from medsam_gui.annotation.exporting import export_labels
from medsam_gui.io.label_descriptions import (itksnap_text, read_descriptions,
                                              slicer_ctbl_text)
from medsam_gui.io.label_import import read_label_descriptions, read_segmentation
from medsam_gui.volume import view_for_axis
from conftest import ABDOMEN, DICOM, PAT1
from test_dicom_export import CT, CT_LABELS, LIVER, ct_reference

pytestmark = pytest.mark.needs_data

FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
TRUTH = PAT1 / "OTMultiClass.nii.gz"


@pytest.fixture(scope="module")
def ct():
    return load_volume(CT)


@pytest.fixture(scope="module")
def flair():
    return load_volume(FLAIR)


def save(tmp_path: Path, name: str, data, affine, oriented: bool = True) -> Path:
    img = nib.Nifti1Image(data, affine)
    if not oriented:
        img.set_sform(affine, code=0)
        img.set_qform(affine, code=0)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def test_ct_reference_labels_come_in_reordered_exactly(ct):
    imported = read_segmentation(CT_LABELS, ct)
    assert np.array_equal(imported.array, ct_reference(ct))
    assert any("reordered exactly" in n for n in imported.notes)
    assert not any("resampled" in n for n in imported.notes)


def test_float_label_map_on_the_same_grid_is_taken_as_it_is(flair):
    """BRATS stores its expert labels as float32 whole numbers: they are labels."""
    imported = read_segmentation(TRUTH, flair)
    truth = np.asarray(nib.load(str(TRUTH)).dataobj)
    assert np.array_equal(imported.array, truth.astype(np.uint16)) and imported.notes == []


def test_label_map_on_a_coarser_grid_is_resampled_with_a_warning(flair, tmp_path):
    truth = np.asarray(nib.load(str(TRUTH)).dataobj).astype(np.uint8)
    coarse = truth[::2, ::2, ::2]
    affine = flair.affine @ np.diag([2.0, 2.0, 2.0, 1.0])  # voxel centres on even indices
    imported = read_segmentation(save(tmp_path, "coarse.nii.gz", coarse, affine), flair)
    assert any("resampled by nearest neighbour" in n for n in imported.notes)
    assert np.array_equal(imported.array[::2, ::2, ::2], coarse)  # shared centres: exact
    assert dice(imported.array > 0, truth > 0) > 0.85


def test_label_map_of_another_place_is_refused(flair, tmp_path):
    truth = np.asarray(nib.load(str(TRUTH)).dataobj).astype(np.uint8)
    shifted = flair.affine.copy()
    shifted[:3, 3] += (0.0, 0.0, 140.0)  # 14 cm higher: most of the tumour above the scan
    with pytest.raises(MedsamError, match="does not belong to this scan") as err:
        read_segmentation(save(tmp_path, "elsewhere.nii.gz", truth, shifted), flair)
    assert "elsewhere.nii.gz" in str(err.value)
    with pytest.raises(MedsamError, match="does not belong to this scan"):
        read_segmentation(ABDOMEN / "example_seg.nii.gz", flair)


@pytest.mark.parametrize("case, match", [
    ("probability", "fractional values"),
    ("negative", "negative values"),
    ("nan", "NaN"),
    ("4d", "4D"),
    ("too_many", "more than the 65535 labels"),
    ("no_orientation_other_shape", "grid cannot be matched"),
    ("empty", "holds no labels"),
    ("truncated", "truncated"),
])
def test_bad_label_maps_are_refused_with_their_name(flair, tmp_path, case, match):
    truth = np.asarray(nib.load(str(TRUTH)).dataobj)
    affine = flair.affine
    if case == "probability":
        path = save(tmp_path, f"{case}.nii.gz", (truth > 0) * np.float32(0.7), affine)
    elif case == "negative":
        path = save(tmp_path, f"{case}.nii.gz", np.where(truth > 0, -1, 0).astype(np.int16),
                    affine)
    elif case == "nan":
        data = truth.astype(np.float32)
        data[0, 0, 0] = np.nan
        path = save(tmp_path, f"{case}.nii.gz", data, affine)
    elif case == "4d":
        path = save(tmp_path, f"{case}.nii.gz", np.stack([truth, truth], -1), affine)
    elif case == "too_many":
        path = save(tmp_path, f"{case}.nii.gz", (truth > 0).astype(np.int32) * 70000, affine)
    elif case == "no_orientation_other_shape":
        path = save(tmp_path, f"{case}.nii.gz", truth[:200].astype(np.uint8), affine,
                    oriented=False)
    elif case == "empty":
        path = save(tmp_path, f"{case}.nii.gz", np.zeros(truth.shape, np.uint8), affine)
    else:
        full = save(tmp_path, "full.nii", truth.astype(np.uint8), affine)
        path = tmp_path / f"{case}.nii"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(MedsamError, match=match) as err:
        read_segmentation(path, flair)
    assert str(path) in str(err.value)


def test_wrong_kinds_of_file_are_named(ct, flair, tmp_path):
    some_slice = sorted((DICOM / "mr_brain_ax30_dwi_b0_toshiba").iterdir())[0]
    with pytest.raises(MedsamError, match="neither a NIfTI label map"):
        read_segmentation(some_slice, ct)
    table = tmp_path / "names.ctbl"
    table.write_text("0 Background 0 0 0 0\n1 liver 200 100 50 255\n")
    with pytest.raises(MedsamError, match="label description file, not a segmentation"):
        read_segmentation(table, ct)
    lm = LabelMap(ct.shape)
    lm.array[200:260, 200:260, 8:12] = 1
    seg = export_labels(lm, ct, tmp_path / "ct.seg.dcm").path
    with pytest.raises(MedsamError, match="opened from NIfTI"):
        read_segmentation(seg, flair)


def test_seg_of_another_series_is_refused(ct, tmp_path):
    dwi = load_volume(DICOM / "mr_brain_ax30_dwi_b0_toshiba")
    lm = LabelMap(dwi.shape)
    lm.array[20:40, 20:40, 10:20] = 1
    seg = export_labels(lm, dwi, tmp_path / "dwi.seg.dcm").path
    with pytest.raises(MedsamError, match="made on another scan") as err:
        read_segmentation(seg, ct)
    assert str(seg) in str(err.value)


def test_seg_without_source_references_is_placed_by_its_plane_positions(ct, tmp_path):
    import pydicom

    truth = ct_reference(ct)
    lm = LabelMap(ct.shape, LabelTable([Label(1, "liver", (200, 100, 50))]))
    lm.array[truth == LIVER] = 1
    path = export_labels(lm, ct, tmp_path / "liver.seg.dcm").path
    ds = pydicom.dcmread(str(path))
    for item in ds.PerFrameFunctionalGroupsSequence:  # as some writers do: positions only
        del item.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    bare = tmp_path / "bare.seg.dcm"
    ds.save_as(str(bare))
    back = read_segmentation(bare, ct)
    assert np.array_equal(back.array, lm.array) and back.names == {1: "liver"}


def test_rtstruct_comes_back_as_the_labels_it_was_made_from(ct, tmp_path):
    """Structures from planning go both ways; contours without image references are placed
    by their plane, contours of another series are refused."""
    import pydicom

    truth = ct_reference(ct)
    lm = LabelMap(ct.shape, array=truth)
    out = export_labels(lm, ct, tmp_path / "organs.rtstruct.dcm")
    back = read_segmentation(out.path, ct)
    restored = np.zeros_like(back.array)
    for seg in out.segments:  # ROI numbers are the segment numbers 1..n
        restored[back.array == seg.number] = seg.value
    assert np.array_equal(restored, truth)
    assert back.names[1] == "label 1" and back.notes == []
    ds = pydicom.dcmread(str(out.path))
    for rc in ds.ROIContourSequence:
        for item in rc.ContourSequence:
            del item.ContourImageSequence
    bare = tmp_path / "bare.rtstruct.dcm"
    ds.save_as(str(bare))
    assert np.array_equal(read_segmentation(bare, ct).array, back.array)
    dwi = load_volume(DICOM / "mr_brain_ax30_dwi_b0_toshiba")
    with pytest.raises(MedsamError, match="made on another scan"):
        read_segmentation(out.path, dwi)


def test_import_marks_slices_unreviewed_and_a_corrected_slice_alone_becomes_training(ct,
                                                                                     tmp_path):
    """The issue's workflow: reference organs in, one slice corrected, SEG out, rest intact."""
    imported = read_segmentation(CT_LABELS, ct)
    lm = LabelMap(ct.shape)
    history = History()
    geom = view_for_axis(ct.affine, ct.shape, 2)
    change, mapping = import_segmentation(lm, imported, geom, CT_LABELS, "replace")
    history.push(change)
    assert mapping[LIVER] == LIVER and np.array_equal(lm.array, imported.array)
    assert lm.records_for(REVIEWED) == []
    states = slice_states(lm, geom, LIVER)
    assert set(states) == {FILLED}  # the liver is on all 20 slices, none reviewed
    rec = lm.records[(geom.view, 10, LIVER)]
    assert rec.method == "imported" and rec.model == f"import: {CT_LABELS.name}"
    # correct slice 10: remove a corner of the liver (a person's edit)
    before = lm.array.copy()
    plane = geom.take(lm.array, 10) == LIVER
    rows, cols = np.nonzero(plane)
    cut = plane.copy()
    cut[: int(np.median(rows)), : int(np.median(cols))] = False
    history.push(lm.paint(geom, 10, cut, LIVER))
    assert [(r.index, r.label, r.status) for r in lm.records_for(REVIEWED)] == [
        (10, LIVER, "edited")]
    assert slice_states(lm, geom, LIVER)[10] == REVIEWED_STATE
    out = export_labels(lm, ct, tmp_path / "corrected.seg.dcm")
    back = read_segmentation(out.path, ct)
    numbers = {s.value: s.number for s in out.segments}
    restored = np.zeros_like(back.array)
    for value, number in numbers.items():
        restored[back.array == number] = value
    assert np.array_equal(restored, lm.array)
    changed = np.nonzero((restored != before).any(axis=(0, 1)))[0]
    assert changed.tolist() == [10]  # every other slice as imported
    # undo twice: the label map is empty again, with no records
    history.undo(lm)
    history.undo(lm)
    assert not lm.array.any() and lm.records == {}


def test_merge_keeps_what_a_person_drew(ct):
    imported = read_segmentation(CT_LABELS, ct)
    lm = LabelMap(ct.shape, LabelTable([Label(1, "my lesion", (255, 0, 0))]))
    geom = view_for_axis(ct.affine, ct.shape, 2)
    liver = imported.array == LIVER
    mine = np.zeros(ct.shape, bool)
    mine[np.nonzero(liver)[0][0]:, :, 10] = liver[np.nonzero(liver)[0][0]:, :, 10]
    lm.array[mine] = 1
    change, mapping = import_segmentation(lm, imported, geom, CT_LABELS, "merge")
    assert (lm.array[mine] == 1).all()  # nothing drawn was overwritten
    assert min(mapping.values()) == 2 and lm.table.get(1).name == "my lesion"
    new_liver = mapping[LIVER]
    assert np.array_equal(lm.array == new_liver, liver & ~mine)


def test_label_descriptions_round_trip_both_formats(tmp_path):
    labels = [Label(1, "liver", (221, 130, 101)), Label(5, "kidney left", (185, 102, 83)),
              Label(12, 'tumour "core"', (0, 0, 255), visible=False)]
    for text, name in ((itksnap_text(labels), "d.itksnap.txt"), (slicer_ctbl_text(labels),
                                                                 "d.ctbl")):
        path = tmp_path / name
        path.write_text(text)
        back = read_descriptions(path)
        assert [(d.value, d.color) for d in back] == [(lab.value, lab.color) for lab in labels]
        assert back[1].name == "kidney left"
    itk = read_descriptions(tmp_path / "d.itksnap.txt")
    assert itk[2].name == "tumour 'core'" and itk[2].visible is False


def test_itksnap_file_as_itk_snap_writes_it_is_read(tmp_path):
    path = tmp_path / "snap.txt"
    path.write_text("""################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
################################################
    0     0    0    0        0  0  0    "Clear Label"
    1   255    0    0        1  1  1    "Label 1"
    2     0  255    0        1  1  1    "Necrotic core"
""")
    back = read_label_descriptions(path)
    assert [(d.value, d.name, d.color) for d in back] == [(1, "Label 1", (255, 0, 0)),
                                                         (2, "Necrotic core", (0, 255, 0))]


def test_names_come_along_from_a_description_file_beside_the_label_map(flair, tmp_path):
    truth = np.asarray(nib.load(str(TRUTH)).dataobj).astype(np.uint8)
    lm = LabelMap(flair.shape, LabelTable([Label(v, n, c) for v, n, c in (
        (1, "necrosis", (255, 0, 0)), (2, "oedema", (0, 255, 0)), (3, "non-enhancing", (0, 0, 255)),
        (4, "enhancing tumour", (255, 255, 0)))]), truth)
    out = export_labels(lm, flair, tmp_path / "brats.nii.gz")
    (tmp_path / "brats.json").unlink()  # ITK-SNAP's file alone must do
    back = read_segmentation(out.path, flair)
    assert back.names == {1: "necrosis", 2: "oedema", 3: "non-enhancing", 4: "enhancing tumour"}
    assert back.colors[4] == (255, 255, 0)
    assert np.array_equal(back.array, truth)


@pytest.mark.parametrize("text, match", [
    ("1 liver 300 0 0 255\n", "within 0..255"),
    ('    1   255    0    0        1  1  1    "unclosed\n', "unbalanced quotes"),
    ("# only comments\n", "no label descriptions"),
    ("70000 big 1 2 3 255\n", "outside 0..65535"),
])
def test_bad_description_files_are_named(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(MedsamError, match=match) as err:
        read_label_descriptions(path)
    assert str(path) in str(err.value)


def test_label_sizes_of_an_imported_organ_map(ct):
    """31 organs and a table entry without voxels: counts and extents per view, as a
    whole-volume comparison per label gives them."""
    from medsam_gui.annotation.review import label_sizes

    imported = read_segmentation(CT_LABELS, ct)
    lm = LabelMap(ct.shape)
    import_segmentation(lm, imported, view_for_axis(ct.affine, ct.shape, 2), CT_LABELS)
    lm.table.add("nothing yet")
    geoms = {v: ct.geometry(v) for v in ("axial", "coronal", "sagittal")}
    sizes = label_sizes(lm, ct.spacing, geoms)
    assert len(sizes) == 32
    for lab in lm.table.labels:
        hit = lm.array == lab.value
        assert sizes[lab.value].voxels == int(hit.sum())
        for view, geom in geoms.items():
            other = tuple(a for a in range(3) if a != geom.slice_axis)
            idx = np.flatnonzero(hit.any(axis=other))
            want = (int(idx[0]), int(idx[-1])) if len(idx) else None
            assert sizes[lab.value].extents[view] == want


@pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent")  # the DWI's name
def test_overlapping_segments_of_another_tool_keep_the_higher_number(tmp_path):
    """Slicer and others write SEGs whose segments overlap (a lesion inside an organ)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from medsam_gui.io.dicom_source import source_instances

    dwi = load_volume(DICOM / "mr_brain_ax30_dwi_b0_toshiba")
    instances = source_instances(dwi)
    binary = np.zeros((dwi.shape[2], dwi.shape[1], dwi.shape[0], 2), bool)
    binary[10:20, 20:40, 20:40, 0] = True  # "brain"
    binary[12:15, 25:30, 25:30, 1] = True  # "lesion", inside it
    descriptions = [hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue,
                                              "MANUAL") for n, name in ((1, "brain"),
                                                                        (2, "lesion"))]
    seg = hd.seg.Segmentation(instances.datasets, binary, "BINARY", descriptions, hd.UID(), 5,
                              hd.UID(), 1, "other tool", "other tool", "1", "1")
    with_refs = tmp_path / "overlap.seg.dcm"
    seg.save_as(str(with_refs))
    want = np.zeros(dwi.shape, np.uint16)
    want[np.transpose(binary[..., 0], (2, 1, 0))] = 1
    want[np.transpose(binary[..., 1], (2, 1, 0))] = 2
    ds = pydicom.dcmread(str(with_refs))
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    by_position = tmp_path / "overlap_positions.seg.dcm"
    ds.save_as(str(by_position))
    for path in (with_refs, by_position):
        back = read_segmentation(path, dwi)
        assert np.array_equal(back.array, want), path.name
        assert any("segments overlap" in n for n in back.notes)
        assert back.names == {1: "brain", 2: "lesion"}
