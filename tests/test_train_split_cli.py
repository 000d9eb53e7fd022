"""medsam-train --split slices: one annotated scan trains and validates on blocks of its own
slices, as the training dialog offers, and says plainly that the estimate is optimistic; run as
a user runs it (a subprocess), with the real model on BRATS ground-truth slices."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_training_fixtures import N_TRAIN_SLICES, brats_workspaces, cache_dir

pytestmark = pytest.mark.needs_data


def train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsam_gui.training.train_cli", *args],
                          capture_output=True, text=True, timeout=900)


def test_one_scan_refusals_name_the_flag(capsys):
    from medsam_gui.training.train_cli import main

    ws, other = brats_workspaces()
    assert main([ws, "--dry-run"]) == 2  # the plain split refuses one scan, names the flag
    err = capsys.readouterr().err
    assert "at least 2 volumes" in err and "--split slices" in err
    assert main([ws, "--split", "slices", "--val", other, "--dry-run"]) == 2
    assert "use one or the other" in capsys.readouterr().err
    assert main([ws, "--split", "slices", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "validation: 1 volume(s), 2 slice(s)" in captured.out
    assert "optimistic" in captured.err


def test_one_scan_trains_on_slice_blocks_with_the_warning(tmp_path):
    ws, _other = brats_workspaces()
    out = tmp_path / "one_scan.pth"
    run = train_cli(ws, "--split", "slices", "--epochs", "1", "--max-steps-per-epoch", "1",
                    "--device", "cpu", "--cache-dir", cache_dir(), "--out", str(out))
    assert run.returncode == 0, run.stderr
    # 12 slices: a block of 2 validates; the rest trains, less any within 2 slices of it
    assert "validation: 1 volume(s), 2 slice(s)" in run.stdout
    n_train = int(run.stdout.split("training:   1 volume(s), ")[1].split(" slice")[0])
    assert 8 <= n_train <= N_TRAIN_SLICES - 2
    assert "warning: --split slices" in run.stderr and "optimistic" in run.stderr
    assert "validation Dice before" in run.stdout and out.exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert "slices" in json.dumps(meta)
