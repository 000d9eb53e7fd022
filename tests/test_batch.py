"""medsam-segment --batch on real BRATS cases and the real model: one corrupt scan and one
malformed entry fail alone (exit code 1, named in the summary) while the good cases are
written and match the ground truth; a second run resumes (written cases skipped); 2 worker
processes and a local 2-worker Dask cluster write the same labels as one worker; with
--workers, a worker process that dies (killed by a signal, or exiting in a native crash) costs
only its case, retried once in a fresh worker (through the CLI in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from conftest import ABDOMEN, PAT1, PAT2
from medsam_gui.engine.segment_cli import main

pytestmark = pytest.mark.needs_data

FLAIR = "Flair_subtrMeanDivStd.nii.gz"


def _truth_box(pat) -> "tuple[np.ndarray, int, dict]":
    """(whole tumour mask, its largest axial slice, a box entry around it)."""
    truth = np.asarray(nib.load(str(pat / "OTMultiClass.nii.gz")).dataobj) > 0
    k = int(truth.sum(axis=(0, 1)).argmax())
    rows, cols = np.flatnonzero(truth[:, :, k].any(1)), np.flatnonzero(truth[:, :, k].any(0))
    box = [int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])]
    return truth, k, {"axis": 2, "slice": k, "box": box, "label": 1}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """A manifest: pat0001 (boxes file), a corrupt scan, a malformed entry, pat0002 (inline
    boxes)."""
    root = tmp_path_factory.mktemp("batch")
    truth1, k1, box1 = _truth_box(PAT1)
    truth2, k2, box2 = _truth_box(PAT2)
    (root / "boxes1.json").write_text(json.dumps([box1]))
    corrupt = root / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + os.urandom(4000))  # gzip magic, then noise
    entries = [
        {"image": str(PAT1 / FLAIR), "boxes": "boxes1.json", "out": "out/pat1.nii.gz"},
        {"image": "corrupt.nii.gz", "boxes": [box2], "out": "out/corrupt.nii.gz"},
        {"image": str(PAT2 / FLAIR), "out": "out/missing-boxes.nii.gz"},
        {"image": str(PAT2 / FLAIR), "boxes": [box2], "out": "out/pat2.nii.gz"},
    ]
    (root / "out").mkdir()
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(entries))
    return {"root": root, "manifest": manifest, "truth": {"pat1": (truth1, k1),
                                                          "pat2": (truth2, k2)}}


def _labels(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj) > 0


def test_one_bad_case_never_stops_the_rest_and_a_second_run_resumes(cases, capsys):
    root, manifest = cases["root"], cases["manifest"]
    report = root / "report.json"
    rc = main(["--batch", str(manifest), "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 1  # some failed
    outcomes = json.loads(report.read_text())
    assert [o["status"] for o in outcomes] == ["done", "failed", "failed", "done"]
    assert "corrupt.nii.gz" in outcomes[1]["error"]
    assert "missing 'boxes'" in outcomes[2]["error"]
    assert "2 written, 0 skipped (already written), 2 failed, of 4 cases" in err
    assert "failed: case 1 (" in err and "failed: case 2 (" in err
    for name in ("pat1", "pat2"):
        truth, k = cases["truth"][name]
        got = _labels(root / "out" / f"{name}.nii.gz")
        assert got.shape == truth.shape
        dice = _dice(got[:, :, k], truth[:, :, k])
        print(name, f"Dice {dice:.3f} on slice {k}")
        assert dice > 0.75
        assert not got[:, :, k + 5].any()  # one box, one slice (no --propagate)
    assert not (root / "out" / "corrupt.nii.gz").exists()
    assert not [f for f in os.listdir(root / "out") if f.startswith("corrupt")]
    # resume: the written cases are skipped (not rewritten), the bad ones fail again
    stamps = {n: os.stat(root / "out" / f"{n}.nii.gz").st_mtime_ns for n in ("pat1", "pat2")}
    rc = main(["--batch", str(manifest), "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 1
    assert [o["status"] for o in json.loads(report.read_text())] == ["skipped", "failed",
                                                                     "failed", "skipped"]
    assert "0 written, 2 skipped (already written), 2 failed" in err
    assert stamps == {n: os.stat(root / "out" / f"{n}.nii.gz").st_mtime_ns
                      for n in ("pat1", "pat2")}


def test_manifest_errors_exit_2_before_any_case(tmp_path, capsys):
    bad = tmp_path / "m.json"
    bad.write_text('{"image": "x"}')
    assert main(["--batch", str(bad)]) == 2
    assert "must hold a JSON list of cases" in capsys.readouterr().err
    same = [{"image": "a.nii.gz", "boxes": [], "out": "o.nii.gz"}] * 2
    bad.write_text(json.dumps(same))
    assert main(["--batch", str(bad)]) == 2
    assert "cases 0 and 1 both write" in capsys.readouterr().err
    bad.write_text(json.dumps(same[:1]))
    assert main(["--batch", str(bad), "--box", "2", "3", "1", "1", "9", "9"]) == 2
    assert "--box is given per case" in capsys.readouterr().err


def _good_manifest(cases, tmp_path) -> str:
    entries = json.loads(cases["manifest"].read_text())
    keep = [dict(e, out=str(tmp_path / os.path.basename(e["out"])),
                 boxes=e["boxes"] if isinstance(e["boxes"], list)
                 else str(cases["root"] / e["boxes"])) for e in entries if "pat" in e["out"]]
    path = tmp_path / "good.json"
    path.write_text(json.dumps(keep))
    return str(path)


@pytest.fixture(scope="module")
def one_worker(cases, tmp_path_factory):
    """The good cases run in this process with the precision the workers use (channels_last):
    what several workers must reproduce. (The first test's outputs ran on ``auto``, which on a
    CPU with bf16 units is a bf16 encoder and decoder, another runtime.)"""
    out = tmp_path_factory.mktemp("one-worker")
    rc = main(["--batch", _good_manifest(cases, out), "--precision", "channels_last"])
    assert rc == 0
    return out


def _same_as_one_worker(cases, one_worker, tmp_path) -> None:
    for name in ("pat1", "pat2"):
        truth, k = cases["truth"][name]
        one = _labels(one_worker / f"{name}.nii.gz")
        got = _labels(tmp_path / f"{name}.nii.gz")
        assert _dice(got, one) > 0.995 and _dice(got[:, :, k], truth[:, :, k]) > 0.75


def test_two_worker_processes(cases, one_worker, tmp_path, capsys):
    if not (cases["root"] / "out" / "pat1.nii.gz").exists():
        pytest.skip("needs the one-worker outputs of the test above")
    rc = main(["--batch", _good_manifest(cases, tmp_path), "--workers", "2",
               "--precision", "channels_last"])  # no OpenVINO compile per process
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "2 written, 0 skipped (already written), 0 failed, of 2 cases" in err
    assert "(2 workers on this machine)" in err
    _same_as_one_worker(cases, one_worker, tmp_path)


def test_local_dask_cluster_of_two_workers(cases, one_worker, tmp_path, capsys):
    pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is not "
                        "installed: pip install 'medsam-gui[cluster]'")
    if not (cases["root"] / "out" / "pat1.nii.gz").exists():
        pytest.skip("needs the one-worker outputs of the first test")
    environ = dict(os.environ)
    rc = main(["--batch", _good_manifest(cases, tmp_path), "--cluster", "local:2",
               "--precision", "channels_last"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert dict(os.environ) == environ  # Dask sets OMP_NUM_THREADS=1 for its workers
    assert "2 written, 0 skipped (already written), 0 failed, of 2 cases" in err
    assert "a local Dask cluster (2 processes)" in err
    _same_as_one_worker(cases, one_worker, tmp_path)


# The CLI with its case runner wrapped: a case whose output is named "dies-*" ends its worker
# process each time (os._exit, as a native crash would); one named "killed-once-*" is killed by
# SIGKILL (as kill -9 or the out-of-memory killer would) the first time only. Spawned workers
# run this script's top level too, so the wrap reaches them.
CRASHING_CLI = textwrap.dedent("""
    import os, signal, sys
    from medsam_gui.engine import segment_cli

    _run = segment_cli.run

    def run(args, backend=None):
        name = os.path.basename(args.out)
        if name.startswith("dies-"):
            os._exit(3)
        marker = args.out + ".was-killed"
        if name.startswith("killed-once-") and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return _run(args, backend=backend)

    segment_cli.run = run
    if __name__ == "__main__":
        sys.exit(segment_cli.main())
