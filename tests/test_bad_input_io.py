"""Bad input: every case raises MedsamError naming the file and the problem, nothing else.

The bad files are made in tmp_path from copies of the real data (truncated, corrupted, or
rewritten with pydicom with fields removed).
"""

from __future__ import annotations

import gzip
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume, save_label_map
from conftest import ABDOMEN, DICOM, PAT1

CT_NII = ABDOMEN / "example_ct_sm.nii.gz"
TOSHIBA = DICOM / "mr_brain_ax30_dwi_b0_toshiba"
pytestmark = pytest.mark.needs_data


def _refused(path, match, **kw):
    with pytest.raises(MedsamError, match=match) as info:
        load_volume(path, **kw)
    assert str(path) in str(info.value)
    return info.value


def _plain_nii(tmp_path):
    path = tmp_path / "ct.nii"
    nib.save(nib.load(str(CT_NII)), str(path))
    return path


def test_nonexistent_path(tmp_path):
    _refused(tmp_path / "nothing.nii.gz", "no such file")
    with pytest.raises(MedsamError, match="no such file"):
        list_series(tmp_path / "nowhere")


def test_empty_files(tmp_path):
    for name in ("empty.nii.gz", "empty.nii", "empty_dicom"):
        (tmp_path / name).write_bytes(b"")
        _refused(tmp_path / name, "empty")


def test_truncated_nifti_gz(tmp_path):
    raw = CT_NII.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    _refused(path, "compressed file is truncated")


def test_truncated_plain_nifti(tmp_path):
    path = _plain_nii(tmp_path)
    path.write_bytes(path.read_bytes()[:-5000])
    _refused(path, "truncated: the header promises")


def test_corrupt_gzip_stream(tmp_path):
    raw = bytearray(CT_NII.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 2000] = os.urandom(2000)
    path = tmp_path / "garbled.nii.gz"
    path.write_bytes(bytes(raw))
    _refused(path, "compressed file is damaged|not a readable NIfTI")


