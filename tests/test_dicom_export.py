"""DICOM SEG and RT Structure Set out, on the three real DICOM series, checked by re-reading.

Each series is segmented with the real model (boxes on three slices of its acquisition plane),
exported, and the file is read back here independently of the writer: SEG frames are matched to
source files by their SOP instance references and plane positions with pydicom, and RT contours
are rasterised again with this file's own geometry (pixel centres inside, even-odd rule).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from skimage import draw, filters, measure

from medsam_gui.annotation.labels import Label, LabelMap, LabelTable, SliceRecord
from medsam_gui.engine.evaluate import dice, mask_box
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume
from medsam_gui.annotation.exporting import export_labels
from medsam_gui.io.formats import format_for
from medsam_gui.volume import view_for_axis
from conftest import DICOM, PAT1

pytestmark = pytest.mark.needs_data

CT = DICOM / "ct_abdomen_siemens_jpeg2000"
SERIES = [CT, DICOM / "mr_brain_sag_t1_siemens_HFS", DICOM / "mr_brain_ax30_dwi_b0_toshiba"]
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
LIVER, SPLEEN = 5, 1  # TotalSegmentator ids


@pytest.fixture(scope="module")
def backend():
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam", device="cpu")


def ct_reference(volume) -> np.ndarray:
    """The CT's reference organ labels on the volume grid, by the affines checked here."""
    import nibabel as nib

    ref = nib.load(str(CT_LABELS))
    # the reference stores the same grid with the row axis (j) reversed
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = volume.shape[1] - 1
    assert np.allclose(ref.affine @ flip, volume.affine, atol=1e-3)
    return np.asarray(ref.dataobj)[:, ::-1, :].astype(np.uint16)


def bright_object_box(plane: np.ndarray):
    """Box around the largest bright component of a slice (the head on the MR series)."""
    mask = plane > filters.threshold_otsu(plane)
    lab = measure.label(mask)
    biggest = max(measure.regionprops(lab), key=lambda r: r.area)
    return mask_box(lab == biggest.label, pad=2)


def segment(volume, backend) -> LabelMap:
    """Model masks for boxes on three slices of the acquisition plane, with model records."""
    from medsam_gui.engine.session import Session

    session = Session(volume, backend)
    geom = view_for_axis(volume.affine, volume.shape, 2)
    lm = LabelMap(volume.shape, LabelTable([Label(1, "liver", (221, 130, 101)),
                                            Label(2, "spleen", (157, 108, 162))]))
    if volume.modality == "CT":
        truth = ct_reference(volume)
        targets = [(1, truth == LIVER), (2, truth == SPLEEN)]
    else:
        lm.table.labels = [Label(1, "brain", (250, 250, 225))]
        targets = [(1, None)]
    for value, truth3d in targets:
        if truth3d is not None:
            areas = [int(geom.take(truth3d, k).sum()) for k in range(geom.n_slices)]
            middle = int(np.argmax(areas))
        else:
            middle = geom.n_slices // 2
        for k in (middle - 2, middle, middle + 2):
            plane = volume.slice(geom.view, k)
            box = (mask_box(geom.take(truth3d, k)) if truth3d is not None
                   else bright_object_box(plane.astype(np.float32)))
            pred = session.predict(geom.view, k, box)
            rec = SliceRecord(geom.view, k, value, boxes=[list(box)], model=backend.name,
                              weights_sha256=backend.weights_sha256)
            lm.paint(geom, k, pred.mask, value, mode="add", record=rec)
    assert lm.array.any()
    return lm


@pytest.fixture(scope="module", params=SERIES, ids=lambda p: p.name)
def segmented(request, backend):
    volume = load_volume(request.param)
    return volume, segment(volume, backend)


def source_headers(volume):
    """SOP instance UID (file meta, as the anonymised CT blanks the data set's) -> (k, header)."""
    out = {}
    for k, f in enumerate(volume.source.extra["files"]):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.file_meta.MediaStorageSOPInstanceUID)] = (k, ds)
    return out


def test_seg_frames_reference_their_source_slices_and_hold_the_label_map(segmented, tmp_path):
    volume, lm = segmented
    result = export_labels(lm, volume, tmp_path / "labels.seg.dcm")
    ds = pydicom.dcmread(str(result.path))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.SegmentationType == "BINARY"
    headers = source_headers(volume)
    assert ds.FrameOfReferenceUID == next(iter(headers.values()))[1].FrameOfReferenceUID
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    names = {lab.value: lab.name for lab in lm.table.labels}
    present = [int(v) for v in np.unique(lm.array) if v]
    assert [str(segments[n].SegmentLabel) for n in sorted(segments)] == [names[v] for v in present]
    for s in segments.values():
        assert s.SegmentAlgorithmType == "SEMIAUTOMATIC"  # boxes answered by the model
        assert len(s.RecommendedDisplayCIELabValue) == 3
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    rebuilt = np.zeros(lm.shape, np.uint16)
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        k, header = headers[str(src.ReferencedSOPInstanceUID)]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in header.ImagePositionPatient], atol=1e-4)
        ident = item if "SegmentIdentificationSequence" in item else \
            ds.SharedFunctionalGroupsSequence[0]  # one segment: shared by every frame
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        rebuilt[:, :, k][frames[f].T > 0] = present[number - 1]
    assert np.array_equal(rebuilt, lm.array)