""")


def test_a_dying_worker_costs_only_its_case_retried_once(tmp_path):
    """Two workers; of four small abdominal cases one kills its worker every time and one the
    first time: the first is failed after one retry, the rest are written and right; a second
    run skips the written ones."""
    scans = {"ct": (ABDOMEN / "example_ct_sm.nii.gz", ABDOMEN / "example_seg.nii.gz"),
             "mr": (ABDOMEN / "example_mr_sm.nii.gz", ABDOMEN / "example_seg_mr.nii.gz")}
    truth = {}
    for key, (_, seg) in scans.items():
        liver = np.asarray(nib.load(str(seg)).dataobj) == 5
        truth[key] = (liver,) + _truth_box_of(liver)
    plan = [("ct", "ok-ct"), ("ct", "dies-ct"), ("mr", "killed-once-mr"), ("mr", "ok-mr")]
    entries = [{"image": str(scans[k][0]), "boxes": [truth[k][2]], "out": f"{name}.nii.gz"}
               for k, name in plan]
    (tmp_path / "m.json").write_text(json.dumps(entries))
    (tmp_path / "cli.py").write_text(CRASHING_CLI)
    cmd = [sys.executable, str(tmp_path / "cli.py"), "--batch", str(tmp_path / "m.json"),
           "--workers", "2", "--report", str(tmp_path / "r.json"), "--precision",
           "channels_last"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr  # some failed, the batch ran to its end
    report = json.loads((tmp_path / "r.json").read_text())
    assert [(o["status"], o["attempts"]) for o in report] == [
        ("done", 1), ("failed", 2), ("done", 2), ("done", 1)], run.stderr
    assert "died twice on this case (it exited with code 3)" in report[1]["error"]
    assert "case 1: the worker process died (it exited with code 3); running it again" \
        in run.stderr
    assert "case 2: the worker process died (killed by SIGKILL" in run.stderr
    assert "3 written, 0 skipped (already written), 1 failed, of 4 cases" in run.stderr
    for (key, name) in [plan[0], plan[2], plan[3]]:
        liver, k, _box = truth[key]
        got = _labels(tmp_path / f"{name}.nii.gz")
        dice = _dice(got[:, :, k], liver[:, :, k])
        print(name, f"liver Dice {dice:.3f} on slice {k}")
        assert dice > 0.8
    left = sorted(f for f in os.listdir(tmp_path) if f.startswith("dies-"))
    assert left == [], left  # no output, no temporary file of the crashed case
    # resume: the written cases are skipped; the dying one runs (and dies) again, alone
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr
    assert [o["status"] for o in json.loads((tmp_path / "r.json").read_text())] == [
        "skipped", "failed", "skipped", "skipped"]
    assert "0 written, 3 skipped (already written), 1 failed, of 4 cases" in run.stderr


def _truth_box_of(mask: np.ndarray) -> "tuple[int, dict]":
    """(the mask's largest axial slice, a box entry around it there)."""
    k = int(mask.sum(axis=(0, 1)).argmax())
    rows, cols = np.flatnonzero(mask[:, :, k].any(1)), np.flatnonzero(mask[:, :, k].any(0))
    box = [int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])]
    return k, {"axis": 2, "slice": k, "box": box, "label": 1}
