"""What we write back validates: SEG and RT Structure Set from every DICOM series in the data
pack (and from enhanced conversions of them) pass dicom3tools' dciodvfy with zero errors, and
on an enhanced source they reference the source frames and read back equal."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import numpy as np
import pydicom
import pytest

from medsam_gui.annotation.exporting import segments_of
from medsam_gui.annotation.labels import Label, LabelMap, LabelTable
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume
from medsam_gui.io.dicom_seg import read_seg, write_seg
from medsam_gui.io.rtstruct import write_rtstruct
from medsam_gui.io.rtstruct_read import read_rtstruct
from conftest import DICOM
from test_dicom_vendors import CT, SAG, TOSHIBA, enhanced, mosaic_of

pytestmark = pytest.mark.needs_data
SERIES = sorted(p for p in DICOM.iterdir() if p.is_dir() and p.name != "reference")
DCIODVFY = shutil.which("dciodvfy")


def shapes(volume) -> LabelMap:
    """Two structures on the middle half of the slices: a disc and a crescent beside it."""
    nx, ny, nz = volume.shape
    lm = LabelMap(volume.shape, LabelTable([Label(1, "disc", (200, 100, 50)),
                                            Label(2, "crescent", (50, 100, 200))]))
    x, y = np.mgrid[:nx, :ny]
    disc = (x - nx / 2) ** 2 + (y - ny / 2) ** 2 < (min(nx, ny) / 5) ** 2
    other = ((x - nx / 3) ** 2 + (y - ny / 3) ** 2 < (min(nx, ny) / 8) ** 2) & ~disc
    for k in range(nz // 4, 3 * nz // 4):
        lm.array[:, :, k][disc] = 1
        lm.array[:, :, k][other] = 2
    return lm


def export_both(volume, folder):
    lm = shapes(volume)
    segs = segments_of(lm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_seg(lm.array, segs, volume, folder / "labels.seg.dcm")
        write_rtstruct(lm.array, segs, volume, folder / "labels.rt.dcm")
    return lm, folder / "labels.seg.dcm", folder / "labels.rt.dcm"


def dciodvfy_errors(path) -> list:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=300)
    return [line for line in (run.stdout + run.stderr).splitlines()
            if re.match(r"^\s*Error", line)]


@pytest.fixture(scope="module")
def enhanced_sources(tmp_path_factory):
    out = {}
    for series in (CT, SAG):
        folder = tmp_path_factory.mktemp(f"enhanced_{series.name}")
        enhanced(series).save_as(str(folder / "enhanced.dcm"))
        out[series.name] = folder
    return out


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package "
                                              "dicom3tools)")
@pytest.mark.parametrize("source", [p.name for p in SERIES] + [
    "enhanced:" + CT.name, "enhanced:" + SAG.name])
def test_seg_and_rtstruct_validate_with_zero_dciodvfy_errors(source, enhanced_sources,
                                                               tmp_path):
    if source.startswith("enhanced:"):
        folder = enhanced_sources[source.split(":", 1)[1]]
    else:
        folder = DICOM / source
    volume = load_volume(folder)
    _lm, seg, rt = export_both(volume, tmp_path)
    assert dciodvfy_errors(seg) == []
    assert dciodvfy_errors(rt) == []
    ds = pydicom.dcmread(rt, stop_before_pixels=True)
    assert "PositionReferenceIndicator" in ds


def test_dciodvfy_finds_what_we_fixed(tmp_path):
    """The validator check can fail: without PositionReferenceIndicator it reports the error."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    volume = load_volume(TOSHIBA)
    _lm, _seg, rt = export_both(volume, tmp_path)
    ds = pydicom.dcmread(rt)
    del ds.PositionReferenceIndicator
    ds.save_as(str(tmp_path / "broken.dcm"))
    assert any("PositionReferenceIndicator" in e for e in dciodvfy_errors(tmp_path / "broken.dcm"))


def test_seg_and_rtstruct_on_an_enhanced_source_reference_frames(enhanced_sources, tmp_path):
    folder = enhanced_sources[SAG.name]
    volume = load_volume(folder)
    lm, seg_path, rt_path = export_both(volume, tmp_path)
    source = pydicom.dcmread(folder / "enhanced.dcm", stop_before_pixels=True)
    positions = {k + 1: [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                 for k, item in enumerate(source.PerFrameFunctionalGroupsSequence)}
    seg = pydicom.dcmread(seg_path)
    assert seg.NumberOfFrames > 0
    for item in seg.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        here = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(positions[int(ref.ReferencedFrameNumber)], here, atol=1e-3)
    back = read_seg(seg_path, volume)
    assert np.array_equal(back.array, lm.array)
    rt = pydicom.dcmread(rt_path)
    refs = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].ContourImageSequence
    assert sorted(int(r.ReferencedFrameNumber) for r in refs) == list(range(1, 36))
    assert {r.ReferencedSOPInstanceUID for r in refs} == {source.SOPInstanceUID}
    imported = read_rtstruct(rt_path, volume)
    for value in (1, 2):
        want = lm.array == value
        got = imported.array == value
        assert np.count_nonzero(got != want) <= 0.01 * np.count_nonzero(want)


