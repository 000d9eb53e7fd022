"""medsam-segment under faults (issue 18), run as the real console entry point in a subprocess.

Every refusal exits 2 with a message that names the file (or the --box argument) and the
problem, never a traceback, and leaves nothing behind; the scan is never an output; the outputs
are checked before the model runs; a DICOM folder with several series is not guessed; a series
with unreadable files is refused unless --allow-gaps. Only two tests run the model (the
--allow-gaps run and the full-disk export). Fixtures are real data from ../shared/data, copied
into tmp_path and damaged there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import nibabel as nib
import numpy as np
import pytest

from conftest import DICOM, PAT1, REPO

pytestmark = pytest.mark.needs_data

FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"  # 240 x 240 x 155
TOSHIBA = DICOM / "mr_brain_ax30_dwi_b0_toshiba"  # 64 x 64 x 40, files 0001.dcm .. 0040.dcm
CT = DICOM / "ct_abdomen_siemens_jpeg2000"  # 512 x 512 x 20, no SeriesInstanceUID
TOSHIBA_UID = "1.2.392.200036.9116.4.2.9143.89.8007"
BOX = ["--box", "2", "70", "60", "80", "100", "160"]  # a valid box on FLAIR
MR_BOX = ["--box", "2", "20", "14", "14", "50", "50"]  # a valid box on the Toshiba series
# exactly what the medsam-segment console script runs
ENTRY = "import sys; from medsam_gui.cli import segment_main; sys.exit(segment_main())"
MODEL_RAN = "image encoder:"  # printed once the model is loaded, before any box is segmented


def segment(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def refused(r: subprocess.CompletedProcess, *words: object) -> str:
    """Exit 2, one error line naming every word, the model never loaded."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    for w in words:
        assert str(w) in r.stderr, (w, r.stderr)
    assert MODEL_RAN not in r.stderr, r.stderr
    return r.stderr


