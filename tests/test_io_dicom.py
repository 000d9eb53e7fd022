"""DICOM series on the real data, checked against dcm2niix references and organ labels."""

from __future__ import annotations

import os
import random
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from conftest import DICOM

SAG = DICOM / "mr_brain_sag_t1_siemens_HFS"
TOSHIBA = DICOM / "mr_brain_ax30_dwi_b0_toshiba"
CT = DICOM / "ct_abdomen_siemens_jpeg2000"
REF = DICOM / "reference"
pytestmark = pytest.mark.needs_data

_cache = {}


def _load(path, **kw):
    key = (str(path), tuple(sorted(kw.items())))
    if key not in _cache:
        _cache[key] = load_volume(path, **kw)
    return _cache[key]


def _canonical(data, affine):
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return np.asanyarray(img.dataobj), img.affine


@pytest.mark.parametrize("series", [SAG, TOSHIBA], ids=["sag_siemens", "ax30_toshiba"])
def test_matches_dcm2niix_reference(series):
    vol = _load(series)
    ref = nib.load(str(REF / f"{series.name}_dcm2niix.nii.gz"))
    ours, our_aff = _canonical(vol.data, vol.affine)
    ref_c = nib.as_closest_canonical(ref)
    assert ours.shape == ref_c.shape
    assert np.abs(our_aff - ref_c.affine).max() < 1e-3
    assert np.array_equal(ours, ref_c.get_fdata())


def test_sagittal_file_names_not_in_slice_order():
    vol = _load(SAG)
    files = vol.source.extra["files"]
    assert files != sorted(files)  # sorted by position, and the names disagree
    assert sorted(files) == sorted(str(p) for p in SAG.iterdir())


