"""What scanners write besides classic one-file-per-slice series: enhanced multi-frame images,
Siemens mosaics and GE reverse-polarity EPI, each checked against the classic series of the
real data it was built from (voxels equal, affine within 0.01 mm), and against the real vendor
examples nibabel ships in its wheel (a Siemens DWI mosaic, with nibabel's own reading)."""

from __future__ import annotations

import copy
import gzip
import math
import shutil
import struct
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from conftest import DICOM

SAG = DICOM / "mr_brain_sag_t1_siemens_HFS"
TOSHIBA = DICOM / "mr_brain_ax30_dwi_b0_toshiba"
CT = DICOM / "ct_abdomen_siemens_jpeg2000"
NICOM_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
pytestmark = pytest.mark.needs_data

_classic = {}


def classic(series: Path):
    if series not in _classic:
        _classic[series] = load_volume(series)
    return _classic[series]


def classic_datasets(series: Path, files=None):
    """The series' files, decompressed, with the SOP UIDs the data set may have blanked."""
    out = []
    for f in files or sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        for keyword, meta in (("SOPClassUID", "MediaStorageSOPClassUID"),
                              ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(keyword, "") or ""):
                setattr(ds, keyword, getattr(ds.file_meta, meta))
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        out.append(ds)
    return out


def enhanced(series: Path, files=None) -> hd.SOPClass:
    """The series converted to a legacy-converted enhanced CT/MR image (highdicom)."""
    dss = classic_datasets(series, files)
    cls = LegacyConvertedEnhancedCTImage if dss[0].Modality == "CT" else \
        LegacyConvertedEnhancedMRImage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # person names copied as they are
        return cls(dss, series_instance_uid=dss[0].SeriesInstanceUID, series_number=1,
                   sop_instance_uid=generate_uid(), instance_number=1)


@pytest.fixture(scope="module")
def enhanced_files(tmp_path_factory):
    out = {}
    for series in (SAG, TOSHIBA, CT):
        folder = tmp_path_factory.mktemp(f"enh_{series.name}")
        enhanced(series).save_as(str(folder / "enhanced.dcm"))
        out[series] = folder / "enhanced.dcm"
    return out


def assert_same_volume(vol, ref, tol=0.01):
    assert vol.shape == ref.shape
    assert np.abs(vol.affine - ref.affine).max() <= tol
    assert vol.data.dtype == ref.data.dtype
    assert np.array_equal(vol.data, ref.data)


# ---- enhanced multi-frame ---------------------------------------------------------------------
@pytest.mark.parametrize("series", [SAG, TOSHIBA, CT], ids=["sag_mr", "ax30_mr", "ct_j2k"])
def test_enhanced_image_equals_its_classic_series(series, enhanced_files):
    path = enhanced_files[series]
    assert int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames) > 1
    vol = load_volume(path.parent)
    assert_same_volume(vol, classic(series))
    assert vol.source.warnings == []
    assert vol.source.extra["files"] == [str(path)] * vol.shape[2]
    assert sorted(vol.source.extra["frames"]) == list(range(1, vol.shape[2] + 1))
    assert vol.source.window_preset == classic(series).source.window_preset
    [info] = list_series(path.parent)
    assert info.n_slices == vol.shape[2]
    assert load_volume(path).shape == vol.shape  # the file itself opens too


def test_enhanced_affine_agrees_with_highdicoms_volume(enhanced_files):
    """An independent reader of the functional groups gives the same grid and HU."""
    path = enhanced_files[CT]
    hv = hd.imread(str(path)).get_volume()  # LPS, axes (frame, row, column)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(hv.affine)[:, [2, 1, 0, 3]]
    theirs = nib.as_closest_canonical(nib.Nifti1Image(np.transpose(hv.array, (2, 1, 0)), ras))
    vol = load_volume(path.parent)
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.data, vol.affine))
    assert np.abs(ours.affine - theirs.affine).max() <= 0.01
    assert np.array_equal(np.asanyarray(ours.dataobj), np.asarray(theirs.dataobj))


