"""Model input (engine.intensity): the rule per input kind on real scans, the user's choice of
modality and window, its place in cache keys and provenance, bad volumes, and Dice against
ground truth with ground-truth boxes on every volume kind in ../shared/data that has labels.

Thresholds come from benchmarks/bench_model_input.py (LiteMedSAM, CPU): BRATS FLAIR whole
tumour 0.859 / 0.850 (upstream's > 0 rule: 0.735 / 0.829), T1c tumour core 0.944 / 0.705
(0.764 / 0.484), abdominal MR organs 0.75-0.87, CT organs 0.89-0.97, vertebra T12 0.561 in
the soft-tissue window and 0.707 in the bone window.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.engine import EmbeddingCache, ModelInput, ModelInputError, Session
from medsam_gui.engine.evaluate import gt_box_dice, mean, pick_slices
from medsam_gui.engine.intensity import CT_RAW_OFFSET, resolve
from medsam_gui.volume import Volume

from conftest import ABDOMEN, DICOM, MNI, PAT1, PAT2
from test_engine_session import StubBackend

CT_DICOM = DICOM / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"


def load(path):
    from medsam_gui.io import load_volume

    return load_volume(path)


def brats(pat, seq="Flair"):
    return load(pat / f"{seq}_subtrMeanDivStd.nii.gz")


def brats_truth(pat, labels=(1, 2, 3, 4)):
    return np.isin(np.asarray(nib.load(str(pat / "OTMultiClass.nii.gz")).dataobj), labels)


def on_grid(label_path, volume) -> np.ndarray:
    """A label map brought onto the volume's voxel grid through the two affines."""
    img = nib.load(str(label_path))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.io_orientation(volume.affine))
    arr = nib.orientations.apply_orientation(np.asarray(img.dataobj), ornt)
    assert arr.shape == volume.shape
    return arr


# ---------------------------------------------------------------- the rule per input kind


@pytest.mark.needs_data
def test_zscored_mr_keeps_the_brain_visible():
    """BRATS: z-scored, background a constant (the minimum). Upstream's > 0 rule clips the
    negative brain to black (46 % of the brain mask); the foreground rule keeps it."""
    vol = brats(PAT1)
    brain = np.asarray(nib.load(str(PAT1 / "brainmask.nii.gz")).dataobj) > 0.5
    t = resolve(vol)
    assert t.rule == "foreground-percentile" and t.background == float(vol.data.min())
    img = t.apply(vol.data)
    assert (img[brain] == 0).mean() < 0.02
    assert (img[~brain] == 0).mean() > 0.99
    d = vol.data
    lo = np.percentile(d[d > 0], 0.5)
    assert (d[brain] <= lo).mean() > 0.4  # upstream shows 46 % of the brain black


@pytest.mark.needs_data
def test_background_zero_or_constant_scale_and_shift_give_one_image():
    """The same z-scored scan with background 0, background = min, scaled into a tiny float
    range (1e-6) or shifted gives the same model image: the rule depends on content only."""
    vol = brats(PAT2)
    ref = resolve(vol).apply(vol.data).astype(int)
    bg = vol.data == vol.data.min()
    zero_bg = vol.data.copy()
    zero_bg[bg] = 0.0
    variants = {"bg 0": zero_bg, "tiny": (vol.data.astype(np.float64) * 1e-6).astype(np.float32),
                "shift": vol.data + np.float32(100.0)}
    for name, data in variants.items():
        other = Volume(data, vol.affine, "MR")
        img = resolve(other).apply(data).astype(int)
        assert np.abs(img - ref).max() <= 1, name
        assert (img != ref).mean() < 1e-3, name


@pytest.mark.needs_data
def test_ct_stored_without_rescale_is_recognised_and_shown_in_hu(tmp_path):
    """The CT series' stored values (HU + 1024, uint16) written to a NIfTI without scl_inter:
    guessed CT, shifted back to HU, the same model image as the rescaled series."""
    hu = load(CT_DICOM)
    raw = (hu.data.astype(np.int32) - int(CT_RAW_OFFSET)).astype(np.uint16)
    path = tmp_path / "ct_raw.nii.gz"
    nib.save(nib.Nifti1Image(raw, hu.affine), str(path))
    vol = load(path)
    assert vol.modality == "CT" and vol.data.min() >= 0
    t = resolve(vol)
    assert t.offset == CT_RAW_OFFSET and t.modality_source == "guess"
    assert np.array_equal(t.apply(vol.data), resolve(hu).apply(hu.data))
    lung = resolve(vol, ModelInput.preset("lung"))
    assert np.array_equal(lung.apply(vol.data), resolve(hu, ModelInput.preset("lung")).apply(hu.data))
    assert resolve(hu).offset == 0.0  # a CT in HU is left alone


