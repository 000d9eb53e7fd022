"""Post-training int8 quantisation of the LiteMedSAM image encoder (NNCF on OpenVINO).

The calibration set is built from the bundled demo volume (``resources/demo``, one BRATS FLAIR
case), so a user's machine can quantise without any other data: evenly spread slices of its
three views, through the same model input as every scan (``intensity.resolve`` +
``preprocess.lite_input``). The data it is scored on in ``benchmarks/bench_runtime_accuracy.py``
and the tests never includes that case (BRATS is scored on pat0002 only).

The quantised model is saved beside the f32 one (``ov_encoder.cache_dir``) under a name that
holds the encoder's weights digest, the input size, the OpenVINO version and a digest of the
quantisation settings (NNCF version, preset, model type, calibration inputs), so new weights,
new settings or a new library quantise again and never reuse a stale file.

Whether ``auto`` uses it: ``runtime.INT8_WITHIN_TOLERANCE`` (ground-truth Dice, measured) and a
latency measurement on the machine (``faster_than_f32``), remembered in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from medsam_gui.errors import MedsamError

log = logging.getLogger(__name__)

# model_type "transformer" keeps softmax / layer norm / GELU inputs in float and applies
# SmoothQuant; "mixed" quantises activations asymmetrically (better for GELU outputs)
# bias_correction: "fast", "full" (minutes on 2 cores) or "none"
# ignore "convolutions": the convolutions (patch embedding, the MBConv stage, the patch
# merging and the blocks' depthwise convolutions) stay in float; only the matrix products of
# the transformer blocks (attention, MLP) are int8. Measured (bench_runtime_accuracy.py, AMD
# EPYC, AVX-512 VNNI/BF16): every layer int8, ground-truth-box Dice − f32 per kind down to
# −0.112 (BRATS T1c), −0.054 (DICOM CT), −0.032 (abdominal MR), 6 slices a structure; the
# convolutions in float, within 0.01 on every kind (worst −0.004, T1c; 16 slices a
# structure); the matrix products in float and the convolutions int8, as low as all int8.
SETTINGS: Dict[str, object] = {"preset": "mixed", "model_type": "transformer",
                               "slices": 12, "bias_correction": "fast",
                               "ignore": "convolutions"}
IGNORED_TYPES = {"convolutions": ["Convolution", "GroupConvolution"], "": []}
# "faster" means at most this fraction of the baseline's latency: a 2-core machine shared with
# other work measured int8 within 1 % of f32 both ways on AVX2, and noise must not decide
FASTER = 0.9


def nncf_missing() -> Optional[str]:
    """Why NNCF cannot quantise here, or None."""
    try:
        import nncf  # noqa: F401
    except Exception as exc:  # ImportError, or a broken installation
        return (f"the nncf package cannot be imported ({type(exc).__name__}: {exc}); "
                "install medsam-gui[int8]")
    return None


def calibration_inputs(n: int, input_size: int = 256,
                       volume_path: Optional[Path] = None) -> List[np.ndarray]:
    """``n`` (1, 3, S, S) float32 encoder inputs from ``volume_path`` (default: the bundled
    demo volume): slices spread evenly over the middle 80 % of the axial, coronal and sagittal
    views (every third one in each), as the model sees them."""
    from medsam_gui.engine import preprocess as pp
    from medsam_gui.engine.intensity import resolve
    from medsam_gui.io import load_volume
    from medsam_gui.resources import demo_volume_path

    if input_size != 256:
        raise MedsamError(f"int8 quantisation is set up for LiteMedSAM (256² input), not a "
                          f"{input_size}² encoder")
    vol = load_volume(str(volume_path or demo_volume_path()))
    transform = resolve(vol)
    axes = ("axial", "coronal", "sagittal")
    out = []
    for i in range(n):
        axis = axes[i % len(axes)]
        count = vol.n_slices(axis)
        per_axis = (n - 1 - i % len(axes)) // len(axes) + 1
        j = i // len(axes)
        k = int(round(count * (0.1 + 0.8 * (j + 0.5) / per_axis)))
        img = np.ascontiguousarray(transform.apply(vol.slice(axis, min(k, count - 1))))
        arr, _ = pp.lite_input(img, input_size)
        out.append(np.ascontiguousarray(arr[None], dtype=np.float32))
    return out


def settings_digest(inputs: List[np.ndarray], settings: Dict[str, object]) -> str:
    """Names a quantisation: NNCF version, settings and the calibration inputs' bytes."""
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(json.dumps({**settings, "nncf": version("nncf")}, sort_keys=True).encode())
    for a in inputs:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()[:12]


def int8_path(f32_path: Path, digest: str) -> Path:
    """The quantised model's file beside the f32 one: ``<f32 stem>-int8-<settings digest>``."""
    return f32_path.with_name(f"{f32_path.stem}-int8-{digest}.xml")


