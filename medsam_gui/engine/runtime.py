"""Where and how the models run: device choice, image encoder runtime and precision.

On CPU the image encoder runs on OpenVINO when it can (``engine.ov_encoder``): ``ov_f32`` is
exact (max relative difference to PyTorch fp32 ~1e-5) and faster than PyTorch with any
allocator; ``ov_bf16`` on CPUs with AMX or AVX-512 BF16 is faster still and as accurate
against ground truth (see ``BF16_WITHIN_TOLERANCE``), so ``auto`` picks it there. ``ov_int8``
(``engine.ov_int8``: NNCF post-training quantisation, quantised once and cached) is an explicit
choice; ``auto`` would take it only within the same Dice bar AND measured faster on the machine
(``INT8_WITHIN_TOLERANCE``, ``ov_int8.measured_speed``), which it has not earned so far (see
``INT8_WITHIN_TOLERANCE``). Without OpenVINO (not installed, or a process with tcmalloc
preloaded, where it aborts) the PyTorch variants below apply. CUDA and MPS always run PyTorch.

Encoder variants, measured on the 2-core CI-like CPU on real slices (benchmarks/bench_engine.py):
``channels_last`` is exact (mask Dice 1.000 against fp32) and faster; bf16 autocast +
channels_last is faster still but moved LiteMedSAM masks on BRATS tumour slices to Dice
0.968-0.990 against fp32 (CT slices 0.994-0.998), below the 0.99 bar, so ``precision="auto"``
picks ``channels_last`` and bf16 is an explicit opt-in (``precision="bf16"``). The allocator
matters as much: start the app with tcmalloc preloaded or ``THP_MEM_ALLOC_ENABLE=1``
(``medsam_gui.launch.prefer_fast_allocator``, called by the entry points).

The prompt encoder + mask decoder (every box) run on OpenVINO f32 when that measured faster
than PyTorch on this machine (``engine.ov_decoder.decoder_for``; measured once, remembered in
the runtime cache folder): logits equal PyTorch's to ~2e-5, masks identical on real slices
(tests/test_ov_decoder.py). The decoder runs in bf16 where the encoder's float ops do
(``ov_encoder.decoder_precision``: ``ov_bf16``, which ``auto`` picks on CPUs with bf16 units):
measured on AMD EPYC with AVX-512 BF16, 26 ms a box against 43 ms in f32 (PyTorch 80 ms) and
ground-truth-box Dice within 0.004 of f32 on every kind (``bench_runtime_accuracy.py
--decoder``, 8 slices a structure; worst slice −0.010).
Compiled models of both go to OpenVINO's cache (``ov_encoder.make_core``), so a second start
does not compile.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from medsam_gui.errors import MedsamError

PRECISIONS = ("auto", "fp32", "channels_last", "bf16", "ov_f32", "ov_bf16", "ov_int8")
# auto on a CPU with bf16 units (AMX / AVX-512 BF16) picks OpenVINO bf16: its ground-truth-box
# Dice was within 0.01 of fp32's on every kind of labelled scan in the test data
# (benchmarks/bench_runtime_accuracy.py, 8 slices per structure, Intel Xeon with AMX; per kind,
# bf16 − fp32: BRATS FLAIR +0.001 / +0.021, BRATS T1c +0.001 / −0.001, abdominal MR −0.003,
# abdominal CT +0.000, DICOM CT −0.002; worst structure MR spleen −0.009, worst single slice
# −0.078). Again on AMD EPYC with AVX-512 BF16 (16 slices a structure): +0.003, +0.001, −0.007,
# −0.000, −0.002 (worst structure MR kidney L −0.017), the encoder at 0.55 of OpenVINO f32's
# time. On CPUs without bf16 units it would be emulated and slower: never picked. OpenVINO f32
# gave the same Dice as PyTorch fp32 to three decimals everywhere.
BF16_WITHIN_TOLERANCE = True
# auto picks OpenVINO int8 (engine.ov_int8: NNCF post-training quantisation calibrated on the
# bundled demo volume) only if this is True AND int8 was measured faster than the baseline
# below on this machine (remembered in the runtime cache folder). False, measured
# (benchmarks/bench_runtime_accuracy.py; table in its docstring). With every layer int8 the
# ground-truth-box Dice lost up to 0.14 per kind (BRATS T1c). With the convolutions kept in
# float (ov_int8.SETTINGS, AMD EPYC with AVX-512 VNNI/BF16, 16 slices a structure) every kind
# is within 0.01 of f32 (worst −0.004) and the encoder takes 0.80 of bf16's time, but single
# structures still move both ways (abdominal MR spleen +0.074, liver −0.027; bf16 at most
# −0.017), and one box + --fast-propagate through the CLI on BRATS pat0001 FLAIR gave 3D Dice
# 0.828 against 0.840 with bf16 (a front stopped 5 slices earlier): not a faithful copy of f32,
# so it stays an explicit choice (--precision ov_int8). On AVX2 without VNNI it was slower.
INT8_WITHIN_TOLERANCE = False


def cpu_baseline() -> str:
    """The OpenVINO encoder precision ``auto`` uses on this CPU when int8 does not win."""
    from medsam_gui.engine import ov_encoder

    return "ov_bf16" if BF16_WITHIN_TOLERANCE and ov_encoder.cpu_has_fast_bf16() else "ov_f32"


def pick_device(device: Optional[str] = None) -> torch.device:
    """The requested device, else CUDA, then Apple MPS, then CPU.

    A requested device is checked here, where every entry point (both CLIs, the window,
    training) resolves it: a name torch does not know, a device type the app does not run on,
    or CUDA / MPS that this machine or this torch build lacks is a MedsamError saying so,
    instead of a traceback later from deep inside the model."""
    if device is not None and str(device).strip():
        return check_device(str(device).strip().lower())
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(name: str) -> torch.device:
    """``name`` as a torch.device this machine can run the models on, else MedsamError."""
    usage = "use cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise MedsamError(f"unknown device {name!r}; {usage}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is usable on this machine (driver or GPU missing)")
            raise MedsamError(f"device {name!r} was asked for, but {why}; choose cpu, or "
                              "no device to pick the best available")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise MedsamError(f"device {name!r} was asked for, but this machine has {count} "
                              f"CUDA GPU(s) (cuda:0..cuda:{count - 1})")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise MedsamError(f"device {name!r} was asked for, but Apple MPS is not available "
                              "here (it needs an Apple-silicon Mac and a PyTorch build with MPS)")
        return dev
    raise MedsamError(f"device {name!r} is not supported; {usage}")


def resolve_precision(precision: str, device: torch.device, kind: str) -> str:
    """Turn "auto" into the measured best encoder variant for this device and backend."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type != "cpu":
        return "fp32"
    if kind == "litemedsam":
        from medsam_gui.engine import ov_encoder

        if ov_encoder.blocked_reason() is None:
            if INT8_WITHIN_TOLERANCE:
                from medsam_gui.engine.ov_int8 import measured_speed

                speed = measured_speed()  # measured at an explicit ov_int8 load
                if speed is not None and speed["int8"]:
                    return "ov_int8"
            # f32: exact (max rel. difference ~1e-5) and faster than PyTorch
            return cpu_baseline()
    return "channels_last"  # exact; bf16 autocast failed the Dice >= 0.99 bar on MR slices


@contextlib.contextmanager
def encoder_context(precision: str, device: torch.device) -> Iterator[None]:
    """no_grad plus bf16 autocast when the variant asks for it."""
    with torch.no_grad():
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