@pytest.mark.parametrize("segmented", [CT], ids=[CT.name], indirect=True)
def test_seg_of_the_ct_keeps_the_model_organs_close_to_the_reference(segmented, tmp_path):
    volume, lm = segmented
    from medsam_gui.io.dicom_seg import read_seg

    result = export_labels(lm, volume, tmp_path / "organs.seg.dcm")
    back = read_seg(result.path, volume)
    truth = ct_reference(volume)
    geom = view_for_axis(volume.affine, volume.shape, 2)
    for number, value, organ in ((1, 1, LIVER), (2, 2, SPLEEN)):
        slices = sorted({r.index for r in lm.records.values() if r.label == value})
        got = np.stack([geom.take(back.array, k) == number for k in slices])
        want = np.stack([geom.take(truth, k) == organ for k in slices])
        assert dice(got, want) > 0.9
    assert back.names == {1: "liver", 2: "spleen"}
    assert back.colors[1] == pytest.approx((221, 130, 101), abs=2)


def _rasterise_contours(ds, headers, shape3d):
    masks = {}
    for rc in ds.ROIContourSequence:
        mask = np.zeros(shape3d, bool)
        for item in rc.ContourSequence:
            assert item.ContourGeometricType == "CLOSED_PLANAR"
            k, h = headers[str(item.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            xyz = np.asarray(item.ContourData, float).reshape(-1, 3)
            assert len(xyz) == int(item.NumberOfContourPoints)
            iop = np.asarray(h.ImageOrientationPatient, float)
            ipp = np.asarray(h.ImagePositionPatient, float)
            row_sp, col_sp = (float(v) for v in h.PixelSpacing)
            d = xyz - ipp
            assert np.abs(d @ np.cross(iop[:3], iop[3:])).max() < 1e-3  # in the image plane
            cols, rows = d @ iop[:3] / col_sp, d @ iop[3:] / row_sp
            rr, cc = draw.polygon(rows, cols, (shape3d[1], shape3d[0]))
            plane = np.zeros((shape3d[1], shape3d[0]), bool)
            plane[rr, cc] = True
            mask[:, :, k] ^= plane.T
        masks[int(rc.ReferencedROINumber)] = mask
    return masks


def test_rtstruct_contours_rasterise_back_to_the_label_map(segmented, tmp_path):
    volume, lm = segmented
    result = export_labels(lm, volume, tmp_path / "labels.rtstruct.dcm")
    ds = pydicom.dcmread(str(result.path))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    headers = source_headers(volume)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == next(iter(headers.values()))[1].FrameOfReferenceUID
    images = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence
    assert {str(i.ReferencedSOPInstanceUID) for i in images} == set(headers)
    masks = _rasterise_contours(ds, headers, lm.shape)
    present = [int(v) for v in np.unique(lm.array) if v]
    rois = {int(r.ROINumber): r for r in ds.StructureSetROISequence}
    for number, value in enumerate(present, 1):
        want = lm.array == value
        assert str(rois[number].ROIName) == lm.table.get(value).name
        assert rois[number].ROIGenerationAlgorithm == "SEMIAUTOMATIC"
        differ = np.count_nonzero(masks[number] != want) / want.sum()
        assert differ <= 0.01, f"ROI {number}: {differ:.2%} of its voxels differ"
    colors = {int(rc.ReferencedROINumber): [int(c) for c in rc.ROIDisplayColor]
              for rc in ds.ROIContourSequence}
    assert colors[1] == list(lm.table.get(present[0]).color)


def test_nifti_scan_offers_nifti_only_and_says_why(tmp_path):
    volume = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    lm = LabelMap(volume.shape)
    lm.array[100:110, 100:110, 70] = 1
    for name in ("x.seg.dcm", "x.rtstruct.dcm"):
        with pytest.raises(MedsamError, match="opened from a NIfTI file.*export it as NIfTI"):
            export_labels(lm, volume, tmp_path / name)
        assert not (tmp_path / name).exists()
    out = export_labels(lm, volume, tmp_path / "x.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ctbl", "x.itksnap.txt", "x.json",
                                                         "x.nii.gz"]
    assert "x.itksnap.txt" in out.notes[0]


def test_format_follows_the_name_unless_named(tmp_path):
    assert format_for("a.nii.gz") == "nifti" and format_for("a.seg.dcm") == "seg"
    assert format_for("a.rtstruct.dcm") == "rtstruct" and format_for("a.dcm", "rtstruct")
    with pytest.raises(MedsamError, match="cannot tell the format"):
        format_for(tmp_path / "a.dcm")
    with pytest.raises(MedsamError, match="not written to a file named like this"):
        format_for(tmp_path / "a.nii.gz", "seg")
    with pytest.raises(MedsamError, match="not written to a file named like this"):
        format_for(tmp_path / "a.seg.dcm", "rtstruct")


def test_empty_label_map_and_bad_target_write_nothing(tmp_path):
    volume = load_volume(CT)
    lm = LabelMap(volume.shape)
    with pytest.raises(MedsamError, match="empty"):
        export_labels(lm, volume, tmp_path / "e.seg.dcm")
    lm.array[200:210, 200:210, 5] = 1
    with pytest.raises(MedsamError, match="does not exist"):
        export_labels(lm, volume, tmp_path / "missing" / "e.rtstruct.dcm")
    assert list(tmp_path.iterdir()) == []


def test_moved_source_file_is_named(tmp_path):
    import shutil

    folder = tmp_path / "series"
    shutil.copytree(DICOM / "mr_brain_ax30_dwi_b0_toshiba", folder)
    volume = load_volume(folder)
    lm = LabelMap(volume.shape)
    lm.array[20:30, 20:30, 10] = 1
    gone = volume.source.extra["files"][3]
    (folder / gone.split("/")[-1]).unlink()
    with pytest.raises(MedsamError, match="cannot re-read this source file") as err:
        export_labels(lm, volume, tmp_path / "x.seg.dcm")
    assert gone in str(err.value)
