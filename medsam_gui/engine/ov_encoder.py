"""The image encoder on OpenVINO (CPU): converted once per encoder weights, cached on disk.

PyTorch stays for CUDA/MPS, for the prompt encoder and mask decoder, and for training; only the
image encoder, the cost of every new slice, runs here. The converted model is saved under the
user cache folder keyed by the encoder's weights digest, the input size and the OpenVINO
version, so the second start-up only reads and compiles it; a fine-tune of the encoder gets
its own file. ``ov_int8`` quantises that f32 model once (``engine.ov_int8``) and caches the
int8 model beside it, named by the weights digest and the quantisation settings. The f32/bf16
model is compiled as a few consecutive parts, cut from the cached converted model at load
(``ov_encoder_parts``, about 0.1 s, no PyTorch), so a background slice can yield to a box
between and within parts; the compiled parts are kept in the same compiled-model cache.

Two traps, measured (see ``engine.runtime``): OpenVINO's default precision on CPUs with bf16
units is bf16, so the precision hint is always set explicitly; and a process with tcmalloc or
jemalloc preloaded aborts at OpenVINO's first inference (``free(): invalid pointer``), so
``blocked_reason`` refuses the runtime there and the caller keeps PyTorch.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from medsam_gui.engine.ov_encoder_parts import PARTS, EncoderParts, split_model
from medsam_gui.errors import MedsamError

log = logging.getLogger(__name__)
# ov_int8: the int8 model (engine.ov_int8); its float ops (the convolutions, normalisation,
# softmax) run as the machine's baseline does: bf16 on CPUs with bf16 units, else f32
# (``float_hint``)
HINTS = {"ov_f32": "f32", "ov_bf16": "bf16", "ov_int8": "f32"}
_ALLOCATORS = ("tcmalloc", "jemalloc")


def preloaded_allocator() -> Optional[str]:
    """The name of a replacement malloc loaded into this process, if any (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:
        maps = os.environ.get("LD_PRELOAD", "")
    return next((name for name in _ALLOCATORS if f"lib{name}" in maps), None)


def blocked_reason() -> Optional[str]:
    """Why OpenVINO cannot run the encoder in this process, or None when it can."""
    if os.environ.get("MEDSAM_NO_OPENVINO"):
        return "switched off by MEDSAM_NO_OPENVINO"
    allocator = preloaded_allocator()
    if allocator:
        return (f"{allocator} is preloaded into this process, and OpenVINO aborts beside it "
                "(start without LD_PRELOAD)")
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # ImportError, or a broken installation
        return f"the openvino package cannot be imported ({type(exc).__name__}: {exc})"
    return None


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16 units (else bf16 would be emulated, slower than f32)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


def float_hint(precision: str) -> str:
    """OpenVINO's inference precision for ``precision``'s float ops: for int8, that of the
    runtime ``auto`` otherwise uses here (on AVX-512 BF16 the int8 model ran 1.4x faster with
    them in bf16 than in f32, and bf16 met the same Dice bar)."""
    if precision == "ov_int8":
        from medsam_gui.engine.runtime import cpu_baseline

        return HINTS[cpu_baseline()]
    return HINTS[precision]


def decoder_precision(encoder_precision: str) -> str:
    """The prompt encoder + mask decoder's OpenVINO precision beside an image encoder run as
    ``encoder_precision``: bf16 where the encoder's float ops are bf16 (``ov_bf16``, asked for
    or what ``auto`` resolves to on a CPU with bf16 units, and int8 there), else f32.
    Measured on AMD EPYC with AVX-512 BF16 (``bench_runtime_accuracy.py --decoder``): 0.60
    of the f32 decoder's time per box, ground-truth-box Dice within 0.004 of f32 per kind."""
    if encoder_precision in HINTS and float_hint(encoder_precision) == "bf16":
        return "ov_bf16"
    return "ov_f32"


def cache_dir() -> Path:
    env = os.environ.get("MEDSAM_OPENVINO_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("medsam-gui")) / "openvino"


def converted_path(digest: str, input_size: int, folder: Optional[Path] = None) -> Path:
    """Where the converted f32 encoder of these weights is cached (``.xml`` + ``.bin``)."""
    import openvino as ov

    name = f"encoder-{digest[:16]}-{input_size}-ov{ov.__version__.split('-')[0]}.xml"
    return (folder or cache_dir()) / name


COMPILED_MAX_BYTES = 1 << 30  # compiled blobs kept (a decoder shape ~25 MB, an encoder ~28 MB)


def prune_compiled(folder: Path, max_bytes: int = COMPILED_MAX_BYTES) -> int:
    """Remove the least recently used compiled blobs under ``folder`` until they take at most
    ``max_bytes`` (every fine-tune and prompt shape adds blobs; a removed one is compiled again
    when needed). Returns the bytes removed."""
    try:
        blobs = []
        for path in folder.glob("*/*.blob"):
            st = path.stat()
            blobs.append((max(st.st_atime, st.st_mtime), st.st_size, path))
    except OSError:
        return 0
    total, removed = sum(b[1] for b in blobs), 0
    for _used, size, path in sorted(blobs, key=lambda b: b[0]):
        if total - removed <= max_bytes:
            break
        try:
            path.unlink()
            removed += size
        except OSError:
            pass
    return removed


class CachingCore:
    """An ``openvino.Core`` whose compiled models are cached under ``folder``/compiled, so a
    second start reads the compiled blob instead of compiling (cold vs warm start:
    ``benchmarks/bench_engine.py``), in one folder per precision hint and thread count.

    Why apart: OpenVINO (2026.4) names a cached blob after the model alone, not after the
    precision hint or the thread count it was compiled with, and a model read back from a blob
    that another precision wrote is not the model asked for. Measured on the decoder's 3-token
    shape: compiled in f32 from a blob that a bf16 compile had written, its logits were 8.9 off
    f32's (a test run's click comparison failed this way). Blobs of the old single folder are
    removed. Without a writable folder it compiles every time."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.folder = (folder or cache_dir()) / "compiled"
        try:  # blobs of the shared folder that earlier versions wrote: any may be wrong
            for stale in self.folder.glob("*.blob"):
                stale.unlink()
        except OSError:
            pass
        prune_compiled(self.folder)

    def cache_folder(self, config: dict) -> Path:
        """Where compiled models of ``config`` are cached."""
        hint = str(config.get("INFERENCE_PRECISION_HINT", "default"))
        threads = str(config.get("INFERENCE_NUM_THREADS", "all"))
        return self.folder / f"{hint}-{threads}threads"

    def compile_model(self, model, device: str = "CPU", config: Optional[dict] = None):
        config = dict(config or {})
        folder = self.cache_folder(config)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(folder)
        except OSError as exc:  # read-only folder: compile each time
            log.warning("no OpenVINO compiled-model cache in %s (%s)", folder, exc)
        return self.core.compile_model(model, device, config)

    def __getattr__(self, name: str):  # read_model and the rest: OpenVINO's own
        return getattr(self.core, name)


def make_core(folder: Optional[Path] = None) -> CachingCore:
    """The OpenVINO core of this app: compiled models cached per precision (``CachingCore``)."""
    return CachingCore(folder)


def save_atomically(ov, model, path: Path) -> None:
    """Save a converted model as ``path`` (.xml + .bin, renamed into place); on failure the
    next start converts again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the OpenVINO model in %s (%s)", path.parent, exc)


def parts_setting() -> int:
    """How many parts the encoder is cut into: ``MEDSAM_OV_ENCODER_PARTS`` (1 = the whole
    model, as before the split; for side-by-side measurements), else the measured default."""
    env = os.environ.get("MEDSAM_OV_ENCODER_PARTS", "").strip()
    try:
        return max(1, int(env)) if env else PARTS
    except ValueError:
        raise MedsamError(f"MEDSAM_OV_ENCODER_PARTS must be a whole number, got {env!r}") from None


class OpenVinoEncoder:
    """``encoder(x)`` for a (1, 3, S, S) float32 tensor -> embedding tensor, on OpenVINO."""

    def __init__(self, image_encoder: torch.nn.Module, digest: str, input_size: int,
                 precision: str = "ov_f32", threads: Optional[int] = None,
                 folder: Optional[Path] = None, int8_settings: Optional[dict] = None,
                 parts: Optional[int] = None):
        """``parts``: cut the f32/bf16 model into this many sub-models, so a background slice
        can pause between them while a box decodes (``ov_encoder_parts``); None: the
        ``MEDSAM_OV_ENCODER_PARTS`` setting, else ``ov_encoder_parts.PARTS``; 1: whole."""
        import openvino as ov

        if precision not in HINTS:
            raise ValueError(f"precision must be one of {tuple(HINTS)}, got {precision!r}")
        self.precision = precision
        self.path = converted_path(digest, input_size, folder)
        folder = self.path.parent
        self.converted = False  # True when this load had to convert (not read from the cache)
        core = make_core(folder)
        model = None
        if self.path.is_file():
            try:
                model = core.read_model(str(self.path))
            except Exception as exc:  # a damaged cache file: convert again
                log.warning("re-exporting the OpenVINO encoder (%s: %s)", self.path, exc)
        if model is None:
            model = self._convert(ov, image_encoder, input_size)
        self.f32_path = self.path
        self.quantise_seconds = 0.0  # > 0 when this load had to quantise (int8)
        f32_model = model
        if precision == "ov_int8":
            from medsam_gui.engine.ov_int8 import quantised_model

            model.reshape([1, 3, input_size, input_size])
            model, self.path, self.quantise_seconds = quantised_model(
                core, model, self.path, input_size, int8_settings)
            self.converted |= self.quantise_seconds > 0
        model.reshape([1, 3, input_size, input_size])  # static: ~10 % (f32) to 25 % (bf16) faster
        self.float_hint = float_hint(precision)
        # what names int8 embeddings beside the precision (Backend.cache_tag): the quantisation
        # settings' digest (the file's suffix, ov_int8.int8_path) and the float ops' precision
        self.variant = (f"{self.path.stem.rsplit('-int8-', 1)[-1]}:{self.float_hint}"
                        if precision == "ov_int8" else "")
        config = {"INFERENCE_PRECISION_HINT": self.float_hint,
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
                  "PERFORMANCE_HINT": "LATENCY"}
        self._lock = threading.Lock()  # one inference at a time on this request
        self.parts: Optional[EncoderParts] = None
        n_parts = parts_setting() if parts is None else parts
        if n_parts > 1 and precision != "ov_int8":  # int8: whole (its speed check times it)
            try:
                self.parts = EncoderParts(core, split_model(model.clone(), n_parts), config)
            except Exception as exc:  # an unexpected graph: the whole model, unpausable
                log.warning("OpenVINO encoder not split (%s: %s)", type(exc).__name__, exc)
        if self.parts is not None and len(self.parts) > 1:
            self.compiled, self._request = None, None
        else:
            self.parts = None
            self.compiled = core.compile_model(model, "CPU", config)
            self._request = self.compiled.create_infer_request()
        self.speed: Optional[dict] = None  # int8: its latency against f32 on this machine
        if precision == "ov_int8":
            from medsam_gui.engine.ov_int8 import remember_speed

            self.speed = remember_speed(core, f32_model, self._request, config, input_size,
                                        int8_settings, folder)

    def _convert(self, ov, image_encoder: torch.nn.Module, input_size: int):
        example = torch.zeros(1, 3, input_size, input_size)
        was_training = image_encoder.training
        image_encoder.eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python asserts
                model = ov.convert_model(image_encoder, example_input=example)
        except Exception as exc:
            raise MedsamError(f"cannot convert the image encoder to OpenVINO ({exc})") from None
        finally:
            image_encoder.train(was_training)
        self.converted = True
        save_atomically(ov, model, self.path)
        return model

    def __call__(self, x: torch.Tensor, gate=None) -> torch.Tensor:
        """The embedding of ``x``. ``gate`` (a ``DecodeGate``, for a background slice): a split
        encoder's parts yield to decodes (``ov_encoder_parts``); the whole model only waits for
        no decode in flight before it starts."""
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if self.parts is not None:
            return torch.from_numpy(self.parts.infer(data, gate))
        if gate is not None:
            gate.wait()
        with self._lock:
            out = self._request.infer({0: data})
            return torch.from_numpy(np.array(next(iter(out.values())), dtype=np.float32))


def encoder_for(image_encoder: torch.nn.Module, digest: str, input_size: int,
                precision: str) -> Tuple[Optional[OpenVinoEncoder], str]:
    """(encoder, "") or (None, why OpenVINO cannot run it here)."""
    reason = blocked_reason()
    if reason is not None:
        return None, reason
    try:
        return OpenVinoEncoder(image_encoder, digest, input_size, precision), ""
    except Exception as exc:  # conversion or compilation failed
        return None, f"{type(exc).__name__}: {exc}"


__all__ = ["COMPILED_MAX_BYTES", "HINTS", "CachingCore", "OpenVinoEncoder", "blocked_reason",
           "cache_dir", "cpu_has_fast_bf16", "decoder_precision", "encoder_for", "float_hint",
           "make_core", "parts_setting", "preloaded_allocator", "prune_compiled",
           "save_atomically"]