def test_two_enhanced_files_and_a_classic_part_make_one_series(tmp_path):
    files = sorted(SAG.iterdir())
    ref = classic(SAG)
    order = ref.source.extra["files"]  # slice order
    first, second, rest = order[:12], order[12:24], order[24:]
    enhanced(SAG, [Path(f) for f in first]).save_as(str(tmp_path / "part1.dcm"))
    enhanced(SAG, [Path(f) for f in second]).save_as(str(tmp_path / "part2.dcm"))
    for f in rest:
        shutil.copy(f, tmp_path / Path(f).name)
    assert len(files) == 35
    [info] = list_series(tmp_path)
    assert info.n_slices == 35
    vol = load_volume(tmp_path)
    assert_same_volume(vol, ref)
    kinds = vol.source.extra["frames"]
    assert sorted(kinds[:12]) == sorted(kinds[12:24]) == list(range(1, 13))
    assert kinds[24:] == [None] * 11
    assert vol.source.extra["files"][:24] == [str(tmp_path / "part1.dcm")] * 12 + [
        str(tmp_path / "part2.dcm")] * 12


def _doubled(ds: pydicom.Dataset, second: np.ndarray) -> pydicom.Dataset:
    """An enhanced image holding two volumes at the same positions (temporal index 1, 2)."""
    out = copy.deepcopy(ds)
    n = int(ds.NumberOfFrames)
    items = []
    for t in (1, 2):
        for item in ds.PerFrameFunctionalGroupsSequence:
            item = copy.deepcopy(item)
            item.FrameContentSequence[0].TemporalPositionIndex = t
            items.append(item)
    out.PerFrameFunctionalGroupsSequence = items
    out.NumberOfFrames = 2 * n
    first = ds.pixel_array.reshape(n, ds.Rows, ds.Columns)
    out.PixelData = np.concatenate([first, second.astype(first.dtype)]).tobytes()
    return out


