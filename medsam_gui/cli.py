"""Console entry points. Each parses its own arguments in the module that owns the work."""

from __future__ import annotations

from typing import List, Optional

from medsam_gui.launch import prefer_fast_allocator


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

    return main(argv)


def train_main(argv: Optional[List[str]] = None) -> int:
    """medsam-train WORKSPACE... --mode decoder|full --epochs N --out models/NAME.pth."""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator(encoder_runtime=False)  # training's time is PyTorch's
    from medsam_gui.training.train_cli import main

    return main(argv)


def dataset_main(argv: Optional[List[str]] = None) -> int:
    """medsam-dataset create|add|status|mark|exclude|export|adapt|rollback DATASET …"""
    if argv is None:  # a real process start, not a call from a script or test
        prefer_fast_allocator(encoder_runtime=False)  # adapt's time is PyTorch's
    from medsam_gui.dataset.cli import main

    return main(argv)
