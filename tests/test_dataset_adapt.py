"""Between-case learning with its check, on real BRATS cases and the real model: a model
trained on noise labels is never adopted (and leaves nothing behind); the adopted model's
numbers and the JSON line; rollback."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import PAT1, PAT2
from medsam_gui.dataset import Dataset
from medsam_gui.dataset.adapt import AdaptConfig, adapt
from medsam_gui.dataset.cli import main

pytestmark = pytest.mark.needs_data

FLAIR = "Flair_subtrMeanDivStd.nii.gz"
TRAIN_SLICES, HELD_SLICES = 12, 8


def _tumour(pat) -> "tuple[np.ndarray, np.ndarray]":
    """(whole tumour mask, affine)."""
    img = nib.load(str(pat / "OTMultiClass.nii.gz"))
    return np.asarray(img.dataobj) > 0, img.affine


def _slices(mask: np.ndarray, n: int) -> list:
    hits = np.flatnonzero(mask.sum(axis=(0, 1)) >= 80)
    return sorted({int(hits[k]) for k in np.linspace(0, len(hits) - 1, n).round().astype(int)})


def _labels_file(tmp_path, name, mask, affine) -> str:
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(path))
    return str(path)


def _dataset(tmp_path, noise: bool) -> Dataset:
    """Case 1 (pat0001) done with whole-tumour labels (or noise inside the same boxes),
    case 2 (pat0002) done with its true labels, held back.

    Noise: each pixel of the tumour's bounding box is labelled with probability 0.25. (Coin
    flips at 0.5 are not noise to a box-prompted model: Dice loss then teaches "fill the box",
    which beat the base model on compact tumour cores in a first try of this test.)"""
    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.training.seed_workspace import workspace_from_labels

    ds = Dataset.create(tmp_path / "ds")
    cases, _, _ = discover_all([PAT1 / FLAIR, PAT2 / FLAIR])
    c1, c2 = ds.add_cases(cases)
    tum1, aff1 = _tumour(PAT1)
    s1 = _slices(tum1, TRAIN_SLICES)
    if noise:  # each slice: random pixels inside the true tumour's bounding box
        rng = np.random.default_rng(0)
        noisy = np.zeros_like(tum1)
        for k in s1:
            plane = tum1[:, :, k]
            rows, cols = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), k)
            noisy[box] = rng.random(noisy[box].shape) < 0.25
        tum1 = noisy
    workspace_from_labels(c1.image, _labels_file(tmp_path, "c1", tum1, aff1),
                          str(ds.case_dir(c1)), slices=s1)
    tum2, aff2 = _tumour(PAT2)
    workspace_from_labels(c2.image, _labels_file(tmp_path, "c2", tum2, aff2),
                          str(ds.case_dir(c2)), slices=_slices(tum2, HELD_SLICES))
    for c in (c1, c2):
        ds.set_state(c.id, "done")
    return ds


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def test_noise_labels_are_never_adopted(tmp_path, capsys, cache_dir):
    ds = _dataset(tmp_path, noise=True)
    held = ds.cases[1].id
    rc = main(["adapt", str(ds.folder), "--holdout", held, "--cache-dir", cache_dir,
               "--epochs", "6"])
    out, err = capsys.readouterr()
    assert rc == 0
    line = json.loads(out.strip().splitlines()[-1])  # the last line is the JSON
    assert set(line) == {"adopted", "model", "base_dice", "new_dice", "slices"}
    assert line["adopted"] is False and line["model"] is None
    assert line["slices"] == HELD_SLICES
    print(line)
    assert line["new_dice"] < line["base_dice"] + 0.01  # noise taught it nothing useful
    assert "kept the base model: the new one was not better" in err
    saved = Dataset.open(ds.folder)
    assert saved.current_model is None
    assert not list(saved.models_dir.glob("*"))  # the rejected model is not kept
    hist = saved.meta["model"]["history"]
    assert len(hist) == 1 and hist[0]["adopted"] is False and hist[0]["held_back"] == [held]


@pytest.fixture(scope="module")
def backend():
    """The model as the CLI loads it (its embeddings are the ones the tests above cached)."""
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam")


def test_window_learns_when_a_case_is_marked_done_and_rolls_back(qtbot, tmp_path, cache_dir,
                                                                   backend, monkeypatch):
    """Through the window: marking the last case done learns in the background (mark_done
    returns while it runs), the outcome is said as the rule decided it, an adopted model
    becomes the session's model, cancel leaves nothing, one click rolls back."""
    from PyQt5.QtCore import QSettings, Qt

    import medsam_gui.dataset.adapt as adapt_mod
    from medsam_gui.ui.dataset_panel import open_dataset
    from medsam_gui.ui.main_window import MainWindow

    ds = _dataset(tmp_path, noise=False)
    c1, c2 = ds.cases
    ds.set_state(c2.id, "")  # the user finishes it in the window
    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "w.ini"), QSettings.IniFormat),
                   precision="channels_last")
    w.confirm_close = False
    w.use_disk_cache = False
    w.backend = backend
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    panel = w.dataset_panel
    panel.adapt_config = AdaptConfig(epochs=6, holdout=[c2.id], cache_dir=cache_dir)
    with qtbot.waitSignal(panel.case_opened, timeout=60000) as opened:
        open_dataset(w, str(ds.folder))  # opens the first case not done
    assert opened.args == [c2.id] and panel.unreviewed() == 0
    with qtbot.waitSignal(panel.learned, timeout=600000) as got:
        assert panel.mark_done()
        assert panel.learning  # in the background: the window went on at once
        assert panel.learn_bar.isVisible() and panel.cancel_learn_button.isVisible()
    res = got.args[0]
    d = res.decision
    print(f"base {res.base_dice:.4f} new {res.new_dice:.4f} gain {d.gain:+.4f} "
          f"lower {d.lower:+.4f} adopted {res.adopted}")
    assert res.slices == HELD_SLICES and res.held_back == [c2.id] and not res.warnings
    assert res.adopted == d.adopt == (d.gain >= adapt_mod.MIN_GAIN and d.lower > 0)
    assert d.gain == pytest.approx(res.new_dice - res.base_dice, abs=1e-9)
    assert panel.learn_label.text() == res.message and not panel.learn_bar.isVisible()
    if not res.adopted:
        assert res.message.startswith("kept the base model: the new one was not better (Dice ")
        assert Dataset.open(ds.folder).current_model is None
        assert w.backend is backend and not panel.rollback_button.isEnabled()
        # cancelled at once: nothing changes
        with qtbot.waitSignal(panel.learn_failed, timeout=120000) as failed:
            panel.learn()
            panel.cancel_learning()
        assert failed.args[0].startswith("cancelled") and "Not learned" in \
            panel.learn_label.text()
        # the adoption path of the window (the rule itself is tested above and here): a
        # candidate the rule is told to take
        real = adapt_mod.decide
        monkeypatch.setattr(adapt_mod, "decide", lambda *a, **k: adapt_mod.Decision(
            True, real(*a, **k).gain, 0.0, "taken for this test"))
        panel.adapt_config = AdaptConfig(epochs=1, holdout=[c2.id], cache_dir=cache_dir)
        with qtbot.waitSignal(panel.learned, timeout=600000) as got:
            qtbot.mouseClick(panel.learn_button, Qt.LeftButton)
        res = got.args[0]
        assert res.adopted
    assert res.message.startswith(f"model v{res.version} adopted: Dice ")
    assert f"on {HELD_SLICES} of your reviewed slices" in res.message
    saved = Dataset.open(ds.folder)
    assert saved.current_model == res.model and res.model.endswith(f"v{res.version}.pth")
    meta = json.loads(open(res.model[:-4] + ".json").read())
    assert meta["dataset"]["version"] == res.version
    # the session uses the adopted model
    qtbot.waitUntil(lambda: w.backend is not backend and w.session is not None
                    and w.session.backend is w.backend, timeout=120000)
    assert w.backend.checkpoint == res.model
    assert f"model v{res.version}" in panel.title.text() and panel.rollback_button.isEnabled()
    adopted_backend = w.backend
    qtbot.mouseClick(panel.rollback_button, Qt.LeftButton)
    assert panel.learn_label.text() == "Rolled back: now using the base model."
    assert Dataset.open(ds.folder).current_model is None
    qtbot.waitUntil(lambda: w.backend is not adopted_backend and w.session is not None
                    and w.session.backend is w.backend, timeout=120000)
    assert not str(w.backend.checkpoint).startswith(str(ds.models_dir))
    assert not panel.rollback_button.isEnabled()
    w.shutdown()


def test_one_done_case_holds_back_slice_blocks(tmp_path, cache_dir):
    ds = _dataset(tmp_path, noise=False)
    ds.set_state(ds.cases[1].id, "")
    one = adapt(ds, AdaptConfig(epochs=1, cache_dir=cache_dir))
    assert one.held_back == [f"{ds.cases[0].id} (slice blocks)"]
    assert any("only one done case" in w for w in one.warnings)
    assert one.decision is not None and one.adopted == one.decision.adopt
    assert one.message.endswith(one.warnings[-1])
    ds.reload()  # the step is recorded with the modality it learned from (BRATS FLAIR: MR)
    assert ds.meta["model"]["history"][-1]["modalities"] == ["MR"]