def temps(folder: Path) -> List[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def digest(path: Path) -> Dict[str, str]:
    """sha256 of a file, or of every file under a folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def copy_series(series: Path, dst: Path) -> Path:
    """A writable copy of a series (the data pack is read-only)."""
    dst.mkdir(parents=True)
    for f in sorted(series.iterdir()):
        shutil.copy(f, dst / f.name)
        os.chmod(dst / f.name, 0o644)
    return dst


# ---- 1. --boxes and --box -----------------------------------------------------------------------
GOOD = {"axis": 2, "slice": 70, "box": [60, 80, 100, 160]}
BOXES_FAULTS = {
    "infinity": ('[{"axis": 2, "slice": 70, "box": [60, 80, 100, Infinity]}]',
                 "holds Infinity, which is not a finite number"),
    "nan": ('[{"axis": 2, "slice": NaN, "box": [60, 80, 100, 160]}]',
            "holds NaN, which is not a finite number"),
    "1e400": ('[{"axis": 2, "slice": 70, "box": [60, 80, 100, 1e400]}]',
              "holds 1e400, which is not a finite number"),
    "deep": ("[" * 100000 + "]" * 100000, "nested too deeply"),
    "empty list": ("[]", "empty list: no boxes"),
    "empty file": ("", "the boxes file is empty"),
    "not a list": (json.dumps(GOOD), "must hold a JSON list of boxes"),
    "not json": ("[{axis: 2}]", "not valid JSON"),
    "not utf-8": (b"[\xff\xfe]", "not UTF-8 text"),
    "axis true": (json.dumps([{**GOOD, "axis": True}]), '"axis" must be a whole number (got true)'),
    "slice 59.9": (json.dumps([{**GOOD, "slice": 59.9}]),
                   '"slice" must be a whole number (got 59.9)'),
    "axis 3": (json.dumps([{**GOOD, "axis": 3}]), "the axis must be 0, 1 or 2 (got 3)"),
    "axis string": (json.dumps([{**GOOD, "axis": "2"}]), '"axis" must be a whole number'),
    "box null": (json.dumps([{**GOOD, "box": None}]), '"box" must be a list of 4 whole numbers'),
    "box 3 numbers": (json.dumps([{**GOOD, "box": [1, 2, 3]}]), "list of 4 whole numbers"),
    "box fraction": (json.dumps([{**GOOD, "box": [60, 80.5, 100, 160]}]),
                     '"box[1]" must be a whole number (got 80.5)'),
    "box reversed": (json.dumps([{**GOOD, "box": [100, 80, 60, 160]}]),
                     "X0 < X1 and Y0 < Y1"),
    "box zero width": (json.dumps([{**GOOD, "box": [60, 80, 60, 160]}]),
                       "X0 < X1 and Y0 < Y1"),
    "box outside": (json.dumps([GOOD, {**GOOD, "box": [60, 80, 240, 160]}]),
                    "boxes[1]: X1=240 is outside 0..239"),
    "slice outside": (json.dumps([{**GOOD, "slice": 155}]), "slice=155 is outside 0..154"),
    "negative slice": (json.dumps([{**GOOD, "slice": -1}]), "slice=-1 is outside 0..154"),
    "missing key": (json.dumps([{"axis": 2, "box": [60, 80, 100, 160]}]), "missing 'slice'"),
    "misspelt key": (json.dumps([{**GOOD, "lable": 3}]), "unknown key(s) 'lable'"),
    "label 0": (json.dumps([{**GOOD, "label": 0}]), "label must be within 1..65535 (got 0)"),
    "label too big": (json.dumps([{**GOOD, "label": 65536}]), "within 1..65535 (got 65536)"),
    "item a list": (json.dumps([[2, 70, 60, 80, 100, 160]]), "each box must be a JSON object"),
    "extent 1 number": (json.dumps([{**GOOD, "extent": [60]}]),
                        '"extent" must be a list of 2 whole numbers'),
    "extent outside": (json.dumps([{**GOOD, "extent": [60, 400]}]),
                       "extent 60..400 is outside 0..154"),
}


@pytest.mark.parametrize("case", list(BOXES_FAULTS), ids=list(BOXES_FAULTS))
def test_bad_boxes_file_exit_2_naming_the_file(tmp_path, case):
    text, problem = BOXES_FAULTS[case]
    boxes = tmp_path / "prompts.json"
    boxes.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    out = tmp_path / "out" / "labels.nii.gz"
    out.parent.mkdir()
    refused(segment(FLAIR, "--boxes", boxes, "--out", out), boxes, problem)
    assert list(out.parent.iterdir()) == []


def test_boxes_file_that_is_not_a_file(tmp_path):
    fifo = tmp_path / "boxes.json"
    os.mkfifo(fifo)  # reading it would wait forever for a writer
    out = tmp_path / "labels.nii.gz"
    refused(segment(FLAIR, "--boxes", fifo, "--out", out), fifo, "not a regular file")
    refused(segment(FLAIR, "--boxes", tmp_path, "--out", out), tmp_path, "is a folder")
    refused(segment(FLAIR, "--boxes", tmp_path / "none.json", "--out", out),
            tmp_path / "none.json", "No such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json"]


@pytest.mark.parametrize("box, problem", [
    (["2", "70", "100", "80", "60", "160"], "X0 < X1 and Y0 < Y1"),
    (["2", "70", "60", "80", "60", "160"], "X0 < X1 and Y0 < Y1"),
    (["2", "200", "60", "80", "100", "160"], "slice=200 is outside 0..154"),
    (["3", "70", "60", "80", "100", "160"], "the axis must be 0, 1 or 2"),
    (["0", "10", "60", "80", "100", "160"], "Y1=160 is outside 0..154"),
], ids=["reversed", "zero width", "slice outside", "axis 3", "outside on axis 0"])
def test_bad_inline_box_names_the_argument(tmp_path, box, problem):
    out = tmp_path / "labels.nii.gz"
    refused(segment(FLAIR, "--box", *box, "--out", out), "--box " + " ".join(box), problem)
    assert list(tmp_path.iterdir()) == []


def test_bad_numbers_in_other_options(tmp_path):
    out = tmp_path / "labels.nii.gz"
    refused(segment(FLAIR, *BOX, "--label", "0", "--out", out), "--label must be within")
    refused(segment(FLAIR, *BOX, "--window", "nan", "400", "--out", out), "--window")
    refused(segment(FLAIR, *BOX, "--window", "40", "inf", "--out", out), "--window")
    refused(segment("", *BOX, "--out", out), "no image given")
    refused(segment(FLAIR, *BOX, "--model", "sam_vit_x", "--out", out), "unknown --model")
    refused(segment(FLAIR, *BOX, "--model", "medsam_vit_b", "--checkpoint",
                    tmp_path / "none.pth", "--out", out), tmp_path / "none.pth", "not found")
    assert list(tmp_path.iterdir()) == []


# ---- 2. the scan is never an output -------------------------------------------------------------
def test_a_nifti_scan_is_never_the_output(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    shutil.copy(FLAIR, scan)
    (tmp_path / "link.nii.gz").symlink_to(scan)
    os.link(scan, tmp_path / "hard.nii.gz")
    (tmp_path / "dir").symlink_to(tmp_path)
    before = digest(scan)
    for out in (scan, tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz",
                tmp_path / "dir" / "scan.nii.gz", Path("scan.nii.gz")):
        refused(segment(scan, *BOX, "--out", out, cwd=tmp_path), out, "is the input file")
    assert digest(scan) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "hard.nii.gz", "link.nii.gz",
                                                         "scan.nii.gz"]


def test_nothing_is_written_into_the_dicom_folder_being_read(tmp_path):
    series = copy_series(TOSHIBA, tmp_path / "series")
    (tmp_path / "alias").symlink_to(series)
    before = digest(series)
    for image, out, fmt in [
        (series, series / "labels.nii.gz", "nifti"),
        (series, series / "0001.dcm", "seg"),  # a file of the series itself
        (series / "0005.dcm", series / "0001.dcm", "rtstruct"),  # a file given, a sibling out
        (series, series / "new" / "labels.nii.gz", "nifti"),  # a sub-folder is read too
        (series, tmp_path / "alias" / "labels.seg.dcm", "seg"),  # through a symlink
    ]:
        refused(segment(image, *MR_BOX, "--format", fmt, "--out", out), out,
                f"inside the DICOM folder being read ({series})")
    refused(segment(series / "0005.dcm", *MR_BOX, "--format", "seg", "--out",
                    series / "0005.dcm"), "is the input file")
    assert digest(series) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias", "series"]


def test_a_sidecar_never_overwrites_the_boxes_file(tmp_path):
    boxes = tmp_path / "liver.json"  # the label table of liver.nii.gz would be liver.json
    boxes.write_text(json.dumps([GOOD]))
    before = digest(boxes)
    refused(segment(FLAIR, "--boxes", boxes, "--out", tmp_path / "liver.nii.gz"), boxes,
            "written beside liver.nii.gz) is the input file")
    assert digest(boxes) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liver.json"]


# ---- 3. outputs checked before the model runs; nothing left behind ------------------------------
def test_unusable_outputs_are_refused_before_the_model(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "taken.nii.gz").mkdir()
    (tmp_path / "side.itksnap.txt").mkdir()  # a sidecar of side.nii.gz
    cases = [
        (tmp_path / "missing" / "labels.nii.gz", "the folder", "does not exist"),
        (a_file / "labels.nii.gz", "is a file, not a folder", ""),
        (tmp_path / "taken.nii.gz", "this is a folder", ""),
        (tmp_path / "side.nii.gz", "side.itksnap.txt", "this is a folder"),
        (Path("/proc/labels.nii.gz"), "cannot write in the folder /proc", ""),
        (tmp_path / ("a" * 245 + ".nii.gz"), "File name too long", ""),  # its .itksnap.txt
        # fits, and so do its label files, but not its temporary name (.tmp-PID)
        (tmp_path / ("a" * 243 + ".nii.gz"), "too long for its folder's file system", ""),
    ]
    for out, *words in cases:
        refused(segment(FLAIR, *BOX, "--out", out), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "side.itksnap.txt",
                                                         "taken.nii.gz"]
    assert not temps(tmp_path)


def test_the_review_queue_file_is_checked_like_the_outputs(tmp_path):
    series = copy_series(TOSHIBA, tmp_path / "series")
    out = tmp_path / "labels.nii.gz"
    run = [*MR_BOX, "--propagate", "--out", out, "--queue"]
    refused(segment(series, *run, tmp_path / "labels.json"), "--queue would overwrite",
            "an output of this run")  # the label table beside labels.nii.gz
    refused(segment(series, *run, series / "queue.json"), "inside the DICOM folder being read")
    refused(segment(series, *run, tmp_path / "none" / "queue.json"), "does not exist")
    refused(segment(series, *run, series / "0003.dcm"), "inside the DICOM folder being read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


@pytest.fixture
def mounted(tmp_path):
    """mount(options) -> a fresh tmpfs folder (needs root and mount; else skipped, saying so)."""
    done = []

    def mount(options: str) -> Path:
        disk = tmp_path / f"disk{len(done)}"
        disk.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
        done.append(disk)
        return disk
    yield mount
    for disk in done:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_read_only_output_folder_is_refused_before_the_model(tmp_path, mounted):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        why = "Permission denied"
    else:  # root writes into chmod-555 folders: use a read-only file system instead
        folder = mounted("ro,size=1m")
        why = "Read-only file system"
    refused(segment(FLAIR, *BOX, "--out", folder / "labels.nii.gz"),
            folder / "labels.nii.gz", f"cannot write in the folder {folder}", why)


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_a_full_disk_at_the_end_leaves_the_old_outputs_and_no_temporary_file(mounted):
    """The model runs, then the export fails for want of space: the label map and label files
    from before are untouched and no temporary file stays (runs the model)."""
    disk = mounted("size=1m")
    out = disk / "labels.nii.gz"
    old = {out: b"old label map", disk / "labels.json": b"{}", disk / "labels.ctbl": b"# old"}
    for path, data in old.items():
        path.write_bytes(data)
    _fill(disk, leave=os.sysconf("SC_PAGE_SIZE"))  # room for the new label map, not its table
    r = segment(TOSHIBA, *MR_BOX, "--out", out)
    assert r.returncode == 2 and MODEL_RAN in r.stderr, r.stderr
    # before: labels.nii.gz was replaced, then the label table failed beside it
    assert f"{disk}/labels.json: cannot write the label table (No space left on device)" \
        in r.stderr, r.stderr
    assert ".tmp-" not in r.stderr  # the error names the real target, not a temporary one
    for path, data in old.items():
        assert path.read_bytes() == data
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "labels.ctbl", "labels.json",
                                                      "labels.nii.gz"]


# ---- 4. DICOM folders: several series, unreadable files -----------------------------------------
def test_several_series_are_not_guessed(tmp_path):
    folder = tmp_path / "study"
    copy_series(TOSHIBA, folder / "mr")
    copy_series(CT, folder / "ct")
    out = tmp_path / "labels.nii.gz"
    err = refused(segment(folder, *MR_BOX, "--out", out), folder, "holds 2 series",
                  "--series UID", TOSHIBA_UID, "'DTI AX 30d'", "40 slices",
                  "no-series-uid", "'CT Body 3.0'", "20 slices")
    # the chosen series is named once loaded (a box outside it stops the run before the model)
    err = refused(segment(folder, "--series", TOSHIBA_UID, "--box", "2", "39", "14", "14", "50",
                          "64", "--out", out), "Y1=64 is outside 0..63")
    assert f"series: {TOSHIBA_UID} (DTI AX 30d; 40 files" in err, err
    err = refused(segment(folder, "--series", "no-series-uid", "--box", "2", "39", "14", "14",
                          "50", "50", "--out", out), "slice=39 is outside 0..19")
    assert "series: no-series-uid (CT Body 3.0; 20 files" in err, err
    refused(segment(folder, "--series", "1.2.3", *MR_BOX, "--out", out),
            "no series with UID 1.2.3")
    refused(segment(FLAIR, "--series", TOSHIBA_UID, *BOX, "--out", out),
            "--series chooses a series of a DICOM folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]


def test_unreadable_slice_refused_unless_allow_gaps(tmp_path):
    """A slice cut to 200 bytes: refused, naming it; with --allow-gaps segmented with a warning
    (runs the model) and all four outputs written, no temporary file."""
    series = copy_series(TOSHIBA, tmp_path / "series")
    damaged = series / "0007.dcm"
    os.truncate(damaged, 200)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "labels.nii.gz"
    refused(segment(series, *MR_BOX, "--out", out), series, "1 file(s) of this series could not "
            "be read", str(damaged), "--allow-gaps")
    assert list(out_dir.iterdir()) == []
    r = segment(series, *MR_BOX, "--allow-gaps", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "warning: --allow-gaps: segmenting without 1 unreadable file(s)" in r.stderr
    assert str(damaged) in r.stderr and f"series: {TOSHIBA_UID}" in r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "labels.ctbl", "labels.itksnap.txt", "labels.json", "labels.nii.gz"]
    arr = np.asarray(nib.load(str(out)).dataobj)
    assert arr.shape == (64, 64, 40) and set(np.unique(arr)) == {0, 1}
    assert arr[:, :, 20].any() and not arr[:, :, :20].any() and not arr[:, :, 21:].any()


def test_rtstruct_of_a_series_that_is_neither_ct_nor_mr_is_refused_before_the_model(tmp_path):
    import pydicom

    series = copy_series(TOSHIBA, tmp_path / "series")
    for f in series.iterdir():
        ds = pydicom.dcmread(str(f))
        ds.Modality = "OT"
        ds.save_as(str(f))
    out = tmp_path / "labels.rtstruct.dcm"
    refused(segment(series, *MR_BOX, "--out", out), "RT Structure Sets are written for CT and "
            "MR series; this one is OT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


# ---- 5. devices ----------------------------------------------------------------------------------
def test_unusable_device_exit_2(tmp_path):
    import torch

    out = tmp_path / "labels.nii.gz"
    refused(segment(FLAIR, *BOX, "--device", "foo", "--out", out), "unknown device 'foo'")
    if not torch.cuda.is_available():
        refused(segment(FLAIR, *BOX, "--device", "cuda", "--out", out), "'cuda'", "CUDA")
    assert list(tmp_path.iterdir()) == []


# ---- the export itself: all four NIfTI files or none (in-process, failures injected) -------------
@pytest.fixture(scope="module")
def small_export():
    from medsam_gui.annotation.labels import Label, LabelMap, LabelTable
    from medsam_gui.io import load_volume

    volume = load_volume(TOSHIBA)
    labels = np.zeros(volume.shape, np.uint16)
    labels[20:40, 20:40, 18:22] = 2
    return LabelMap(volume.shape, LabelTable([Label(2, "lesion", (255, 0, 0))]), labels), volume


def test_a_failing_label_file_takes_the_label_map_with_it(tmp_path, monkeypatch, small_export):
    from medsam_gui.annotation import exporting
    from medsam_gui.errors import MedsamError

    def no_space(labels, nifti):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporting, "write_descriptions", no_space)
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(MedsamError, match="No space left on device") as err:
        exporting.export_nifti(*small_export, out)
    assert err.value.path == str(out)
    assert list(tmp_path.iterdir()) == []  # before: labels.nii.gz and labels.json stayed


def test_a_failing_rename_restores_the_files_from_before(tmp_path, monkeypatch, small_export):
    from medsam_gui.annotation import exporting
    from medsam_gui.errors import MedsamError

    out = tmp_path / "labels.nii.gz"
    old = {out: b"old map", tmp_path / "labels.json": b"{}"}  # no .itksnap.txt / .ctbl before
    for path, data in old.items():
        path.write_bytes(data)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        if Path(dst).parent == tmp_path:  # the renames into place, not those inside the stage
            calls.append(dst)
            if len(calls) == 4:  # the last of the four: labels.ctbl
                raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(exporting.os, "replace", replace)
    with pytest.raises(MedsamError, match="nothing was changed"):
        exporting.export_nifti(*small_export, out)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == old
    result = exporting.export_nifti(*small_export, out)  # and it works once the fault is gone
    assert result.path == out and sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.ctbl", "labels.itksnap.txt", "labels.json", "labels.nii.gz"]
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), small_export[0].array)


def test_help_keeps_its_promises_in_words():
    r = segment("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for promise in ("2 on any error", "On any error nothing is left behind", "--series UID",
                    "--allow-gaps", "before the model runs"):
        assert promise in text, promise
