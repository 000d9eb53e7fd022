"""Console entry points. Each parses its own arguments in the module that owns the work."""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional

from medsam_gui.launch import prefer_fast_allocator


def _quiet_on_closed_pipe(main: Callable[[Optional[List[str]]], int],
                          argv: Optional[List[str]]) -> int:
    """Run ``main``; when the reader of stdout went away (``medsam-dataset status | head``),
    stop quietly with the shell's SIGPIPE status instead of a BrokenPipeError traceback."""
    try:
        rc = main(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # the interpreter flushes stdout again at exit: point it at nothing first
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def gui_main(argv: Optional[List[str]] = None) -> int:
    """medsam-gui [PATH] [--demo]: the annotator window."""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator()
    from medsam_gui.ui.app import main

    return main(argv)


def segment_main(argv: Optional[List[str]] = None) -> int:
    """medsam-segment IMAGE --box AXIS SLICE X0 Y0 X1 Y1 ... --out LABELS.nii.gz (headless)."""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator()
    from medsam_gui.engine.segment_cli import main

    return _quiet_on_closed_pipe(main, argv)


def train_main(argv: Optional[List[str]] = None) -> int:
    """medsam-train WORKSPACE... --mode decoder|full --epochs N --out models/NAME.pth."""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator(encoder_runtime=False)  # training's time is PyTorch's
    from medsam_gui.training.train_cli import main

    return _quiet_on_closed_pipe(main, argv)


def dataset_main(argv: Optional[List[str]] = None) -> int:
    """medsam-dataset create|add|status|mark|exclude|export|adapt|rollback DATASET …"""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator(encoder_runtime=False)  # adapt's time is PyTorch's
    from medsam_gui.dataset.cli import main

    return _quiet_on_closed_pipe(main, argv)