def test_ct_jpeg2000_grid_hu_and_organs():
    vol = _load(CT)
    labels = nib.load(str(REF / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"))
    ours, our_aff = _canonical(vol.data, vol.affine)
    lab_c = nib.as_closest_canonical(labels)
    lab = np.asanyarray(lab_c.dataobj)
    assert ours.shape == lab.shape
    assert np.abs(our_aff - lab_c.affine).max() < 1e-3
    assert vol.data.dtype == np.int16
    assert int(vol.data.min()) == -1024 and int(vol.data.max()) == 1839
    assert ours[lab == 5].mean() == pytest.approx(89, abs=1.5)  # liver
    assert ours[lab == 1].mean() == pytest.approx(80, abs=1.5)  # spleen


def test_spacing_from_positions_not_slice_thickness():
    assert _load(SAG).spacing == pytest.approx((1.015625, 1.015625, 4.8), abs=1e-3)
    assert _load(CT).spacing == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-3)
    assert _load(TOSHIBA).spacing == pytest.approx((3.0, 3.0, 3.0), abs=1e-3)
    assert float(pydicom.dcmread(next(SAG.iterdir()), stop_before_pixels=True).SliceThickness) == 4


def test_window_preset_modality_and_voxel_order():
    for series, modality in ((SAG, "MR"), (TOSHIBA, "MR"), (CT, "CT")):
        vol = _load(series)
        first = pydicom.dcmread(vol.source.extra["files"][0])
        wc, ww = first.WindowCenter, first.WindowWidth
        wc = wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc
        ww = ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww
        assert vol.source.window_preset == (float(wc), float(ww))
        assert vol.modality == modality and vol.source.kind == "dicom"
        # data[i, j, k] = column i, row j of sorted slice k
        rescaled = first.pixel_array.astype(np.int64) * int(first.get("RescaleSlope", 1)) + int(
            first.get("RescaleIntercept", 0))
        assert np.array_equal(vol.data[:, :, 0], rescaled.T)
        assert vol.source.warnings == []
    assert _load(CT).source.window_preset == (40.0, 300.0)


def test_single_file_opens_its_series():
    one = sorted(SAG.iterdir())[7]
    vol = load_volume(one)
    assert np.array_equal(vol.data, _load(SAG).data)
    assert np.array_equal(vol.affine, _load(SAG).affine)


def test_list_series_and_choice_in_a_folder_of_several(tmp_path):
    infos = list_series(DICOM)
    assert [(i.rows, i.cols, i.n_slices, i.modality) for i in infos] == [
        (64, 64, 40, "MR"), (256, 256, 35, "MR"), (512, 512, 20, "CT")]
    assert len(infos[1].files) == 35
    largest = _load(DICOM)
    assert largest.shape == (64, 64, 40)
    assert any("3 series" in w for w in largest.source.warnings)
    sag = load_volume(DICOM, series_uid=infos[1].uid)
    assert np.array_equal(sag.data, _load(SAG).data)
    assert sag.source.series_uid == infos[1].uid
    with pytest.raises(MedsamError, match="no series with UID 1.2.3"):
        load_volume(DICOM, series_uid="1.2.3")


def _copy(series, dst, names=None):
    dst.mkdir()
    files = sorted(series.iterdir())
    for n, f in enumerate(files):
        shutil.copy(f, dst / (names[n] if names else f.name))
    return sorted(dst.iterdir())


def test_shuffled_file_names_give_the_same_volume(tmp_path):
    names = [f"img{n:03d}" for n in range(35)]
    random.Random(3).shuffle(names)
    _copy(SAG, tmp_path / "s", names)
    vol = load_volume(tmp_path / "s")
    assert np.array_equal(vol.data, _load(SAG).data)
    assert np.allclose(vol.affine, _load(SAG).affine)


def test_missing_slice_warned(tmp_path):
    files = _copy(SAG, tmp_path / "s")
    order = _load(SAG).source.extra["files"]
    (tmp_path / "s" / order[17].split("/")[-1]).unlink()
    vol = load_volume(tmp_path / "s")  # the gap stays, blank: every slice keeps its place
    assert vol.shape[2] == 35 and len(files) == 35 and vol.source.extra["missing_slices"] == [17]
    assert np.array_equal(vol.affine, _load(SAG).affine)
    assert any("missing" in w for w in vol.source.warnings)


def _edit(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def test_uneven_spacing_and_gantry_tilt_warned(tmp_path):
    files = _copy(TOSHIBA, tmp_path / "u")
    def nudge(ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 0.6]

    _edit(files[10], nudge)
    vol = load_volume(tmp_path / "u")
    assert any("uneven" in w for w in vol.source.warnings)

    files = _copy(CT, tmp_path / "t")
    for f in files:  # shift each slice along y in proportion to z: a 10° tilt
        def tilt(ds):
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + np.tan(np.radians(10)) * z, z]
        _edit(f, tilt)
    vol = load_volume(tmp_path / "t")
    assert any("tilt" in w and "10.0°" in w for w in vol.source.warnings)
    assert np.array_equal(vol.data, _load(CT).data)  # no resampling


def test_rescale_slope_gives_float_values(tmp_path):
    files = _copy(TOSHIBA, tmp_path / "r")
    for f in files:
        def scale(ds):
            ds.RescaleSlope, ds.RescaleIntercept = 0.25, 3
        _edit(f, scale)
    vol = load_volume(tmp_path / "r")
    assert vol.data.dtype == np.float32
    assert np.allclose(vol.data, _load(TOSHIBA).data * 0.25 + 3)


def test_repeated_positions_are_volumes(tmp_path):
    files = _copy(TOSHIBA, tmp_path / "v")
    for n, f in enumerate(files):
        def second(ds):
            ds.InstanceNumber = int(ds.InstanceNumber) + 40
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
        ds = pydicom.dcmread(f)
        second(ds)
        ds.save_as(tmp_path / "v" / f"b{n:03d}.dcm")
    first = load_volume(tmp_path / "v")
    assert np.array_equal(first.data, _load(TOSHIBA).data)
    assert any("2 volumes" in w for w in first.source.warnings)
    other = load_volume(tmp_path / "v", volume_index=1)
    assert np.array_equal(other.data, _load(TOSHIBA).data // 2)
    assert list_series(tmp_path / "v")[0].n_slices == 40


@pytest.mark.parametrize("syntax", [pydicom.uid.ImplicitVRLittleEndian,
                                    pydicom.uid.DeflatedExplicitVRLittleEndian],
                         ids=["implicit_vr", "deflated"])
def test_other_transfer_syntaxes_give_the_same_volume(tmp_path, syntax):
    """Implicit VR takes the pixel-offset path; deflated files take the full-read fallback."""
    folder = tmp_path / "ts"
    folder.mkdir()
    for f in sorted(TOSHIBA.iterdir()):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(folder / f.name, implicit_vr=syntax.is_implicit_VR, little_endian=True)
    vol = load_volume(folder)
    assert np.array_equal(vol.data, _load(TOSHIBA).data)
    assert np.allclose(vol.affine, _load(TOSHIBA).affine)


def test_file_without_pixels_inside_a_series_is_skipped(tmp_path):
    files = _copy(SAG, tmp_path / "s")
    order = _load(SAG).source.extra["files"]
    victim = tmp_path / "s" / order[20].split("/")[-1]
    _edit(victim, lambda ds: delattr(ds, "PixelData"))
    assert len(files) == 35 and list_series(tmp_path / "s")[0].n_slices == 34
    vol = load_volume(tmp_path / "s")
    assert vol.shape[2] == 35 and str(victim) not in vol.source.extra["files"]
    assert (str(victim), "no pixel data") in vol.source.dropped_files
    assert any("missing" in w for w in vol.source.warnings)


@pytest.mark.parametrize("series", [SAG, TOSHIBA, CT], ids=lambda p: p.name)
def test_pixel_pass_reuses_discovery_offsets(series, monkeypatch):
    """Pixels are read from the offsets found by discovery: no second full header parse."""
    real = pydicom.dcmread
    full_reads = []

    def counting(*args, **kwargs):
        if not kwargs.get("stop_before_pixels"):
            full_reads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    vol = load_volume(series)
    assert full_reads == []
    assert np.array_equal(vol.data, _load(series).data)


def test_axial_ct_displays_as_the_scanner_stored_it():
    """An axial LPS-stored CT (the usual case) shows each DICOM image as it is stored:
    patient right on screen left, anterior up."""
    vol = _load(CT)
    for k in (0, 9, 19):
        ds = pydicom.dcmread(vol.source.extra["files"][k])
        hu = ds.pixel_array.astype(np.int64) + int(ds.RescaleIntercept)
        assert np.array_equal(vol.slice("axial", k), hu)
    assert vol.geometry("axial").edge_letters[2:] == ("R", "L")


def test_listing_then_loading_reads_headers_once(tmp_path, monkeypatch):
    import medsam_gui.io.dicom_scan as scan

    folder = tmp_path / "s"
    files = _copy(TOSHIBA, folder)
    calls = []
    real = scan.read_header
    monkeypatch.setattr(scan, "read_header", lambda f: calls.append(f) or real(f))
    list_series(folder)
    load_volume(folder)
    assert len(calls) == 40
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the folder changed
    load_volume(folder)
    assert len(calls) == 80
