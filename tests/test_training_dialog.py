"""Training dialog (offscreen): counts, a tiny real run with a live plot, use the model, cancel."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("pytestqt")
from medsam_gui.ui.training_dialog import TrainingDialog  # noqa: E402
from test_training_fixtures import (  # noqa: E402
    N_TRAIN_SLICES, N_VAL_SLICES, base_backend, brats_workspaces, model_params, shared_cache)

pytestmark = pytest.mark.needs_data


@pytest.fixture
def dialog(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAM_MODELS_DIR", str(tmp_path / "models"))
    w1, w2 = brats_workspaces()
    dlg = TrainingDialog([w1, w2], base_backend(), cache=shared_cache())
    qtbot.addWidget(dlg)
    dlg.show()
    # hold out pat0002 (6 slices): the default draw depends on the volumes' content hashes
    # and may hold out pat0001, leaving too few slices to train on
    dlg.val_combo.setCurrentIndex(dlg.val_combo.findData(w2))
    qtbot.waitUntil(lambda: dlg.start_btn.isEnabled(), timeout=60_000)
    assert dlg.counts.text().startswith("Training:")  # Start comes on only with the counts
    return dlg


def test_counts_run_plot_and_use(dialog, qtbot, tmp_path):
    assert f"Training: 1 volume(s), {N_TRAIN_SLICES} slice(s)" in dialog.counts.text()
    assert f"Validation: 1 volume(s), {N_VAL_SLICES} slice(s)" in dialog.counts.text()
    assert dialog.label_list.count() == 1 and "lesion" in dialog.label_list.item(0).text()
    assert dialog.epochs.toolTip() and dialog.lr.value() == pytest.approx(1e-4)
    # hold out pat0002 explicitly; tiny run
    dialog.val_combo.setCurrentIndex(dialog.val_combo.findData(brats_workspaces()[1]))
    qtbot.waitUntil(lambda: dialog.start_btn.isEnabled(), timeout=60_000)
    dialog.epochs.setValue(2)
    qtbot.mouseClick(dialog.start_btn, 1)
    assert dialog._thread is not None and dialog.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=600_000)
    r = dialog.result
    assert not r.cancelled and os.path.exists(r.checkpoint)
    assert os.path.dirname(r.checkpoint) == str(tmp_path / "models")
    xs, ys = dialog.dice_curve.getData()
    assert list(xs) == [e["epoch"] for e in r.epochs] and len(xs) >= 1
    assert len(dialog.loss_curve.getData()[0]) == len(xs)
    assert "before" in dialog.outcome.text() and "after" in dialog.outcome.text()
    assert dialog.use_btn.isEnabled()
    with qtbot.waitSignal(dialog.model_ready, timeout=5000) as sig:
        qtbot.mouseClick(dialog.use_btn, 1)
    assert sig.args == [r.checkpoint]


def test_cancel_leaves_model_and_disk_untouched(dialog, qtbot, tmp_path):
    before = model_params(base_backend())
    dialog.epochs.setValue(5)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.progress.maximum() > 1, timeout=120_000)
    qtbot.mouseClick(dialog.cancel_btn, 1)
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=120_000)
    assert dialog.result.cancelled and "cancelled" in dialog.status.text()
    assert not dialog.use_btn.isEnabled()
    models = tmp_path / "models"
    assert not models.exists() or not any(models.iterdir())
    for k, v in model_params(base_backend()).items():
        assert torch.equal(v, before[k])
    assert dialog.start_btn.isEnabled()


def test_too_little_data_disables_start(qtbot, tmp_path):
    w1, _ = brats_workspaces()
    dlg = TrainingDialog([w1], base_backend(), cache=shared_cache())
    qtbot.addWidget(dlg)
    # one annotated scan is no longer refused: blocks of its slices, with a plain warning
    qtbot.waitUntil(lambda: "optimistic" in dlg.counts.text(), timeout=60_000)
    assert dlg.config().split == "slices"
    dlg.mode.setCurrentIndex(1)
    assert "slow" in dlg.warning.text() and dlg.lr.value() == pytest.approx(1e-5)