@pytest.mark.needs_data
@pytest.mark.parametrize("path", [DICOM / "mr_brain_sag_t1_siemens_HFS",
                                  DICOM / "mr_brain_ax30_dwi_b0_toshiba",
                                  ABDOMEN / "example_mr_sm.nii.gz",
                                  MNI / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                  PAT1 / "Flair_subtrMeanDivStd.nii.gz"],
                         ids=["raw-T1", "raw-DWI", "raw-abdomen", "MNI-uint8", "z-scored"])
def test_mr_and_templates_are_not_guessed_ct(path):
    vol = load(path)
    assert vol.modality == "MR"
    t = resolve(vol)
    assert t.rule == "foreground-percentile"
    assert t.background == (float(vol.data.min()) if "Flair" in path.name else 0.0)
    img = t.apply(vol.data)
    assert img.min() == 0 and img.max() == 255


@pytest.mark.needs_data
def test_modality_override_changes_rule_key_and_provenance():
    mni = load(MNI / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    auto, ct = resolve(mni), resolve(mni, ModelInput("CT"))
    assert (auto.modality, auto.modality_source) == ("MR", "guess")
    assert (ct.rule, ct.modality, ct.modality_source) == ("ct-window", "CT", "user")
    assert auto.cache_key != ct.cache_key
    ct_vol = load(ABDOMEN / "example_ct_sm.nii.gz")
    as_mr = resolve(ct_vol, ModelInput("MR"))
    assert as_mr.rule == "foreground-percentile" and as_mr.modality_source == "user"
    assert resolve(ct_vol).summary().startswith("CT (guessed) · soft tissue L 40 W 400")


# -------------------------------------------------------------------- undefined inputs


def test_constant_empty_and_nonfinite_volumes_have_clear_messages():
    aff = np.eye(4)
    for data, words in ((np.full((4, 5, 6), 7.0, np.float32), "constant"),
                        (np.full((4, 5, 6), np.nan, np.float32), "no finite voxel")):
        with pytest.raises(ModelInputError, match=words):
            resolve(Volume(data, aff, "MR"))
    ct = np.full((4, 5, 6), -1000, np.int16)
    ct[1, 1, 1] = -990
    with pytest.raises(ModelInputError, match="soft-tissue window"):
        resolve(Volume(ct, aff, "CT"))
    with pytest.raises(ModelInputError, match="model window"):
        resolve(Volume(ct, aff, "CT"), ModelInput.preset("bone"))
    with pytest.raises(ValueError, match="width"):
        ModelInput("CT", (40, 0))
    with pytest.raises(ValueError, match="modality"):
        ModelInput("PET")


def test_one_foreground_value_and_nan_voxels_have_defined_images():
    mask = np.zeros((8, 8, 8), np.float32)
    mask[2:5, 2:5, 2:5] = 1.0
    img = resolve(Volume(mask, np.eye(4), "MR")).apply(mask)
    assert set(np.unique(img)) == {0, 255} and (img == 255).sum() == 27
    noisy = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    noisy[0, 0, 0] = noisy[3, 3, 3] = np.nan
    noisy[4, 4, 4] = np.inf
    t = resolve(Volume(noisy, np.eye(4), "MR"))
    assert np.isfinite(t.lo) and np.isfinite(t.hi)
    img = t.apply(noisy)
    assert img[3, 3, 3] == 0 and img[4, 4, 4] == 255


# --------------------------------------------------------------- session, cache, CLI


def test_session_keys_embeddings_by_model_input_and_switches_back_without_encoding():
    data = np.random.default_rng(1).integers(-1000, 1500, size=(6, 5, 4)).astype(np.int16)
    vol = Volume(data, np.eye(4), "CT")
    backend = StubBackend()
    session = Session(vol, backend, EmbeddingCache())
    pred = session.predict("axial", 1, (0, 0, 3, 3))
    assert pred.model_input["rule"] == "ct-window" and pred.model_input["level"] == 40
    soft = session.key("axial", 1)
    session.set_model_input(ModelInput.preset("lung"))
    assert session.key("axial", 1) != soft and not session.is_cached("axial", 1)
    assert session.predict("axial", 1, (0, 0, 3, 3)).model_input["name"] == "lung"
    assert len(backend.encoded) == 2
    session.set_model_input(ModelInput())
    assert session.is_cached("axial", 1)
    session.predict("axial", 1, (0, 0, 3, 3))
    assert len(backend.encoded) == 2  # switching back reuses the first embedding
    with pytest.raises(ModelInputError):  # a window no voxel reaches changes nothing
        session.set_model_input(ModelInput("CT", (5000, 10)))
    assert session.model_input == ModelInput() and session.key("axial", 1) == soft


@pytest.mark.needs_data
def test_segment_cli_modality_and_window(tmp_path, capsys):
    from medsam_gui.engine.segment_cli import main

    out = tmp_path / "l.nii.gz"
    flair = str(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    assert main([flair, "--box", "2", "70", "60", "60", "120", "120", "--modality", "PET",
                 "--out", str(out)]) == 2
    assert "choose CT, MR or auto" in capsys.readouterr().err
    for bad in (("40", "0"), ("nan", "400")):
        assert main([flair, "--box", "2", "70", "60", "60", "120", "120", "--window", *bad,
                     "--out", str(out)]) == 2
        assert "--window: a window needs a finite level and a width > 0" in capsys.readouterr().err
    assert main([flair, "--box", "2", "70", "60", "60", "120", "120", "--modality", "CT",
                 "--window", "5000", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no voxel lies inside the model window" in err and flair in err and not out.exists()
    ct = str(ABDOMEN / "example_ct_sm.nii.gz")
    assert main([ct, "--box", "2", "15", "40", "30", "80", "70", "--window", "400", "1800",
                 "--out", str(out)]) == 0
    assert "model input: CT (guessed) · command line L 400 W 1800" in capsys.readouterr().err
    assert nib.load(str(out)).shape == (122, 101, 30)


# ------------------------------------------------------- Dice against ground truth


@pytest.fixture(scope="module")
def backend():
    from medsam_gui.engine import load_backend

    return load_backend(device="cpu")


@pytest.fixture(scope="module")
def cache():
    return EmbeddingCache(max_bytes=1 << 30)


def gt_dice(vol, truth, backend, cache, choice=None, n=8, axis="axial"):
    session = Session(vol, backend, cache, choice)
    return gt_box_dice(session, axis, truth, pick_slices(vol.geometry(axis), truth, n))


@pytest.mark.needs_data
def test_brats_flair_whole_tumour(backend, cache):
    scores = []
    for pat in (PAT1, PAT2):
        scores += gt_dice(brats(pat), brats_truth(pat), backend, cache)
    assert len(scores) >= 16
    assert mean(scores) >= 0.80, scores  # measured 0.855; issue floor 0.78


@pytest.mark.needs_data
def test_brats_t1c_tumour_core(backend, cache):
    scores = []
    for pat in (PAT1, PAT2):
        scores += gt_dice(brats(pat, "T1c"), brats_truth(pat, (1, 3, 4)), backend, cache)
    assert len(scores) >= 16
    assert mean(scores) >= 0.77, scores  # measured 0.825 (upstream's rule: 0.624)


@pytest.mark.needs_data
def test_abdomen_mr_and_ct_organs(backend, cache):
    """Raw MR and CT in HU (NIfTI, 3 mm); floors about 0.05 below the measured means."""
    floors = {"example_mr_sm.nii.gz": ("example_seg_mr.nii.gz", {5: 0.82, 1: 0.70, 2: 0.74}),
              "example_ct_sm.nii.gz": ("example_seg.nii.gz", {5: 0.84, 1: 0.87, 2: 0.85})}
    for name, (seg_name, organs) in floors.items():
        vol = load(ABDOMEN / name)
        seg = np.asarray(nib.load(str(ABDOMEN / seg_name)).dataobj)
        for label, floor in organs.items():
            score = mean(gt_dice(vol, seg == label, backend, cache, n=6))
            assert score >= floor, (name, label, score)


@pytest.mark.needs_data
def test_dicom_ct_organs_and_a_vertebra_in_the_bone_window(backend, cache):
    """JPEG 2000 CT with its organ label map: organs in the automatic (soft-tissue) input,
    and vertebra T12, which that window saturates, better when the model sees the bone
    window (measured 0.561 -> 0.707 over 8 slices)."""
    vol = load(CT_DICOM)
    lab = on_grid(CT_LABELS, vol)
    for label, floor in ((5, 0.92), (1, 0.90)):  # liver 0.972, spleen 0.968
        assert mean(gt_dice(vol, lab == label, backend, cache, n=6)) >= floor, label
    vertebra = lab == 32
    soft = gt_dice(vol, vertebra, backend, cache)
    bone = gt_dice(vol, vertebra, backend, cache, ModelInput.preset("bone"))
    assert mean(bone) >= mean(soft) + 0.08, (soft, bone)
    assert mean(bone) >= 0.65


@pytest.mark.needs_data
def test_foreground_rule_beats_upstream_rule_on_zscored_mr(backend, cache):
    """Side by side on the same slices: upstream's > 0 percentiles against ours (BRATS T1c
    pat0002 tumour core, measured 0.484 -> 0.705)."""
    from medsam_gui.engine.intensity import upstream_transform

    vol, truth = brats(PAT2, "T1c"), brats_truth(PAT2, (1, 3, 4))
    upstream = Session(vol, backend, cache)
    upstream.use_transform(upstream_transform(vol))
    slices = pick_slices(vol.geometry("axial"), truth, 8)
    old = mean(gt_box_dice(upstream, "axial", truth, slices))
    new = mean(gt_box_dice(Session(vol, backend, cache), "axial", truth, slices))
    assert new >= old + 0.1, (old, new)