def test_seg_of_the_second_volume_of_an_enhanced_4d_file(tmp_path, enhanced_sources):
    from test_dicom_vendors import _doubled

    ds = pydicom.dcmread(enhanced_sources[SAG.name] / "enhanced.dcm")
    first = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    folder = tmp_path / "4d"
    folder.mkdir()
    _doubled(ds, first // 2).save_as(str(folder / "4d.dcm"))
    volume = load_volume(folder, volume_index=1)
    assert all(f > 35 for f in volume.source.extra["frames"])
    lm, seg_path, _rt = export_both(volume, tmp_path)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    frames = {int(i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
              for i in seg.PerFrameFunctionalGroupsSequence}
    assert frames and all(f > 35 for f in frames)
    assert np.array_equal(read_seg(seg_path, volume).array, lm.array)


def test_mosaic_and_mixed_sources_are_refused_for_seg_saying_why(tmp_path):
    mosaic = tmp_path / "mosaic"
    mosaic.mkdir()
    mosaic_of(TOSHIBA).save_as(str(mosaic / "m.dcm"))
    volume = load_volume(mosaic)
    lm = shapes(volume)
    with pytest.raises(MedsamError, match="Siemens mosaic: its slices are tiles of one image"):
        write_seg(lm.array, segments_of(lm), volume, tmp_path / "m.seg.dcm")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    order = load_volume(TOSHIBA).source.extra["files"]
    from pathlib import Path
    enhanced(TOSHIBA, [Path(f) for f in order[:20]]).save_as(str(mixed / "part.dcm"))
    for f in order[20:]:
        shutil.copy(f, mixed)
    volume = load_volume(mixed)
    lm = shapes(volume)
    with pytest.raises(MedsamError, match="assembled from several files, some of them enhanced"):
        write_seg(lm.array, segments_of(lm), volume, tmp_path / "x.seg.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_rtstruct(lm.array, segments_of(lm), volume, tmp_path / "x.rt.dcm")  # verified
    assert not (tmp_path / "x.seg.dcm").exists()


@pytest.mark.parametrize("compression", [None, "rle", "jpegls", "jpeg2000"])
def test_labelmap_seg_compressed_reads_back_equal_and_smaller(compression, tmp_path):
    from medsam_gui.io.dicom_seg import dicom_object_kind

    volume = load_volume(TOSHIBA)
    lm = shapes(volume)
    segs = segments_of(lm)
    binary = write_seg(lm.array, segs, volume, tmp_path / "binary.seg.dcm").path
    path = write_seg(lm.array, segs, volume, tmp_path / "labelmap.seg.dcm", labelmap=True,
                     compression=compression).path
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SegmentationType == "LABELMAP"
    assert ds.file_meta.TransferSyntaxUID.is_compressed == (compression is not None)
    assert dicom_object_kind(path) == "SEG"
    back = read_seg(path, volume)
    assert np.array_equal(back.array, lm.array)
    assert back.names == {1: "disc", 2: "crescent"}
    if compression is not None:  # uncompressed, 8-bit frames outweigh 2 one-bit segments
        assert path.stat().st_size < binary.stat().st_size


def test_binary_seg_compression_is_jpeg2000_or_a_clear_refusal(tmp_path):
    volume = load_volume(TOSHIBA)
    lm = shapes(volume)
    segs = segments_of(lm)
    path = write_seg(lm.array, segs, volume, tmp_path / "j2k.seg.dcm", compression="jpeg2000").path
    assert pydicom.dcmread(path, stop_before_pixels=True).SegmentationType == "BINARY"
    assert np.array_equal(read_seg(path, volume).array, lm.array)
    with pytest.raises(MedsamError, match="JPEG 2000 lossless only, not rle"):
        write_seg(lm.array, segs, volume, tmp_path / "rle.seg.dcm", compression="rle")
    assert not (tmp_path / "rle.seg.dcm").exists()


# What Supplement 243 (2024) changed for a LABELMAP SEG and dciodvfy (dicom3tools 2022) predates:
# the type itself, segment 0 (background), and no per-frame Segment Identification.
LABELMAP_RULES = ("Unrecognized enumerated value <LABELMAP> for value 1 of attribute "
                  "<Segmentation Type>",
                  "SegmentNumber not monotonically increasing from one by one - have "
                  "SegmentSequence item number 1 (from one) with SegmentNumber of 0",
                  "Value is zero for value 1 of attribute <Segment Number>",
                  "Missing attribute Type 1 Required Element=<SegmentIdentificationSequence> "
                  "Module=<SegmentationMacro>")


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package "
                                              "dicom3tools)")
@pytest.mark.parametrize("labelmap,compression", [(False, "jpeg2000"), (True, None),
                                                  (True, "rle"), (True, "jpegls")])
def test_seg_variants_validate(labelmap, compression, tmp_path):
    """A compressed BINARY SEG validates with zero errors. dciodvfy does not know the LABELMAP
    SOP class yet ("Information Object Not found"), so a LABELMAP SEG is checked against the
    Segmentation IOD under the classic SOP class: only the rules Supplement 243 changed may
    fail, so every other module (patient, study, series, frame of reference, references, pixel
    module, functional groups) must validate."""
    volume = load_volume(TOSHIBA)
    lm = shapes(volume)
    path = tmp_path / "v.seg.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_seg(lm.array, segments_of(lm), volume, path, labelmap=labelmap,
                  compression=compression)
    assert np.array_equal(read_seg(path, volume).array, lm.array)
    errors = dciodvfy_errors(path)
    if not labelmap or not any("Information Object Not found" in e for e in errors):
        assert errors == []  # BINARY, or a dciodvfy that knows the LABELMAP class
        return
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.save_as(str(tmp_path / "as_binary_class.dcm"))
    errors = dciodvfy_errors(tmp_path / "as_binary_class.dcm")
    assert errors, "the LABELMAP rules are expected to be reported by a pre-2024 dciodvfy"
    others = [e for e in errors if not any(rule in e for rule in LABELMAP_RULES)]
    assert others == []
