"""NIfTI loading on the real data: voxels and affine exactly as nibabel stores them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from medsam_gui.io.voxel_facts import guess_modality
from conftest import ABDOMEN, DATA, MNI, PAT1, PAT2

NIFTIS = sorted(DATA.glob("**/*.nii.gz")) if DATA.is_dir() else []
pytestmark = pytest.mark.needs_data


@pytest.mark.parametrize("path", NIFTIS, ids=lambda p: str(p.relative_to(DATA)))
def test_voxels_and_affine_as_stored(path):
    vol = load_volume(path)
    img = nib.load(str(path))
    expected = np.asanyarray(img.dataobj)
    assert vol.shape == img.shape
    assert vol.data.dtype == expected.dtype  # on-disk dtype unless the header scales
    assert np.array_equal(vol.data, expected)
    assert np.array_equal(vol.affine, img.affine)
    assert vol.source.kind == "nifti"
    assert vol.source.nifti_header is not None
    assert vol.source.warnings == []
    assert list_series(path) == []


def test_on_disk_dtypes_kept():
    assert load_volume(ABDOMEN / "example_ct_sm.nii.gz").data.dtype == np.int16
    mni = MNI / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    assert load_volume(mni).data.dtype == np.uint8
    assert load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz").data.dtype == np.float32


def test_modality_guess():
    assert load_volume(ABDOMEN / "example_ct_sm.nii.gz").modality == "CT"
    assert load_volume(ABDOMEN / "example_mr_sm.nii.gz").modality == "MR"
    assert load_volume(PAT2 / "T1c_subtrMeanDivStd.nii.gz").modality == "MR"
    assert load_volume(MNI / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").modality == "MR"
    # CT padded outside the field of view is still CT; a phase-like spread is not
    ct = np.asanyarray(nib.load(str(ABDOMEN / "example_ct_sm.nii.gz")).dataobj).copy()
    ct[:20] = -3024
    assert guess_modality(ct) == "CT"
    assert guess_modality(np.linspace(-4096, 4096, 10**5).round().astype(np.int16)) == "MR"
    assert guess_modality(ct.astype(np.float32) + 0.5) == "MR"


def test_uncompressed_and_big_endian(tmp_path):
    src = nib.load(str(ABDOMEN / "example_mr_sm.nii.gz"))
    raw = np.asanyarray(src.dataobj)
    plain = tmp_path / "mr.nii"
    nib.save(src, str(plain))
    assert np.array_equal(load_volume(plain).data, raw)
    big = tmp_path / "mr_be.nii"
    img = nib.Nifti1Image(raw.astype(">i2"), src.affine, header=src.header.copy())
    img.header.set_data_dtype(">i2")
    nib.save(img, str(big))
    vol = load_volume(big)
    assert vol.data.dtype.isnative and np.array_equal(vol.data, raw)


def test_scl_slope_applied_as_nibabel_does(tmp_path):
    src = nib.load(str(ABDOMEN / "example_ct_sm.nii.gz"))
    raw = np.asanyarray(src.dataobj)
    img = nib.Nifti1Image(raw, src.affine)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    vol = load_volume(path)
    assert np.issubdtype(vol.data.dtype, np.floating)
    assert np.allclose(vol.data, nib.load(str(path)).get_fdata())
    assert np.allclose(vol.data, raw * 0.5 - 10.0)


def test_4d_first_volume_with_note_and_index(tmp_path):
    src = nib.load(str(ABDOMEN / "example_mr_sm.nii.gz"))
    raw = np.asanyarray(src.dataobj)
    stack = np.stack([raw, raw + 1, raw + 2], axis=-1)
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(stack, src.affine), str(path))
    first = load_volume(path)
    assert np.array_equal(first.data, raw)
    assert any("4D" in w and "volume 0" in w for w in first.source.warnings)
    third = load_volume(path, volume_index=2)
    assert np.array_equal(third.data, raw + 2)
    with pytest.raises(MedsamError, match="outside 0..2"):
        load_volume(path, volume_index=3)
    # a trailing singleton 4th dimension is just a 3D volume
    single = tmp_path / "one_volume.nii.gz"
    nib.save(nib.Nifti1Image(raw[..., None], src.affine), str(single))
    vol = load_volume(single)
    assert vol.shape == raw.shape and vol.source.warnings == []


def _screen_world(vol, view, index, row, col):
    ijk = vol.voxel_index(view, index, row, col)
    return (vol.affine @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize(
    "path",
    [PAT1 / "Flair_subtrMeanDivStd.nii.gz", ABDOMEN / "example_ct_sm.nii.gz",
     ABDOMEN / "example_mr_sm.nii.gz"],
    ids=["brats_LPS", "abdomen_ct_RAS", "abdomen_mr_LPS"],
)
def test_radiological_display_orientation(path):
    """Axial: patient right (+x) on screen left, anterior (+y) up; coronal: superior up;
    sagittal: anterior on screen left, superior up."""
    vol = load_volume(path)
    checks = {  # view: (world axis across the screen, sign left-minus-right, axis down, sign)
        "axial": (0, +1, 1, +1),
        "coronal": (0, +1, 2, +1),
        "sagittal": (1, +1, 2, +1),
    }
    for view, (across, s_across, down, s_down) in checks.items():
        geom = vol.geometry(view)
        rows, cols = geom.slice_shape
        k = geom.n_slices // 2
        left = _screen_world(vol, view, k, rows // 2, 0)
        right = _screen_world(vol, view, k, rows // 2, cols - 1)
        top = _screen_world(vol, view, k, 0, cols // 2)
        bottom = _screen_world(vol, view, k, rows - 1, cols // 2)
        assert s_across * (left[across] - right[across]) > 0, view
        assert s_down * (top[down] - bottom[down]) > 0, view
        assert vol.slice(view, k).shape == (rows, cols)