def quantise(model, inputs: List[np.ndarray], settings: Optional[Dict[str, object]] = None):
    """An int8 copy of the OpenVINO ``model`` calibrated on ``inputs`` (NNCF PTQ)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    settings = settings or SETTINGS
    bias = settings.get("bias_correction", "fast")
    kw = {"preset": nncf.QuantizationPreset(settings["preset"]),
          "subset_size": len(inputs), "fast_bias_correction": bias != "full",
          "advanced_parameters": AdvancedQuantizationParameters(
              disable_bias_correction=bias == "none")}
    if settings.get("model_type"):
        kw["model_type"] = nncf.ModelType(settings["model_type"])
    ignored = IGNORED_TYPES[str(settings.get("ignore", ""))]
    if ignored:
        kw["ignored_scope"] = nncf.IgnoredScope(types=ignored, validate=False)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        return nncf.quantize(model, nncf.Dataset(inputs), **kw)
    except Exception as exc:
        raise MedsamError(f"cannot quantise the image encoder to int8 ({exc})") from None


def quantised_model(core, f32_model, f32_path: Path, input_size: int,
                    settings: Optional[Dict[str, object]] = None,
                    inputs_for: Callable[[int, int], List[np.ndarray]] = calibration_inputs):
    """(int8 model, its path, seconds spent quantising: 0 when read from the cache)."""
    import openvino as ov

    from medsam_gui.engine.ov_encoder import save_atomically

    why = nncf_missing()
    if why:
        raise MedsamError(f"int8 needs NNCF: {why}")
    settings = settings or SETTINGS
    inputs = inputs_for(int(settings["slices"]), input_size)
    path = int8_path(f32_path, settings_digest(inputs, settings))
    if path.is_file():
        try:
            return core.read_model(str(path)), path, 0.0
        except Exception as exc:  # a damaged cache file: quantise again
            log.warning("quantising the encoder again (%s: %s)", path, exc)
    t0 = time.perf_counter()
    model = quantise(f32_model.clone(), inputs, settings)
    seconds = time.perf_counter() - t0
    save_atomically(ov, model, path)
    return model, path, seconds


# ------------------------------------------------------------------ speed, by measurement
def speed_key(settings: Optional[Dict[str, object]] = None) -> str:
    """Names a latency measurement: CPU model, threads, library versions, settings (new
    hardware, a new runtime or new settings measure again)."""
    from importlib.metadata import version

    import torch

    from medsam_gui.engine.ov_decoder import cpu_name

    return "|".join(["int8 encoder", cpu_name(), f"threads {torch.get_num_threads()}",
                     f"openvino {version('openvino')}", f"nncf {version('nncf')}",
                     f"faster {FASTER}", json.dumps(settings or SETTINGS, sort_keys=True)])


def measured_speed(settings: Optional[Dict[str, object]] = None,
                   folder: Optional[Path] = None) -> Optional[dict]:
    """The remembered int8 vs baseline latency on this machine, or None (not measured yet,
    or NNCF missing)."""
    from medsam_gui.engine.ov_decoder import remembered_choice

    if nncf_missing():
        return None
    found = remembered_choice(speed_key(settings), folder)
    return found if found is not None and "int8" in found else None


def remember_speed(core, f32_model, int8_request, config: dict, input_size: int,
                   settings: Optional[Dict[str, object]] = None,
                   folder: Optional[Path] = None) -> dict:
    """Median latency of the int8 encoder against the runtime ``auto`` would otherwise use
    (``runtime.cpu_baseline``: f32, or bf16 on CPUs with bf16 units), interleaved on one
    input, once per machine and settings; remembered beside the converted models."""
    from medsam_gui.engine.ov_decoder import measure_pair, remember_choice, remembered_choice
    from medsam_gui.engine.ov_encoder import HINTS
    from medsam_gui.engine.runtime import cpu_baseline

    key = speed_key(settings)
    found = remembered_choice(key, folder)
    if found is not None and "int8" in found:
        return found
    baseline = cpu_baseline()
    base = core.compile_model(f32_model, "CPU",
                              {**config, "INFERENCE_PRECISION_HINT": HINTS[baseline]})
    base_request = base.create_infer_request()
    x = {0: np.random.default_rng(0).random((1, 3, input_size, input_size), np.float32)}
    t_base, t_int8 = measure_pair(lambda: base_request.infer(x),
                                  lambda: int8_request.infer(x), reps=5)
    found = {"baseline": baseline, "baseline_ms": round(t_base * 1e3, 1),
             "int8_ms": round(t_int8 * 1e3, 1), "int8": bool(t_int8 < FASTER * t_base)}
    remember_choice(key, found, folder)
    log.info("int8 encoder %s ms, %s %s ms on this machine", found["int8_ms"], baseline,
             found["baseline_ms"])
    return found


__all__ = ["SETTINGS", "calibration_inputs", "int8_path", "nncf_missing", "quantise",
           "measured_speed", "quantised_model", "remember_speed", "settings_digest", "speed_key"]