def test_not_nifti_with_nifti_name(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is a text file, not an image\n" * 40)
    _refused(path, "not a readable NIfTI")
    gz = tmp_path / "notes.nii.gz"
    gz.write_bytes(gzip.compress(b"plain text " * 100))
    _refused(gz, "not a readable NIfTI")


def test_unknown_file_kind(tmp_path):
    path = tmp_path / "readme"
    path.write_text("hello\n" * 100)
    _refused(path, "not a NIfTI .* or DICOM file")


def test_folder_where_file_expected_and_file_where_folder_expected(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    _refused(folder, "folder, not a NIfTI file")
    with pytest.raises(MedsamError, match="folder") as info:
        save_label_map(np.zeros((2, 2, 2), np.uint8), load_volume(CT_NII), folder)
    assert str(folder) in str(info.value)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(MedsamError, match="is a file, not a folder") as info:
        save_label_map(np.zeros((2, 2, 2), np.uint8), load_volume(CT_NII), a_file / "l.nii.gz")
    assert str(a_file) in str(info.value)


def test_folder_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "no DICOM image series found .*empty")
    with pytest.raises(MedsamError, match="no DICOM image series"):
        list_series(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    shutil.copy(CT_NII, junk / "b.nii.gz")
    _refused(junk, r"no DICOM image series found \(1 not DICOM, 1 NIfTI file\(s\): open the file")


def _rewritten(src, dst, fn):
    ds = pydicom.dcmread(src)
    fn(ds)
    ds.save_as(dst)
    return dst


def _without_pixels(ds):
    del ds.PixelData


def test_dicom_without_pixel_data(tmp_path):
    files = sorted(TOSHIBA.iterdir())
    one = _rewritten(files[0], tmp_path / "nopix.dcm", _without_pixels)
    _refused(one, "no pixel data")
    folder = tmp_path / "series"
    folder.mkdir()
    for f in files[:4]:
        _rewritten(f, folder / f.name, _without_pixels)
    with pytest.raises(MedsamError, match="no pixel data") as info:
        load_volume(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("modality,sop", [("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3"),
                                          ("SR", "1.2.840.10008.5.1.4.1.1.88.11")])
def test_non_image_objects(tmp_path, modality, sop):
    def to_non_image(ds):
        ds.Modality, ds.SOPClassUID = modality, sop
        ds.file_meta.MediaStorageSOPClassUID = sop
        for tag in ("PixelData", "Rows", "Columns", "ImagePositionPatient"):
            delattr(ds, tag)

    folder = tmp_path / "objects"
    folder.mkdir()
    for f in sorted(TOSHIBA.iterdir())[:3]:
        _rewritten(f, folder / f.name, to_non_image)
    _refused(folder, f"no DICOM image series found .*non-image object \\({modality}\\)")
    _refused(folder / sorted(os.listdir(folder))[0], f"cannot be opened as a volume.*{modality}")
    # beside a real series the objects are skipped
    for f in TOSHIBA.iterdir():
        shutil.copy(f, folder / ("img_" + f.name))
    assert load_volume(folder).shape == (64, 64, 40)


def _shrunk(ds):
    small = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()


def test_series_with_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    files = sorted(TOSHIBA.iterdir())
    for n, f in enumerate(files):
        if n % 8 == 3:
            _rewritten(f, folder / f.name, _shrunk)
        else:
            shutil.copy(f, folder / f.name)
    infos = list_series(folder)
    assert [(i.rows, i.n_slices) for i in infos] == [(64, 35), (32, 5)]
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert [i.uid for i in infos] == [f"{uid}#1", f"{uid}#2"]
    _refused(folder, "mixes image sizes or orientations", series_uid=uid)
    vol = load_volume(folder, series_uid=f"{uid}#1")
    assert vol.shape == (64, 64, 40) and vol.source.extra["missing_slices"] == [3, 11, 19, 27, 35]
    assert len(vol.source.dropped_files) == 5
    assert any("missing" in w for w in vol.source.warnings)


def test_series_with_mixed_pixel_spacing_is_split(tmp_path):
    folder = tmp_path / "spacing"
    folder.mkdir()
    for n, f in enumerate(sorted(TOSHIBA.iterdir())):
        if n < 4:
            _rewritten(f, folder / f.name, lambda ds: setattr(ds, "PixelSpacing", [2.5, 2.5]))
        else:
            shutil.copy(f, folder / f.name)
    assert [i.n_slices for i in list_series(folder)] == [36, 4]
    vol = load_volume(folder)
    assert vol.shape == (64, 64, 36) and vol.spacing[:2] == pytest.approx((3.0, 3.0))
    assert any("2 series" in w for w in vol.source.warnings)


def test_single_image_series_is_2d(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(sorted(TOSHIBA.iterdir())[5], folder / "only.dcm")
    _refused(folder, "single slice")
    _refused(folder / "only.dcm", "single slice")


def test_truncated_dicom_pixels(tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    files = sorted(TOSHIBA.iterdir())
    for f in files:
        shutil.copy(f, folder / f.name)
    victim = folder / files[12].name
    victim.write_bytes(victim.read_bytes()[:-3000])
    vol = load_volume(folder)  # left out, named, its place kept blank
    assert [p for p, _why in vol.source.dropped_files] == [str(victim)]
    assert "cannot be decoded" in vol.source.dropped_files[0][1]
    assert any(victim.name in w for w in vol.source.warnings)


def test_non_finite_voxels(tmp_path):
    img = nib.load(str(PAT1 / "Flair_subtrMeanDivStd.nii.gz"))
    data = np.asanyarray(img.dataobj).copy()
    data[10, 20, 30:35] = np.nan
    data[100, 100, 100] = np.inf
    data[101, 100, 100] = -np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    vol = load_volume(path)  # opens; the voxels are kept as stored, the note says where
    assert np.array_equal(vol.data, data, equal_nan=True)
    assert [w for w in vol.source.warnings if "not finite" in w] == [
        "7 of 8928000 voxels (0.0%) are not finite (5 NaN, 1 +inf, 1 -inf), within voxels "
        "i 10..101, j 20..100, k 30..100: NaN and -inf are shown black like the background "
        "and given to the model as its darkest value, +inf as its brightest"]
    data[:] = np.nan  # nothing left to show: refused
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    _refused(path, "8928000 of 8928000 voxels are not finite")


def test_2d_nifti(tmp_path):
    img = nib.load(str(CT_NII))
    plane = np.asanyarray(img.dataobj)[:, :, 10]
    for name, arr in (("flat.nii.gz", plane), ("flat1.nii.gz", plane[:, :, None])):
        nib.save(nib.Nifti1Image(arr, img.affine), str(tmp_path / name))
        _refused(tmp_path / name, "a 2D image")


def _with_header(tmp_path, name, header, payload=b"\0" * 4096):
    path = tmp_path / name
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\0" * (int(header.get_data_offset()) - f.tell()))
        f.write(payload)
    return path


def test_absurd_header_dimensions(tmp_path):
    hdr = nib.load(str(CT_NII)).header.copy()
    hdr.set_data_shape((32767, 32767, 32767))
    hdr.set_data_offset(352)
    _refused(_with_header(tmp_path, "huge1.nii", hdr), "header dimensions 32767×32767×32767")
    hdr2 = nib.Nifti2Header.from_header(nib.load(str(CT_NII)).header)
    hdr2.set_data_shape((10**6, 10**6, 10**6))
    hdr2.set_data_offset(544)
    _refused(_with_header(tmp_path, "huge2.nii", hdr2), "header dimensions 1000000×")


def test_zero_size_dimension(tmp_path):
    hdr = nib.load(str(CT_NII)).header.copy()
    hdr.set_data_offset(352)
    hdr["dim"][3] = 0
    _refused(_with_header(tmp_path, "zero.nii", hdr), "zero-size dimension")


def test_bad_volume_index(tmp_path):
    _refused(CT_NII, "file is 3D", volume_index=2)
    _refused(TOSHIBA, "volume index 1 is outside 0..0", volume_index=1)


def test_bad_label_exports_leave_no_file(tmp_path):
    vol = load_volume(CT_NII)
    good = np.zeros(vol.shape, np.uint8)
    cases = [
        (np.zeros((3, 3, 3), np.uint8), tmp_path / "shape.nii.gz", "does not match"),
        (good - 1.0, tmp_path / "negative.nii.gz", "within 0..65535"),
        (good + 0.5, tmp_path / "fraction.nii.gz", "whole numbers"),
        (good, tmp_path / "labels.png", r"\.nii or \.nii\.gz"),
        (good, tmp_path / "missing_dir" / "l.nii.gz", "does not exist"),
    ]
    for labels, path, match in cases:
        with pytest.raises(MedsamError, match=match) as info:
            save_label_map(labels, vol, path)
        assert str(path) in str(info.value)
    assert os.listdir(tmp_path) == []


def test_invalid_orientation_or_spacing(tmp_path):
    def zero_iop(ds):
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]

    def zero_spacing(ds):
        ds.PixelSpacing = [0, 0]

    for name, fn, match in (("iop", zero_iop, "invalid ImageOrientationPatient"),
                            ("spacing", zero_spacing, "invalid PixelSpacing")):
        folder = tmp_path / name
        folder.mkdir()
        for f in sorted(TOSHIBA.iterdir())[:5]:
            _rewritten(f, folder / f.name, fn)
        _refused(folder, f"no DICOM image series found .*{match}")


def test_dicomdir_opens_its_folder(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(TOSHIBA, folder)

    def to_index(ds):
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
        ds.SOPClassUID = "1.2.840.10008.1.3.10"
        del ds.PixelData

    _rewritten(sorted(TOSHIBA.iterdir())[0], folder / "DICOMDIR", to_index)
    assert load_volume(folder / "DICOMDIR").shape == (64, 64, 40)


def test_misnamed_compression_and_unsupported_voxel_type(tmp_path):
    gz_as_nii = tmp_path / "ct.nii"
    shutil.copy(CT_NII, gz_as_nii)
    _refused(gz_as_nii, "gzip-compressed: rename it to .nii.gz")
    plain = _plain_nii(tmp_path)
    plain_as_gz = tmp_path / "plain.nii.gz"
    plain.rename(plain_as_gz)
    _refused(plain_as_gz, "not gzip-compressed: rename it to .nii$")
    cplx = tmp_path / "complex.nii"
    data = np.asanyarray(nib.load(str(CT_NII)).dataobj).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(cplx))
    _refused(cplx, "voxel type complex64")


def test_missing_orientation_is_a_warning_not_an_error(tmp_path):
    img = nib.load(str(CT_NII))
    bare = nib.Nifti1Image(np.asanyarray(img.dataobj), None)
    bare.header.set_zooms((3.0, 3.0, 3.0))
    path = tmp_path / "bare.nii.gz"
    nib.save(bare, str(path))
    vol = load_volume(path)
    assert vol.spacing == (3.0, 3.0, 3.0)
    assert any("no sform or qform" in w for w in vol.source.warnings)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_malformed_header_values(tmp_path):
    folder = tmp_path / "garbage"
    folder.mkdir()

    def bad_frames(ds):
        ds.add_new(0x00280008, "IS", None)  # NumberOfFrames
        ds[0x00280008]._value = ["x"]

    for f in sorted(TOSHIBA.iterdir())[:3]:
        _rewritten(f, folder / f.name, bad_frames)
    _refused(folder, r"no DICOM image series found \(3 unreadable header values\)")
