"""Threads of the training dialog: the trainer's worker object and a one-shot call thread."""

from __future__ import annotations

from typing import Callable, Optional

from PyQt5.QtCore import QObject, QThread, pyqtSignal

from medsam_gui.errors import MedsamError
from medsam_gui.training import TrainConfig, train


class CallThread(QThread):
    """Runs ``fn()`` off the GUI thread; emits done(result) or failed(message)."""

    done = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, fn: Callable[[], object], parent: Optional[QObject] = None):
        super().__init__(parent)
        self.fn = fn

    def run(self) -> None:
        try:
            self.done.emit(self.fn())
        except MedsamError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # shown in the dialog, never a crash
            self.failed.emit(f"{type(exc).__name__}: {exc}")


class TrainingWorker(QObject):
    """Lives in its own QThread; ``run`` calls the core trainer."""

    progress = pyqtSignal(int, int, int, object)
    finished = pyqtSignal(object)  # TrainResult
    failed = pyqtSignal(str)

    def __init__(self, config: TrainConfig, backend, cache=None):
        super().__init__()
        self.config, self.backend, self.cache = config, backend, cache
        self._cancel = False

    def cancel(self) -> None:
        self._cancel = True

    def run(self) -> None:
        try:
            result = train(self.config, self.backend, progress=self._report,
                           cancel=lambda: self._cancel, cache=self.cache)
        except MedsamError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # e.g. out of memory: reported, the base model is untouched
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.finished.emit(result)

    def _report(self, epoch: int, step: int, total: int, metrics: dict) -> None:
        self.progress.emit(epoch, step, total, dict(metrics))
