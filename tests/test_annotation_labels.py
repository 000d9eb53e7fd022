"""LabelMap painting, provenance records, label table and compact Change diffs."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_gui.annotation import Change, LabelMap, LabelTable, SliceRecord, mask_sha256
from medsam_gui.volume import VIEWS, view_geometry

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # the BRATS orientation: rows and columns flipped
RAS = np.eye(4)
SHAPE = (40, 30, 20)


def disk(shape, center, radius):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def test_label_table_defaults_and_edits():
    t = LabelTable()
    assert [(lab.value, lab.name) for lab in t.labels] == [(1, "label 1")]
    assert t.labels[0].color == (230, 25, 75)
    lab = t.add("liver")
    assert lab.value == 2 and t.get(2).name == "liver" and lab.color != t.labels[0].color
    t.rename(2, "kidney")
    t.recolor(2, (1, 2, 3))
    back = LabelTable.from_json(t.to_json())
    assert back.get(2).name == "kidney" and back.get(2).color == (1, 2, 3)
    t.remove(1)
    assert t.get(1) is None and t.add().value == 3
    with pytest.raises(KeyError):
        t.rename(99, "x")


@pytest.mark.parametrize("affine", [LPS, RAS], ids=["LPS", "RAS"])
@pytest.mark.parametrize("view", VIEWS)
def test_paint_writes_through_view_geometry(affine, view):
    geom = view_geometry(affine, SHAPE, view)
    lm = LabelMap(SHAPE)
    mask = np.zeros(geom.slice_shape, bool)
    mask[2:7, 3:5] = True
    ch = lm.paint(geom, 4, mask, 1)
    assert np.array_equal(lm.slice(geom, 4) == 1, mask)
    assert lm.array.sum() == mask.sum()
    # the diff is the bounding box of the changed pixels, one slice thick
    sizes = sorted(b - a for a, b in ch.region)
    assert sizes == [1, 2, 5]
    assert ch.n_changed_voxels == mask.sum()
    # voxel order: display pixel (row, col) maps to the voxel the geometry says
    i, j, k = geom.voxel_index(4, 2, 3)
    assert lm.array[i, j, k] == 1


def test_paint_modes():
    geom = view_geometry(LPS, SHAPE, "axial")
    lm = LabelMap(SHAPE)
    lm.table.add("two")
    a = disk(geom.slice_shape, (10, 10), 5)
    b = disk(geom.slice_shape, (14, 14), 5)
    lm.paint(geom, 3, a, 1)
    lm.paint(geom, 3, b, 2, "add")
    s = lm.slice(geom, 3)
    assert np.array_equal(s == 2, b) and np.array_equal(s == 1, a & ~b)
    # replace: label 1 becomes exactly the new mask, label 2 outside it untouched
    c = disk(geom.slice_shape, (20, 8), 3)
    lm.paint(geom, 3, c, 1, "replace")
    assert np.array_equal(s == 1, c) and np.array_equal(s == 2, b & ~c)
    # erase clears only the given label, value 0 clears all labels under the mask
    everything = np.ones(geom.slice_shape, bool)
    lm.paint(geom, 3, everything, 1, "erase")
    assert not (s == 1).any() and (s == 2).any()
    lm.paint(geom, 3, everything, 0, "erase")
    assert not s.any()
    assert lm.array.sum() == 0  # other slices never touched


def test_provenance_records():
    geom = view_geometry(LPS, SHAPE, "coronal")
    lm = LabelMap(SHAPE)
    m = np.zeros(geom.slice_shape, bool)
    m[5:9, 5:9] = True
    rec = SliceRecord("ignored", 0, 0, status="model", boxes=[[5, 5, 8, 8]], model="LiteMedSAM",
                      weights_sha256="ab" * 32, model_mask_sha256=mask_sha256(m), iou=0.91)
    lm.paint(geom, 7, m, 1, record=rec)
    r = lm.records[("coronal", 7, 1)]
    assert (r.axis, r.index, r.label, r.status, r.iou) == ("coronal", 7, 1, "model", 0.91)
    # a brush stroke without a record marks the slice edited, keeping the prompts/model
    stroke = np.zeros_like(m)
    stroke[10, 10] = True
    lm.paint(geom, 7, stroke, 1, "add")
    r = lm.records[("coronal", 7, 1)]
    assert r.status == "edited" and r.model == "LiteMedSAM" and r.boxes == [[5, 5, 8, 8]]
    lm.mark_accepted("coronal", 7, 1)
    assert lm.records[("coronal", 7, 1)].status == "accepted"
    # accepting a slice without a record creates one; JSON round trip keeps every field
    lm.mark_accepted("axial", 2, 1)
    for r in lm.records.values():
        assert SliceRecord.from_json(r.to_json()) == r
    assert [x.status for x in lm.records_for(("accepted",))] == ["accepted", "accepted"]
    with pytest.raises(ValueError):
        SliceRecord("axial", 0, 1, status="bogus")


def test_unchanged_paint_is_empty_change():
    geom = view_geometry(RAS, SHAPE, "axial")
    lm = LabelMap(SHAPE)
    ch = lm.paint(geom, 1, np.zeros(geom.slice_shape, bool), 1, "add")
    assert isinstance(ch, Change) and ch.empty and ch.region is None
    assert lm.records == {}


def test_remove_label_undo():
    geom = view_geometry(LPS, SHAPE, "sagittal")
    lm = LabelMap(SHAPE)
    lab = lm.table.add("two")
    for i in (2, 5, 9):
        lm.paint(geom, i, disk(geom.slice_shape, (10, 10), 4), lab.value)
    before = lm.array.copy()
    ch = lm.remove_label(lab.value)
    assert not (lm.array == lab.value).any() and lm.table.get(lab.value) is None
    assert not [k for k in lm.records if k[2] == lab.value]
    lm.apply(ch, undo=True)
    assert np.array_equal(lm.array, before) and lm.table.get(lab.value).name == "two"
    assert len([k for k in lm.records if k[2] == lab.value]) == 3


@pytest.mark.needs_data
@pytest.mark.parametrize("order", ["F", "C"])
def test_present_slices_match_the_label_map_on_real_labels(order):
    """The slab-skipping pass answers exactly as the whole-grid definition, on every view and
    label of a real multi-class tumour label map (slabs with and without labels)."""
    import nibabel as nib

    from conftest import PAT1
    from medsam_gui.annotation import review

    img = nib.load(str(PAT1 / "OTMultiClass.nii.gz"))
    arr = np.asarray(img.dataobj).astype(np.uint8)
    lm = LabelMap(arr.shape, array=np.asfortranarray(arr) if order == "F" else
                  np.ascontiguousarray(arr))
    values = [int(v) for v in np.unique(arr) if v] + [9]  # 9: a label with no voxel
    for view in VIEWS:
        geom = view_geometry(img.affine, arr.shape, view)
        other = tuple(a for a in range(3) if a != geom.slice_axis)
        for v in values:
            want = (arr == v).any(axis=other)
            got = review.present_slices(lm, geom, v)
            assert got.dtype == bool and np.array_equal(got, want), (view, v)
            if v != 9:  # slabs with the label and slabs without any label both occur
                assert 0 < got.sum() < len(got) - 16, (view, v)