def test_enhanced_4d_shows_the_first_volume_with_the_classic_warning(tmp_path, enhanced_files):
    ds = pydicom.dcmread(enhanced_files[TOSHIBA])
    first = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    _doubled(ds, first // 2).save_as(str(tmp_path / "4d.dcm"))
    ref = classic(TOSHIBA)
    vol = load_volume(tmp_path)
    assert_same_volume(vol, ref)
    assert any("2 volumes at the same positions; showing volume 0" in w
               for w in vol.source.warnings)
    second = load_volume(tmp_path, volume_index=1)
    assert np.array_equal(second.data, ref.data // 2)
    assert np.abs(second.affine - ref.affine).max() <= 0.01


def test_real_world_value_mapping_rescales_when_no_pixel_transformation(tmp_path,
                                                                         enhanced_files):
    ds = pydicom.dcmread(enhanced_files[SAG])
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    rwv = pydicom.Dataset()
    rwv.RealWorldValueSlope, rwv.RealWorldValueIntercept = 0.5, 10.0
    rwv.RealWorldValueFirstValueMapped, rwv.RealWorldValueLastValueMapped = 0, 65535
    rwv.LUTLabel, rwv.LUTExplanation = "T1", "test"
    ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence = [rwv]
    ds.save_as(str(tmp_path / "rwvm.dcm"))
    vol = load_volume(tmp_path)
    assert vol.data.dtype == np.float32
    assert np.allclose(vol.data, classic(SAG).data * 0.5 + 10.0)
    assert any("Real World Value Mapping" in w for w in vol.source.warnings)


def test_enhanced_frame_without_position_is_named(tmp_path, enhanced_files):
    ds = pydicom.dcmread(enhanced_files[TOSHIBA])
    del ds.PerFrameFunctionalGroupsSequence[7].PlanePositionSequence
    ds.save_as(str(tmp_path / "hole.dcm"))
    vol = load_volume(tmp_path)
    assert vol.shape == classic(TOSHIBA).shape  # the gap keeps every other slice in place
    assert len(vol.source.extra["missing_slices"]) == 1
    text = " ".join(vol.source.warnings)
    assert "hole.dcm (1 of its 40 frames: no usable ImagePositionPatient)" in text


# ---- Siemens mosaic ---------------------------------------------------------------------------
def csa2(tags) -> bytes:
    """A Siemens CSA2 header ('SV10') holding ``tags``: [(name, vr, [values])]."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, vr, values in tags:
        out.append(struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0,
                               len(values), 77))
        for v in values:
            data = (str(v) + "\0").encode()
            out.append(struct.pack("<4i", len(data), len(data), 77, len(data)))
            out.append(data + b"\0" * (-len(data) % 4))
    return b"".join(out)


def mosaic_of(series: Path, descending: bool = False) -> pydicom.Dataset:
    """The classic series tiled into one Siemens mosaic with a CSA header, placed as Siemens
    places it (ImagePositionPatient of the whole mosaic's corner)."""
    ref = classic(series)
    dss = {ds.SOPInstanceUID: ds for ds in classic_datasets(series)}
    by_file = {str(f): pydicom.dcmread(f, stop_before_pixels=True) for f in series.iterdir()}
    ordered = [dss[by_file[f].SOPInstanceUID] for f in ref.source.extra["files"]]
    if descending:
        ordered = ordered[::-1]
    n, rows, cols = len(ordered), ordered[0].Rows, ordered[0].Columns
    side = math.ceil(math.sqrt(n))
    mosaic = np.zeros((side * rows, side * cols), ordered[0].pixel_array.dtype)
    for k, ds in enumerate(ordered):
        r, c = divmod(k, side)
        mosaic[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = ds.pixel_array
    out = copy.deepcopy(ordered[0])
    iop = np.array([float(v) for v in out.ImageOrientationPatient])
    ps = [float(v) for v in out.PixelSpacing]
    normal = np.cross(iop[:3], iop[3:]) * (-1 if descending else 1)
    shift = ((side - 1) * rows / 2, (side - 1) * cols / 2)  # undo nibabel's correction
    first = np.array([float(v) for v in out.ImagePositionPatient])
    out.ImagePositionPatient = list(first - iop[3:] * ps[0] * shift[0]
                                    - iop[:3] * ps[1] * shift[1])
    out.Rows, out.Columns = mosaic.shape
    out.PixelData = mosaic.tobytes()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    out.Manufacturer = "SIEMENS"
    gap = np.linalg.norm(ref.affine[:3, 2])
    out.SpacingBetweenSlices = f"{gap:.6f}"
    block = out.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", csa2([("NumberOfImagesInMosaic", "US", [n]),
                                    ("AcquisitionMatrixText", "SH", [f"{rows}p*{cols}"]),
                                    ("SliceNormalVector", "FD", [f"{v:.8f}" for v in normal])]))
    out.SOPInstanceUID = generate_uid()
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_mosaic_equals_its_classic_series(tmp_path, descending):
    ds = mosaic_of(TOSHIBA, descending)
    ds.save_as(str(tmp_path / "mosaic.dcm"))
    assert (ds.Rows, ds.Columns) == (448, 448)  # 40 slices of 64² on a 7×7 grid
    vol = load_volume(tmp_path)
    assert_same_volume(vol, classic(TOSHIBA))
    assert vol.source.extra["mosaic"] and vol.source.warnings == []
    [info] = list_series(tmp_path / "mosaic.dcm")
    assert (info.rows, info.cols, info.n_slices) == (64, 64, 40)


def test_mosaic_series_of_several_volumes_opens_the_first(tmp_path):
    one = mosaic_of(TOSHIBA)
    two = copy.deepcopy(one)
    two.PixelData = (one.pixel_array // 3).tobytes()
    two.InstanceNumber = int(one.InstanceNumber) + 1
    two.SOPInstanceUID = generate_uid()
    one.save_as(str(tmp_path / "v1.dcm"))
    two.save_as(str(tmp_path / "v2.dcm"))
    vol = load_volume(tmp_path)
    assert_same_volume(vol, classic(TOSHIBA))
    assert any("2 volumes" in w for w in vol.source.warnings)
    assert np.array_equal(load_volume(tmp_path, volume_index=1).data, classic(TOSHIBA).data // 3)


def test_real_siemens_dwi_mosaic_matches_nibabel(tmp_path):
    """A real Siemens DWI mosaic shipped in nibabel's wheel (nicom/tests/data)."""
    from nibabel.nicom import dicomwrappers

    (tmp_path / "dwi.dcm").write_bytes(gzip.open(NICOM_DATA / "siemens_dwi_1000.dcm.gz").read())
    vol = load_volume(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_file(str(tmp_path / "dwi.dcm"))
        data = wrapper.get_data()  # (row, column, slice)
    assert vol.shape == (128, 128, 48)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper.affine[:, [1, 0, 2, 3]]
    assert np.abs(vol.affine - expected).max() <= 0.01
    assert np.array_equal(vol.data, np.transpose(data, (1, 0, 2)))


def test_mosaic_that_does_not_divide_is_named(tmp_path):
    ds = mosaic_of(TOSHIBA)
    pixels = ds.pixel_array[:447, :]
    ds.Rows, ds.PixelData = 447, np.ascontiguousarray(pixels).tobytes()
    ds.save_as(str(tmp_path / "odd.dcm"))
    with pytest.raises(MedsamError, match=r"Siemens mosaic of 40 images: 448×447 does not "
                                          r"divide into 7×7 tiles"):
        load_volume(tmp_path / "odd.dcm")


# ---- GE reverse polarity ----------------------------------------------------------------------
def _ge(tmp_path, user_data: str):
    folder = tmp_path / f"ge{user_data}"
    folder.mkdir()
    for f in sorted(TOSHIBA.iterdir()):
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        block.add_new(0x9C, "LO", "epi_pepolar")
        block.add_new(0xB3, "DS", user_data)
        ds.save_as(str(folder / f.name))
    return folder


def test_ge_reverse_polarity_rows_are_flipped_as_dcm2niix_does(tmp_path):
    ref = classic(TOSHIBA)
    vol = load_volume(_ge(tmp_path, "1"))
    assert np.array_equal(vol.data, ref.data[:, ::-1, :])
    assert np.abs(vol.affine - ref.affine).max() <= 0.01
    assert any("reverse phase-encoding polarity" in w for w in vol.source.warnings)
    forward_first = load_volume(_ge(tmp_path, "3"))  # forward, then reverse: volume 0 as is
    assert np.array_equal(forward_first.data, ref.data)
    assert not any("polarity" in w for w in forward_first.source.warnings)


def _uih(folder: Path, files, position_in=("private",), grid: int = 0) -> Path:
    """United Imaging storage of a real series: no top-level ImagePositionPatient; the
    position in the private MRVFrameSequence (0065,xx51) of the "Image Private Header" block,
    where UIH keeps it and dcm2niix reads it (or nowhere); ``grid``: NumberOfImagesInGrid."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    folder.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "UIH"
        item = Dataset()
        item.ImagePositionPatient = ds.ImagePositionPatient
        del ds.ImagePositionPatient
        block = ds.private_block(0x0065, "Image Private Header", create=True)
        if grid:
            block.add_new(0x50, "DS", str(grid))
        if "private" in position_in:
            block.add_new(0x51, "SQ", Sequence([item]))
        ds.save_as(str(folder / f.name))
    return folder


def test_united_imaging_position_in_its_private_sequence_is_read_as_dcm2niix_does(tmp_path):
    ref = classic(TOSHIBA)
    vol = load_volume(_uih(tmp_path / "uih", sorted(TOSHIBA.iterdir())))
    assert_same_volume(vol, ref)
    assert any("private MRVFrameSequence (0065,xx51), as dcm2niix does" in w
               for w in vol.source.warnings)
    # a SEG of it references its slices and reads back equal
    from medsam_gui.annotation.exporting import segments_of
    from medsam_gui.io.dicom_seg import read_seg, write_seg
    from test_dicom_validation import shapes

    lm = shapes(vol)
    write_seg(lm.array, segments_of(lm), vol, tmp_path / "uih.seg.dcm")
    assert np.array_equal(read_seg(tmp_path / "uih.seg.dcm", vol).array, lm.array)


def test_united_imaging_without_any_position_or_as_a_grid_is_refused_saying_what(tmp_path):
    files = sorted(TOSHIBA.iterdir())[:3]
    with pytest.raises(MedsamError, match=r"3 no usable ImagePositionPatient \(a United "
                                          r"Imaging image whose position is neither in "
                                          r"ImagePositionPatient nor in its private "
                                          r"MRVFrameSequence"):
        load_volume(_uih(tmp_path / "none", files, position_in=()))
    with pytest.raises(MedsamError, match=r"a United Imaging grid image: 4 slices tiled in one "
                                          r"image.*not supported"):
        load_volume(_uih(tmp_path / "grid", files, grid=4))


def test_copy_of_an_enhanced_file_is_named_once_as_a_duplicate(tmp_path, enhanced_files):
    shutil.copy(enhanced_files[TOSHIBA], tmp_path / "a.dcm")
    shutil.copy(enhanced_files[TOSHIBA], tmp_path / "b.dcm")
    vol = load_volume(tmp_path)
    assert_same_volume(vol, classic(TOSHIBA))
    assert vol.source.dropped_files == [
        (str(tmp_path / "b.dcm"), "exact duplicate of a.dcm (same SOPInstanceUID and pixel data)")]
    [info] = list_series(tmp_path)
    assert info.files == [str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")]


def test_real_philips_enhanced_mprage_matches_nibabel(tmp_path):
    """A real Philips enhanced MR (176 frames, pixel data blanked by its publisher) shipped
    in nibabel's wheel: the same grid as nibabel's multi-frame wrapper gives it."""
    from nibabel.nicom import dicomwrappers

    path = tmp_path / "mprage.dcm"
    path.write_bytes(gzip.open(NICOM_DATA / "philips_mprage.dcm.gz").read())
    vol = load_volume(tmp_path)
    assert vol.shape == (256, 256, 176)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_file(str(path))
        theirs_data = wrapper.get_data()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper.affine[:, [1, 0, 2, 3]]
    theirs = nib.as_closest_canonical(nib.Nifti1Image(np.transpose(theirs_data, (1, 0, 2)),
                                                      ras))
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.data, vol.affine))
    assert np.abs(ours.affine - theirs.affine).max() <= 0.01
    assert np.allclose(np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj))


def test_enhanced_file_with_two_orientations_opens_the_larger_and_names_the_rest(
        tmp_path, enhanced_files):
    ds = pydicom.dcmread(enhanced_files[TOSHIBA])
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence
    del shared.PlaneOrientationSequence
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.PlaneOrientationSequence = copy.deepcopy(orientation)
        if k >= 30:  # a 10-frame localiser in another plane
            item.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(str(tmp_path / "two.dcm"))
    vol = load_volume(tmp_path)
    assert vol.shape == (64, 64, 30)
    full = load_volume(enhanced_files[TOSHIBA].parent)
    kept = [k for k, f in enumerate(full.source.extra["frames"]) if f <= 30]
    assert sorted(vol.source.extra["frames"]) == list(range(1, 31))
    assert np.array_equal(vol.data, full.data[:, :, kept])
    assert vol.source.dropped_files == [(
        str(tmp_path / "two.dcm"), "10 of its frames: another ImageOrientationPatient than the "
        f"rest of the series (series part {ds.SeriesInstanceUID}#2)")]
