"""``medsam-gui [PATH] [--demo] [--model KIND] [--checkpoint PATH] [--workspace DIR]``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from medsam_gui import __version__
from medsam_gui.errors import MedsamError


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="medsam-gui",
                                description="Annotate CT/MR volumes with box prompts.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("path", nargs="?", help="NIfTI file or DICOM folder to open")
    p.add_argument("--demo", action="store_true",
                   help="open the bundled BRATS FLAIR sample with the bundled LiteMedSAM")
    p.add_argument("--model", default="litemedsam",
                   help="model kind: litemedsam, medsam_vit_b, sam_vit_b/l/h")
    p.add_argument("--checkpoint", help="checkpoint file (required except for litemedsam)")
    p.add_argument("--workspace", help="folder for the autosaved annotations (default: your "
                                       "user data folder; File ▸ Workspace to change)")
    p.add_argument("--precision", default="auto",
                   choices=("auto", "fp32", "channels_last", "ov_f32", "ov_bf16"),
                   help="image encoder runtime and precision (auto: OpenVINO f32 on CPU when "
                        "installed, else PyTorch; the status bar shows which)")
    p.add_argument("--no-background", action="store_true",
                   help="do not encode neighbouring slices in the background")
    return p.parse_args(argv)


def style_sheet() -> str:
    try:
        from medsam_gui.resources import resource_path

        return resource_path("style.qss").read_text(encoding="utf-8")
    except (MedsamError, OSError):
        return ""  # the default Qt look is fine


def install_excepthook() -> None:
    """An unexpected exception in a Qt slot would abort the process (PyQt5 default): show it
    in a dialog instead and keep the window (and the autosaved labels) alive."""
    import traceback

    def hook(exc_type, exc, tb) -> None:
        traceback.print_exception(exc_type, exc, tb)
        try:
            from PyQt5.QtWidgets import QApplication, QMessageBox

            parent = QApplication.activeWindow()
            QMessageBox.critical(parent, "Unexpected error",
                                 f"{exc_type.__name__}: {exc}\n\nThe window keeps running; "
                                 "your annotations are autosaved.")
        except Exception:
            pass

    sys.excepthook = hook


def install_quit_handlers(app, window) -> None:
    """SIGTERM (logout, shutdown) and SIGINT (Ctrl+C in the terminal) save what is pending and
    quit, as does any other way out of the event loop (``aboutToQuit``): the last stroke within
    the autosave delay is not lost. Python handles signals only between bytecodes, so a timer
    wakes the interpreter while Qt waits for events."""
    import signal

    from PyQt5.QtCore import QTimer

    def save_and_quit(signum=None) -> None:
        if signum is not None:
            print(f"medsam-gui: {signal.Signals(signum).name}: saving and quitting",
                  file=sys.stderr)
        window.shutdown()
        app.quit()

    def on_signal(signum, _frame) -> None:
        QTimer.singleShot(0, lambda: save_and_quit(signum))

    for sig in (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP")
                                                  else ()):
        signal.signal(sig, on_signal)
    app.aboutToQuit.connect(window.shutdown)
    waker = QTimer(app)
    waker.timeout.connect(lambda: None)
    waker.start(200)
    app._signal_waker = waker  # keep it alive


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    QApplication.setAttribute(Qt.AA_EnableHighDpiScaling, True)
    app = QApplication.instance() or QApplication(["medsam-gui"])
    app.setApplicationName("medsam-gui")
    app.setOrganizationName("medsam-gui")
    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    install_excepthook()
    from medsam_gui.ui.main_window import MainWindow

    path, workspace = args.path, args.workspace
    if args.demo:
        from medsam_gui.resources import demo_volume_path

        try:
            path = str(demo_volume_path())
        except MedsamError as exc:
            print(f"medsam-gui: {exc}", file=sys.stderr)
            return 2
    window = MainWindow(background=not args.no_background, model_kind=args.model,
                        precision=args.precision,
                        checkpoint=args.checkpoint, workspace_dir=workspace)
    install_quit_handlers(app, window)
    window.show()
    if path:
        window.open_path(path)
    return app.exec_()
