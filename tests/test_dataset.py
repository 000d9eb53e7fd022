"""Datasets on real scans: cases from each kind of source, create / reopen / status round trips,
import of existing labels as reviewed, nnU-Net export on the scan's exact grid (DICOM too), and
the adoption rule. No model runs here (see test_dataset_adapt.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import ABDOMEN, DICOM, PAT1, PAT2
from medsam_gui.dataset import Dataset, dataset_status, discover
from medsam_gui.dataset.adapt import decide
from medsam_gui.dataset.cli import main
from medsam_gui.errors import MedsamError

pytestmark = pytest.mark.needs_data

FLAIR = "Flair_subtrMeanDivStd.nii.gz"
GT = "OTMultiClass.nii.gz"
CT = DICOM / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
SAG = DICOM / "mr_brain_sag_t1_siemens_HFS"


def _run(capsys, *argv) -> "tuple[int, str, str]":
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_sources_of_every_kind(tmp_path):
    # a folder of NIfTI files (recursive); ids from the sub-folder and the file name
    found = discover(PAT1.parent)
    ids = {c.id for c in found.cases}
    assert len(found.cases) == 8 and "brats_2013_pat0001_1_Flair_subtrMeanDivStd" in ids
    assert all(c.kind == "nifti" and os.path.isabs(c.image) for c in found.cases)
    # DICOM studies found recursively, one case per series, each loads as its series
    studies = tmp_path / "studies"
    for series, home in ((CT, studies / "patA" / "study1" / "ct"), (SAG, studies / "patB" / "t1")):
        home.mkdir(parents=True)
        for f in series.iterdir():  # linked file by file (folder links are not followed)
            os.symlink(f, home / f.name)
    found = discover(studies)
    assert sorted(c.kind for c in found.cases) == ["dicom", "dicom"]
    assert {Path(c.image).name for c in found.cases} == {"ct", "t1"}
    assert all(c.series_uid for c in found.cases)
    from medsam_gui.dataset.cases import load_case_volume

    ct_case = next(c for c in found.cases if Path(c.image).name == "ct")
    vol = load_case_volume(ct_case)
    assert vol.shape[2] == 20 and vol.modality == "CT"
    # nnU-Net v2: imagesTr/<case>_0000 + labelsTr + label names from dataset.json
    nn = tmp_path / "Dataset501_Brats"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    for cid, pat in (("brats_001", PAT1), ("brats_002", PAT2)):
        os.symlink(pat / FLAIR, nn / "imagesTr" / f"{cid}_0000.nii.gz")
    os.symlink(PAT1 / GT, nn / "labelsTr" / "brats_001.nii.gz")
    (nn / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": 2,
        "labels": {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3,
                   "enhancing": 4}}))
    found = discover(nn)
    assert [c.id for c in found.cases] == ["brats_001", "brats_002"]
    assert found.cases[0].labels_path and found.cases[1].labels_path is None
    assert found.label_names == {1: "necrosis", 2: "edema", 3: "non-enhancing", 4: "enhancing"}
    # MSD: the training list and value -> name labels
    msd = tmp_path / "Task01_Brain"
    (msd / "imagesTr").mkdir(parents=True)
    os.symlink(PAT2 / FLAIR, msd / "imagesTr" / "pat2.nii.gz")
    (msd / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR"}, "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": "./imagesTr/pat2.nii.gz", "label": "./labelsTr/pat2.nii.gz"}]}))
    found = discover(msd)
    assert [c.id for c in found.cases] == ["pat2"] and found.label_names == {1: "tumour"}
    # CSV with a header, relative paths, a missing file named and left out
    csv_path = tmp_path / "list.csv"
    rel = os.path.relpath(PAT2 / FLAIR, tmp_path)
    csv_path.write_text(f"id,image,labels\nfirst,{PAT1 / FLAIR},{PAT1 / GT}\n"
                        f"second,{rel},\nthird,missing.nii.gz,\n")
    found = discover(csv_path)
    assert [c.id for c in found.cases] == ["first", "second"]
    assert found.cases[0].labels_path == str((PAT1 / GT).resolve())
    assert any("missing.nii.gz" in n for n in found.notes)
    # nothing to find is refused with the folder named
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsamError, match="no NIfTI files and no DICOM series"):
        discover(tmp_path / "empty")


def test_create_status_mark_exclude_reopen(tmp_path, capsys):
    ds_dir = tmp_path / "ds"
    rc, out, _ = _run(capsys, "create", ds_dir, PAT1.parent, "--exclude", "*OTMultiClass*",
                      "*brainmask*", "*T1c*")
    assert rc == 0 and "2 cases (6 excluded)" in out
    rc, out, _ = _run(capsys, "status", ds_dir, "--json")
    doc = json.loads(out)
    assert [c["status"] for c in doc["cases"]] == ["new", "new"]
    first, second = (c["id"] for c in doc["cases"])
    # a case with saved work is in progress; the user's states override; who marked it done
    from medsam_gui.training.seed_workspace import workspace_from_labels

    ds = Dataset.open(ds_dir)
    workspace_from_labels(ds.case(second).image, str(PAT2 / GT), str(ds.case_dir(second)),
                          n_slices=5, status="model")
    rc, _, err = _run(capsys, "mark", ds_dir, first, "--done", "--by", "dr. who")
    assert rc == 0 and f"note: {first} has no saved work" in err  # done as a case without labels
    assert "no saved work" not in _run(capsys, "mark", ds_dir, second, "--done")[2]
    assert _run(capsys, "mark", ds_dir, second, "--clear")[0] == 0
    st = {s.id: s for s in dataset_status(Dataset.open(ds_dir))}
    assert st[first].status == "done" and st[first].done_by == "dr. who" and st[first].done_at
    assert st[second].status == "in progress"
    assert (st[second].reviewed_slices, st[second].unreviewed_slices) == (0, 5)
    assert _run(capsys, "mark", ds_dir, second, "--to-review")[0] == 0
    assert _run(capsys, "exclude", ds_dir, first)[0] == 0
    ds = Dataset.open(ds_dir)  # reopened: the states are kept
    ds.add_time(second, 61.5)
    assert [(s.id, s.status, s.seconds) for s in dataset_status(Dataset.open(ds_dir))] == [
        (second, "to review", 61.5)]
    assert Dataset.open(ds_dir).neighbour(None).id == second  # where the user left off
    rc, out, _ = _run(capsys, "status", ds_dir, "--all")
    assert "excluded" in out and "to review" in out and "0:01:02" in out
    # errors: unknown case, an existing dataset, a manifest from a newer version, damage
    rc, _, err = _run(capsys, "mark", ds_dir, "nope", "--done")
    assert rc == 2 and "no case 'nope'" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "create", ds_dir, PAT1.parent)
    assert rc == 2 and "exists here already" in err
    manifest = ds_dir / "medsam-dataset.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(dict(meta, format="medsam-gui-dataset/9")))
    rc, _, err = _run(capsys, "status", ds_dir)
    assert rc == 2 and "newer medsam-gui" in err
    manifest.write_text('{"format": "medsam-gui-dataset/1", "cases": [')
    rc, _, err = _run(capsys, "status", ds_dir)
    assert rc == 2 and "cannot read the dataset manifest" in err


def test_add_labels_as_reviewed_and_export_nnunet_on_the_exact_grid(tmp_path, capsys):
    from medsam_gui.io import load_volume

    ds_dir, out = tmp_path / "ds", tmp_path / "Dataset777_Mixed"
    Dataset.create(ds_dir)
    # a NIfTI case with its expert labels, done; a DICOM CT with organ labels on its grid
    rc, text, _ = _run(capsys, "add", ds_dir, PAT1 / FLAIR, "--labels", PAT1 / GT, "--done")
    assert rc == 0 and "marked done" in text
    rc, text, _ = _run(capsys, "add", ds_dir, CT, "--labels", CT_LABELS, "--done", "--id",
                       "ct1")
    assert rc == 0
    _run(capsys, "add", ds_dir, PAT2 / FLAIR)  # new: not exported
    st = {s.id: s for s in dataset_status(Dataset.open(ds_dir))}
    gt1 = np.asarray(nib.load(str(PAT1 / GT)).dataobj)
    assert st["ct1"].status == "done" and st["ct1"].unreviewed_slices == 0
    n_gt_slices = int((gt1 > 0).any(axis=(0, 1)).sum())
    pat1 = next(k for k in st if "pat0001" in Dataset.open(ds_dir).case(k).image)
    assert st[pat1].reviewed_slices == n_gt_slices
    # a model learned from these done cases is used on CT and MR cases; one learned from CT
    # only is not used on MR (the base model is), nor is it when its entry says nothing
    from medsam_gui.dataset.adapt import learned_modalities

    ds = Dataset.open(ds_dir)
    assert learned_modalities(ds) == ["CT", "MR"]
    ds.update(lambda d: d.meta.__setitem__("model", {"current": "models/v1.pth", "history": [
        {"version": 1, "adopted": True, "path": "models/v1.pth", "modalities": ["CT"]}]}))
    v1 = str(ds.folder / "models" / "v1.pth")
    assert ds.model_for("CT") == v1 and ds.model_for(None) == v1
    assert ds.model_for("MR") is None
    ds.update(lambda d: d.meta["model"]["history"][0].pop("modalities"))  # an older manifest
    assert ds.model_for("MR") == v1
    ds.update(lambda d: d.meta.__setitem__("model", {"current": None, "history": []}))
    # importing over saved work is refused (nothing a person drew is replaced)
    rc, _, err = _run(capsys, "add", ds_dir, PAT1 / FLAIR, "--labels", PAT1 / GT)
    assert rc == 2 and "has saved work already" in err
    rc, text, _ = _run(capsys, "export", ds_dir, out)
    assert rc == 0 and "2 cases" in text
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"]["0"] in ("CT", "MRI")
    values = sorted(meta["labels"].values())
    assert values == list(range(len(values)))  # consecutive, as nnU-Net requires
    # the DICOM case: image and labels on the series' exact grid, voxels and labels kept
    ct = load_volume(CT)
    img = nib.load(str(out / "imagesTr" / "ct1_0000.nii.gz"))
    lab = nib.load(str(out / "labelsTr" / "ct1.nii.gz"))
    for im in (img, lab):
        assert im.shape == ct.shape
        assert np.allclose(im.affine, ct.affine, atol=1e-3)
        assert np.allclose(im.header.get_qform(), ct.affine, atol=1e-3)
    assert np.array_equal(np.asarray(img.dataobj), ct.data)
    from medsam_gui.io.label_import import read_segmentation

    ref_arr = read_segmentation(CT_LABELS, ct).array.astype(int)  # the labels on the CT grid
    got = np.asarray(lab.dataobj).astype(int)
    # renumbered by name, voxel for voxel the same partition of the scan
    assert ((got > 0) == (ref_arr > 0)).all()
    pairs = {(int(a), int(b)) for a, b in zip(ref_arr[ref_arr > 0], got[ref_arr > 0])}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    # the NIfTI case: brats labels kept as they were (first names met get 1..4)
    b = nib.load(str(out / "labelsTr" / f"{pat1}.nii.gz"))
    assert np.array_equal(np.asarray(b.dataobj) > 0, gt1 > 0)
    assert not (tmp_path / "Dataset777_Mixed").joinpath("imagesTr", "x").exists()
    # nothing is overwritten
    rc, _, err = _run(capsys, "export", ds_dir, out)
    assert rc == 2 and "new or empty" in err
    try:  # nnU-Net's own check where it is installed (test_nnunet_integrity says if not)
        from nnunetv2.experiment_planning.verify_dataset_integrity import \
            verify_dataset_integrity
    except ImportError:
        return
    verify_dataset_integrity(str(out), num_processes=1)


def test_nnunet_integrity_check_available():
    """Says, as a skip with its reason, when nnU-Net's own integrity check could not run on
    the export above (nnunetv2 is large and not a dependency)."""
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed here, so its own "
                        "dataset integrity check did not run on the export (the layout, grids "
                        "and labels were checked directly)")


def test_adoption_rule_on_paired_dice():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 120)
    # a clear, consistent gain is adopted
    assert decide(base, base + rng.normal(0.05, 0.02, 120)).adopt
    # no change, a gain below the training noise, or a gain carried by a few slices are not
    assert not decide(base, base).adopt
    assert not decide(base, base + 0.01).adopt
    noisy = base + rng.normal(0.025, 0.3, 120)
    assert not decide(base, noisy).adopt  # mean gain within its own bootstrap spread
    assert not decide([], []).adopt


def test_exclude_patterns_ignore_the_folders_above_the_source(tmp_path, capsys):
    """``--exclude '*seg*'`` drops the label files, not every scan whose absolute path holds
    "seg" (here the data folder's name, through the links); adding an excluded scan again
    takes it back."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, target in (("ct.nii.gz", "example_ct_sm.nii.gz"),
                         ("mr.nii.gz", "example_mr_sm.nii.gz"),
                         ("ct_seg.nii.gz", "example_seg.nii.gz")):
        os.symlink(ABDOMEN / target, scans / name)
    assert "seg" in str((scans / "ct.nii.gz").resolve())
    ds_dir = tmp_path / "study"
    rc, out, _ = _run(capsys, "create", ds_dir, scans, "--exclude", "*seg*")
    assert rc == 0 and "2 cases (1 excluded)" in out
    assert [c.id for c in Dataset.open(ds_dir).active()] == ["ct", "mr"]
    rc, out, _ = _run(capsys, "add", ds_dir, scans / "ct_seg.nii.gz")
    assert rc == 0 and "ct_seg was excluded: taken back" in out
    assert [c.id for c in Dataset.open(ds_dir).active()] == ["ct", "ct_seg", "mr"]


def test_status_into_a_closed_pipe_stops_quietly(tmp_path):
    """`medsam-dataset status --json | head -1`: the reader goes away before the output is
    written; the command stops without a BrokenPipeError traceback."""
    import subprocess
    import sys

    ds_dir = tmp_path / "ds"
    assert main(["create", str(ds_dir), str(PAT1.parent), "--exclude", "*OTMultiClass*"]) == 0
    exe = Path(sys.executable).parent / "medsam-dataset"
    cmd = [str(exe)] if exe.exists() else [
        sys.executable, "-c", "import sys; from medsam_gui.cli import dataset_main as m; "
        "sys.exit(m())"]
    proc = subprocess.Popen(cmd + ["status", str(ds_dir), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the process has started writing (it is still importing)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
