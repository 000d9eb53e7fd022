"""``medsam-gui [PATH] [--demo] [--model KIND] [--checkpoint PATH] [--workspace DIR]``."""

from __future__ import annotations

import argparse
import os
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


# Shared libraries Qt's xcb platform plugin loads (ldd on libqxcb.so and its libQt5XcbQpa) and
# the Debian/Ubuntu package of each; README's apt line and .ci/run name the same packages.
XCB_PACKAGES = {
    "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1", "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libX11.so.6": "libx11-6", "libXext.so.6": "libxext6",
    "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1", "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
}


def xcb_plugin_path() -> Optional[str]:
    """The xcb platform plugin of the PyQt5 in use (None when it is not there)."""
    import os

    from PyQt5.QtCore import QLibraryInfo  # QtCore loads without a display

    path = os.path.join(QLibraryInfo.location(QLibraryInfo.PluginsPath), "platforms",
                        "libqxcb.so")
    return path if os.path.isfile(path) else None


def ldd_missing(path: str) -> List[str]:
    """Shared libraries ``path`` needs that the dynamic loader cannot find ([] when ldd is
    not there: then Qt reports for itself)."""
    import subprocess

    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    missing = [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]
    return sorted(set(missing))


def missing_display_libraries() -> List[str]:
    """On Linux with the xcb platform (QT_QPA_PLATFORM unset or xcb): the libraries Qt's xcb
    plugin cannot load, else []."""
    import os

    if not sys.platform.startswith("linux"):
        return []
    if os.environ.get("QT_QPA_PLATFORM", "xcb").split(":")[0] not in ("", "xcb"):
        return []
    plugin = xcb_plugin_path()
    return ldd_missing(plugin) if plugin else []


def missing_libraries_message(missing: List[str]) -> str:
    """What the user reads instead of Qt's abort: the libraries and the command to install."""
    packages = sorted({XCB_PACKAGES[m] for m in missing if m in XCB_PACKAGES})
    text = ("medsam-gui: the window cannot open: Qt's display plugin (xcb) needs system "
            "libraries that are not installed:\n  " + "\n  ".join(missing) + "\n")
    if packages:
        text += ("On Debian/Ubuntu install them with:\n  sudo apt-get install "
                 + " ".join(packages) + "\n")
    unknown = [m for m in missing if m not in XCB_PACKAGES]
    if unknown:
        text += ("Install the package that provides " + ", ".join(unknown)
                 + " with your system's package manager.\n")
    return text + "(README, Install, lists every system package the window needs.)"


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
        if not window.shutdown(task_wait_ms=3000):
            # the work is saved; a worker that cannot stop (a model conversion) must not hold
            # up a logout, and Qt aborts on a thread still running at exit: leave at once
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(0)
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
    missing = missing_display_libraries()
    if missing:  # Qt would abort (rc 134) with a message that names no package
        print(missing_libraries_message(missing), file=sys.stderr)
        return 2
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
