"""The converted image encoder cut into a few consecutive sub-models, so a box can overtake it.

One compiled OpenVINO model cannot pause mid-inference: a box decoded while a background slice
encodes shared the two cores with the whole slice (2.7x its idle latency). Cut into parts, a
cancelled or held-back background encode loses at most one part's work.

A background slice's parts run as asynchronous requests that a decode beginning mid-part
cancels (the runtime stops within one op); the part runs again after the decode and a short
quiet spell (``gate.DecodeGate``), so a box waits for neither the slice nor the part.

The cut is made on the converted model itself (no PyTorch, so the lazy start-up path keeps
building nothing): after a static reshape and constant folding, the ops in topological order
are cut at points where exactly one non-constant tensor crosses from the ops before to the ops
after (in LiteMedSAM's TinyViT: stage and block boundaries; a graph without such a point
stays whole, unpausable as before); the points are chosen
so the parts have about equal estimated cost (multiply-adds of convolutions and matrix
products, plus elements written by every other op). Each part is a model of its own with the
same compile settings; the runtime's compiled-model cache keeps their compiled blobs.
The same ops run in the same order, so the embedding equals the whole model's (measured
bit-identical on a BRATS slice; the test allows 1e-5 of its largest value for fusions at a
cut).
"""

from __future__ import annotations

import threading
from typing import List, Sequence

import numpy as np

PARTS = 4  # measured on 2 cores (benchmarks/bench_engine.py --startup, busy-box table)
CANCELS = 2  # a background part is cancelled at most this often, then runs through


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def op_cost(op) -> float:
    """Estimated cost of one op: multiply-adds for convolutions and matrix products, else the
    elements it writes (memory-bound ops: norms, softmax, activations, copies)."""
    kind = op.get_type_name()
    if kind in ("Constant", "Parameter", "Result", "ShapeOf"):
        return 0.0
    out = sum(_numel(op.get_output_partial_shape(i).to_shape())
              for i in range(op.get_output_size()) if op.get_output_partial_shape(i).is_static)
    if kind in ("Convolution", "GroupConvolution") and op.get_input_partial_shape(1).is_static:
        w = list(op.get_input_partial_shape(1).to_shape())
        per_out = _numel(w[1:]) if kind == "Convolution" else _numel(w[2:])
        return float(out * per_out)
    if kind == "MatMul" and op.get_input_partial_shape(0).is_static:
        a = list(op.get_input_partial_shape(0).to_shape())
        transposed = op.get_attributes().get("transpose_a", False)
        k = a[-2] if transposed and len(a) > 1 else a[-1]
        return float(out * int(k))
    return float(out)


def cut_points(model) -> List[tuple]:
    """(index in topological order, crossing output, cost so far) of every clean cut: after
    op ``index`` exactly one non-constant tensor is used by later ops."""
    ops = list(model.get_ordered_ops())
    pos = {op.get_name(): i for i, op in enumerate(ops)}  # unique names, unlike friendly ones
    last_use: dict = {}  # (op index, output index) -> last consumer's index
    for i, op in enumerate(ops):
        if op.get_type_name() == "Constant":
            continue
        for j in range(op.get_output_size()):
            users = [pos[t.get_node().get_name()] for t in op.output(j).get_target_inputs()]
            if users:
                last_use[(i, j)] = max(users)
    live: dict = {}
    points, cost = [], 0.0
    ends: dict = {}
    for (i, j), end in last_use.items():
        ends.setdefault(i, []).append((j, end))
    for i, op in enumerate(ops[:-1]):
        cost += op_cost(op)
        for j, end in ends.get(i, ()):
            live[(i, j)] = end
        for k in [k for k, end in live.items() if end <= i]:
            del live[k]
        if len(live) == 1 and op.get_type_name() not in ("Parameter", "Constant"):
            (oi, oj), = live
            points.append((i, ops[oi].output(oj), cost))
    return points


def choose_cuts(points: Sequence[tuple], total: float, parts: int) -> List[tuple]:
    """The cut points nearest to total·k/parts, k = 1..parts-1 (distinct, in order)."""
    chosen: List[tuple] = []
    for k in range(1, parts):
        target = total * k / parts
        later = [p for p in points if not chosen or p[0] > chosen[-1][0]]
        if not later:
            break
        best = min(later, key=lambda p: abs(p[2] - target))
        if best[2] <= 0.0 or best[2] >= total:
            continue
        chosen.append(best)
    return chosen


def split_model(model, parts: int = PARTS) -> list:
    """The static-shaped ``model`` cut into up to ``parts`` consecutive models (a list of one,
    the model itself, when it has no clean cut). ``model`` is changed (use a clone)."""
    import openvino as ov
    from openvino import opset13
    from openvino.passes import ConstantFolding, Manager

    passes = Manager()
    passes.register_pass(ConstantFolding())
    passes.run_passes(model)
    points = cut_points(model)
    total = sum(op_cost(op) for op in model.get_ordered_ops())
    chosen = choose_cuts(points, total, parts)
    if not chosen:
        return [model]
    params = list(model.get_parameters())
    results = []
    new_params = []
    for _, out, _ in chosen:
        p = opset13.parameter(out.get_partial_shape(), out.get_element_type())
        targets = list(out.get_target_inputs())
        results.append(opset13.result(out))
        for t in targets:
            t.replace_source_output(p.output(0))
        new_params.append(p)
    models = []
    for k in range(len(chosen) + 1):
        ins = params if k == 0 else [new_params[k - 1]]
        outs = list(model.get_results()) if k == len(chosen) else [results[k]]
        models.append(ov.Model(outs, ins, f"encoder-part{k + 1}"))
    return models


class EncoderParts:
    """Runs the compiled parts in order, one infer request each. With a ``gate`` (a
    ``DecodeGate``: a background slice), each part waits for the gate and runs as an
    asynchronous request that a decode may cancel; a cancelled part runs again."""

    def __init__(self, core, models: list, config: dict) -> None:
        self.compiled = [core.compile_model(m, "CPU", config) for m in models]
        self._requests = [c.create_infer_request() for c in self.compiled]
        self._lock = threading.Lock()
        self.reruns = 0  # parts run again after a decode cancelled them

    def __len__(self) -> int:
        return len(self._requests)

    def infer(self, data: np.ndarray, gate=None) -> np.ndarray:
        with self._lock:
            x = data
            for req in self._requests:
                if gate is None:
                    req.infer({0: x})
                else:
                    self._gated(req, x, gate)
                x = req.get_output_tensor(0).data
            return np.array(x, dtype=np.float32)

    def _gated(self, req, x: np.ndarray, gate) -> None:
        cancelled = 0
        while True:
            # a part cancelled CANCELS times runs through: boxes spaced just wider than the
            # quiet spell but closer than a part's time must not stall the encoder for good
            forced = gate.wait_to_start() or cancelled >= CANCELS
            if not gate.start(lambda: req.start_async({0: x}), None if forced else req.cancel):
                continue  # a decode began between the wait and the start
            try:
                req.wait()
            except RuntimeError:
                if not gate.finished():
                    raise
                self.reruns += 1
                cancelled += 1
                continue
            gate.finished()
            return


__all__ = ["PARTS", "EncoderParts", "choose_cuts", "cut_points", "op_cost", "split_model"]
