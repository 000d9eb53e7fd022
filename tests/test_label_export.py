"""Label maps out on the source grid, for every volume in the real data pack."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume, save_label_map
from medsam_gui.io.atomic import atomic_path, atomic_write_bytes
from medsam_gui.volume import VIEWS, SourceInfo, Volume
from conftest import ABDOMEN, DATA, DICOM

NIFTIS = sorted(p for p in DATA.glob("**/*.nii.gz")) if DATA.is_dir() else []
SERIES = [DICOM / "mr_brain_sag_t1_siemens_HFS", DICOM / "mr_brain_ax30_dwi_b0_toshiba",
          DICOM / "ct_abdomen_siemens_jpeg2000"]
# reference images on the exact grid (in their own voxel order) of each DICOM series
DICOM_REFS = {
    SERIES[0].name: DICOM / "reference" / "mr_brain_sag_t1_siemens_HFS_dcm2niix.nii.gz",
    SERIES[1].name: DICOM / "reference" / "mr_brain_ax30_dwi_b0_toshiba_dcm2niix.nii.gz",
}
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
pytestmark = pytest.mark.needs_data


def _paint(shape):
    """A known voxel (value 1) and an asymmetric L-shaped blob (value 3) away from it."""
    labels = np.zeros(shape, np.uint8)
    voxel = (shape[0] // 3, shape[1] // 2 + 1, (2 * shape[2]) // 3)
    labels[voxel] = 1
    a, b, c = shape[0] // 2, shape[1] // 4, shape[2] // 3
    labels[a:a + 4, b, c] = 3
    labels[a, b:b + 2, c] = 3
    labels[a, b, c:c + 2] = 3
    return labels, voxel


def _map(matrix, ijk):
    """Voxel indices (n, 3) through a 4×4 voxel-to-voxel matrix, rounded."""
    ijk = np.asarray(ijk, dtype=float)
    return np.round((matrix @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T).astype(int)


def _world(affine, ijk):
    return (affine @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize("source", NIFTIS + SERIES, ids=lambda p: str(p.relative_to(DATA)))
def test_export_on_source_grid(source, tmp_path):
    vol = load_volume(source)
    labels, voxel = _paint(vol.shape)
    out = save_label_map(labels, vol, tmp_path / "labels.nii.gz")
    back = nib.load(str(out))
    data = np.asanyarray(back.dataobj)
    assert back.shape == vol.shape and data.dtype == np.uint8
    assert np.array_equal(data, labels)
    assert [tuple(v) for v in np.argwhere(data == 1)] == [voxel]
    hdr = back.header
    assert hdr.get_slope_inter() == (None, None) or hdr.get_slope_inter() == (1.0, 0.0)
    if vol.source.kind == "nifti":
        src = nib.load(str(source))
        assert np.array_equal(back.get_sform(), src.get_sform())
        assert np.allclose(back.get_qform(), src.get_qform(), atol=1e-4)
        assert int(hdr["sform_code"]) == int(src.header["sform_code"])
        assert int(hdr["qform_code"]) == int(src.header["qform_code"])
        src_affine = src.affine
    else:
        assert np.allclose(back.get_sform(), vol.affine, atol=1e-4)
        assert np.allclose(back.get_qform(), vol.affine, atol=1e-4)
        assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 1)
        src_affine = vol.affine
    # the painted voxel sits at the same world position as the source voxel
    assert np.allclose(_world(back.affine, voxel), _world(src_affine, voxel), atol=1e-3)


@pytest.mark.parametrize("series", SERIES, ids=lambda p: p.name)
def test_dicom_export_overlays_independent_reference(series, tmp_path):
    """Map each painted voxel through world space into an independent image of the series."""
    vol = load_volume(series)
    labels, _ = _paint(vol.shape)
    back = nib.load(str(save_label_map(labels, vol, tmp_path / "l.nii.gz")))
    if series.name in DICOM_REFS:
        ref = nib.load(str(DICOM_REFS[series.name]))
        ref_data = np.asanyarray(ref.dataobj)
        for ijk in np.argwhere(np.asanyarray(back.dataobj) > 0):
            r = np.round(np.linalg.inv(ref.affine) @ np.array([*_world(back.affine, ijk), 1]))
            assert ref_data[tuple(r[:3].astype(int))] == vol.data[tuple(ijk)]
    else:  # the CT: the organ label map is on the series grid; liver voxels stay liver
        ref = nib.load(str(CT_LABELS))
        organ = np.asanyarray(ref.dataobj)
        liver_ref = np.argwhere(organ == 5)[::997]
        lab = np.zeros(vol.shape, np.uint8)
        ours = _map(np.linalg.inv(vol.affine) @ ref.affine, liver_ref)
        lab[tuple(ours.T)] = 5
        back = nib.load(str(save_label_map(lab, vol, tmp_path / "liver.nii.gz")))
        hu = vol.data[np.asanyarray(back.dataobj) == 5]
        assert 40 < hu.mean() < 140  # liver HU, read through our grid
        again = _map(np.linalg.inv(ref.affine) @ back.affine, ours)
        assert np.array_equal(again, liver_ref)


@pytest.mark.parametrize("source", [NIFTIS[0], NIFTIS[-1], SERIES[0], SERIES[1]],
                         ids=lambda p: p.name)
def test_paint_through_view_geometry(source, tmp_path):
    vol = load_volume(source)
    labels = np.zeros(vol.shape, np.uint16)
    expected = {}
    for value, view in enumerate(VIEWS, start=2):
        geom = vol.geometry(view)
        rows, cols = geom.slice_shape
        k, r, c = geom.n_slices // 2 - 1, rows // 3, (2 * cols) // 3
        geom.take(labels, k)[r, c] = value
        expected[value] = vol.voxel_index(view, k, r, c)
    back = np.asanyarray(nib.load(str(save_label_map(labels, vol, tmp_path / "v.nii"))).dataobj)
    for value, ijk in expected.items():
        assert [tuple(v) for v in np.argwhere(back == value)] == [ijk]


def test_uint16_when_labels_exceed_255(tmp_path):
    vol = load_volume(ABDOMEN / "example_mr_sm.nii.gz")
    labels = np.zeros(vol.shape, np.int32)
    labels[1, 2, 3] = 300
    back = nib.load(str(save_label_map(labels, vol, tmp_path / "big.nii.gz")))
    assert back.get_data_dtype() == np.uint16 and back.dataobj[1, 2, 3] == 300
    small = nib.load(str(save_label_map(labels > 0, vol, tmp_path / "bool.nii.gz")))
    assert small.get_data_dtype() == np.uint8 and small.dataobj[1, 2, 3] == 1


def test_labels_do_not_inherit_scaling_from_a_float_source(tmp_path):
    src = nib.load(str(ABDOMEN / "example_ct_sm.nii.gz"))
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), src.affine)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    vol = load_volume(path)
    labels = np.zeros(vol.shape, np.uint8)
    labels[5, 6, 7] = 2
    back = nib.load(str(save_label_map(labels, vol, tmp_path / "l.nii.gz")))
    assert back.dataobj.slope == 1.0 and back.dataobj.inter == 0.0
    assert np.array_equal(np.asanyarray(back.dataobj), labels)


def test_sheared_affine_keeps_exact_sform(tmp_path):
    base = load_volume(DICOM / "mr_brain_ax30_dwi_b0_toshiba")
    affine = base.affine.copy()
    affine[1, 2] = 3 * np.tan(np.radians(12))  # gantry-tilt-like shear
    vol = Volume(base.data, affine, "MR", SourceInfo(path="x", kind="dicom"))
    labels = np.zeros(vol.shape, np.uint8)
    labels[10, 20, 30] = 1
    back = nib.load(str(save_label_map(labels, vol, tmp_path / "s.nii.gz")))
    assert np.allclose(back.get_sform(), affine, atol=1e-4)
    assert np.allclose(back.affine, affine, atol=1e-4)  # readers use the exact sform
    assert int(back.header["qform_code"]) == 0


def test_atomic_helpers(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("fail mid-write")
    assert target.read_bytes() == b"one"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_failed_export_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    vol = load_volume(ABDOMEN / "example_mr_sm.nii.gz")
    out = tmp_path / "labels.nii.gz"
    good = np.zeros(vol.shape, np.uint8)
    save_label_map(good, vol, out)
    before = out.read_bytes()
    import medsam_gui.io.labels as labels_mod

    def bad_verify(raw, img, path):
        raise MedsamError("label map failed verification: voxels differ", path)

    monkeypatch.setattr(labels_mod, "_verify", bad_verify)
    with pytest.raises(MedsamError, match="verification"):
        save_label_map(good + 1, vol, out)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["labels.nii.gz"]
