"""medsam-segment: voxel-index boxes in, label map on the source grid out; errors exit 2."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.engine.segment_cli import main

from conftest import PAT1

pytestmark = pytest.mark.needs_data
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"


@pytest.fixture(scope="module")
def gt():
    return np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0


def test_box_along_axis_2_writes_source_grid(tmp_path, gt):
    k = 70
    xs, ys = np.nonzero(gt[:, :, k])  # data[X, Y, K]: X = first remaining axis, Y = second
    out = tmp_path / "labels.nii.gz"
    code = main([str(FLAIR), "--box", "2", str(k), str(xs.min()), str(ys.min()),
                 str(xs.max()), str(ys.max()), "--label", "3", "--out", str(out)])
    assert code == 0
    src, lab = nib.load(str(FLAIR)), nib.load(str(out))
    assert lab.shape == src.shape
    np.testing.assert_allclose(lab.affine, src.affine, atol=1e-5)
    arr = np.asarray(lab.dataobj)
    assert set(np.unique(arr)) == {0, 3}
    assert not arr[:, :, :k].any() and not arr[:, :, k + 1:].any()
    pred = arr[:, :, k] == 3
    dice = 2 * (pred & gt[:, :, k]).sum() / (pred.sum() + gt[:, :, k].sum())
    assert dice >= 0.7, dice


def test_bad_image_path_exit_2_no_output(tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    missing = tmp_path / "missing.nii.gz"
    assert main([str(missing), "--box", "2", "1", "1", "1", "5", "5", "--out", str(out)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


def test_bad_boxes_exit_2_no_output(tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    outside = ["--box", "2", "200", "1", "1", "5", "5"]  # slice 200 of 155
    assert main([str(FLAIR), *outside, "--out", str(out)]) == 2
    assert "outside 0..154" in capsys.readouterr().err
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"axis": 2, "slice": 70, "box": [1, 2, 3]}]))
    assert main([str(FLAIR), "--boxes", str(boxes), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(boxes) in err and "malformed" in err
    assert main([str(FLAIR), "--out", str(out)]) == 2  # no boxes at all
    assert not out.exists() and not list(tmp_path.glob("labels*"))


def test_propagate_fills_the_tumour_inside_the_extent(tmp_path, gt, capsys):
    k = 70
    xs, ys = np.nonzero(gt[:, :, k])
    out = tmp_path / "tumour.nii.gz"
    box = ["--box", "2", str(k), str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]
    assert main([str(FLAIR), *box, "--propagate", "--extent", str(k - 3), str(k + 4),
                 "--out", str(out)]) == 0
    arr = np.asarray(nib.load(str(out)).dataobj) == 1
    filled = np.flatnonzero(arr.any(axis=(0, 1))).tolist()
    assert filled == list(range(k - 3, k + 5))
    sub, truth = arr[:, :, k - 3:k + 5], gt[:, :, k - 3:k + 5]
    assert 2 * (sub & truth).sum() / (sub.sum() + truth.sum()) >= 0.75
    err = capsys.readouterr().err
    assert f"slices {k - 3}..{k + 4} of axis 2" in err and "end of the given extent" in err


def test_propagation_options_are_checked(tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    box = ["--box", "2", "70", "60", "80", "100", "160"]
    assert main([str(FLAIR), *box, "--extent", "60", "80", "--out", str(out)]) == 2
    assert "add --propagate" in capsys.readouterr().err
    assert main([str(FLAIR), *box, "--propagate", "--extent", "80", "90", "--out", str(out)]) == 2
    assert "outside its extent 80..90" in capsys.readouterr().err
    assert main([str(FLAIR), *box, "--propagate", "--extent", "60", "300", "--out",
                 str(out)]) == 2
    assert "outside 0..154" in capsys.readouterr().err
    assert not out.exists()


def test_dicom_series_to_seg_and_rtstruct(tmp_path, capsys):
    """--format seg|rtstruct (or the .seg.dcm / .rtstruct.dcm name) for a DICOM series."""
    import pydicom

    from medsam_gui.io import load_volume
    from medsam_gui.io.dicom_seg import read_seg
    from test_dicom_export import CT, LIVER, ct_reference

    volume = load_volume(CT)
    liver = ct_reference(volume) == LIVER
    xs, ys = np.nonzero(liver[:, :, 10])
    box = ["--box", "2", "10", str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]
    seg = tmp_path / "liver.dcm"
    assert main([str(CT), *box, "--format", "seg", "--out", str(seg)]) == 0
    back = read_seg(seg, volume)
    got = back.array[:, :, 10] == 1
    assert 2 * (got & liver[:, :, 10]).sum() / (got.sum() + liver[:, :, 10].sum()) > 0.9
    assert not back.array[:, :, :10].any() and back.names == {1: "label 1"}
    ds = pydicom.dcmread(str(seg), stop_before_pixels=True)
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    rt = tmp_path / "liver.rtstruct.dcm"
    assert main([str(CT), *box, "--out", str(rt)]) == 0
    assert pydicom.dcmread(str(rt)).Modality == "RTSTRUCT"
    assert "re-rasterise to the label map" in capsys.readouterr().err


def test_output_format_problems_exit_2_before_any_work(tmp_path, capsys):
    box = ["--box", "2", "70", "60", "80", "100", "160"]
    assert main([str(FLAIR), *box, "--out", str(tmp_path / "x.dcm")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert main([str(FLAIR), *box, "--out", str(tmp_path / "x.seg.dcm")]) == 2
    assert "opened from a NIfTI file" in capsys.readouterr().err
    assert main([str(FLAIR), *box, "--format", "rtstruct", "--out",
                 str(tmp_path / "x.nii.gz")]) == 2
    assert "not written to a file named like this" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
