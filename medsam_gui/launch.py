"""Process start-up settings that must be made before torch is imported.

On CPU the memory allocator decides how fast the image encoder runs: with glibc malloc every
encoder call re-faults its large temporary buffers. A tcmalloc preload made the LiteMedSAM encoder
about 2x faster on a 2-core machine; PyTorch's own THP allocator setting helps where tcmalloc is
absent. Both are process-wide and only work when set before start-up, hence the re-exec.
Set MEDSAM_NO_PRELOAD=1 to keep the process as started. OpenVINO cannot run beside tcmalloc, so
processes whose encoder runs on OpenVINO are not given it (see ``prefer_fast_allocator``).
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Optional

_TCMALLOC_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib64/libtcmalloc_minimal.so*",
    "/usr/lib/libtcmalloc_minimal.so*",
    "/usr/local/lib/libtcmalloc_minimal.so*",
)


def find_tcmalloc() -> Optional[str]:
    """Path of a tcmalloc (minimal) shared library on this machine, if any."""
    for pattern in _TCMALLOC_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def openvino_wanted() -> bool:
    """Will this process run the image encoder on OpenVINO (installed, not switched off)?"""
    import importlib.util

    return (not os.environ.get("MEDSAM_NO_OPENVINO")
            and importlib.util.find_spec("openvino") is not None)


def prefer_fast_allocator(encoder_runtime: bool = True) -> None:
    """Re-exec this process with tcmalloc preloaded (Linux), else enable torch's THP allocator.

    ``encoder_runtime``: the process segments (GUI, medsam-segment); when OpenVINO will run its
    encoder, tcmalloc is not preloaded, because OpenVINO aborts beside it, and OpenVINO's
    encoder is faster than PyTorch's with tcmalloc (benchmarks/bench_engine.py). Training
    (medsam-train) keeps tcmalloc: its time is PyTorch's. Must run before torch is imported.
    Does nothing when already done or opted out.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if os.environ.get("MEDSAM_NO_PRELOAD") or not sys.platform.startswith("linux"):
        return
    if encoder_runtime and openvino_wanted():
        return
    if "torch" in sys.modules or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = (lib + " " + env.get("LD_PRELOAD", "")).strip()
    env["MEDSAM_NO_PRELOAD"] = "1"  # never loop
    try:
        argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv  # keeps "-m ..."
        os.execve(sys.executable, [sys.executable] + list(argv[1:]), env)
    except OSError:
        return  # keep running as started
