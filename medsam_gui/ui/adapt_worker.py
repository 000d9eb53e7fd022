"""The worklist's learning step in the background: ``dataset.adapt`` in a ``workers.Task``.

One ``AdaptJob`` per run. It opens its own ``Dataset`` (the manifest is re-read before every
write, so the worklist's writes of times and states and this run's model entry do not undo each
other), reports ``progress(phase, done, total)`` with phase "encoding", "training" or
"checking", and ends with ``finished(AdaptResult)`` or ``failed(message)``. ``cancel()`` stops
it between two slices or two training steps; nothing changes then. The window keeps working
meanwhile: the job only reads the window's model (a copy is trained).
"""

from __future__ import annotations

from typing import Optional

from PyQt5.QtCore import QObject, pyqtSignal

from medsam_gui.dataset.adapt import AdaptConfig, AdaptResult, adapt
from medsam_gui.dataset.manifest import Dataset
from medsam_gui.ui.workers import Task, error_text

PHASES = {"encoding": "encoding your reviewed slices", "training": "learning",
          "checking": "checking on held-back slices"}


class AdaptJob(QObject):
    progress = pyqtSignal(str, int, int)  # phase, done, total
    said = pyqtSignal(str)  # the core's notes (what is held back, warnings)
    finished = pyqtSignal(object)  # AdaptResult
    failed = pyqtSignal(str)

    def __init__(self, folder: str, backend, config: Optional[AdaptConfig] = None,
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.folder, self.backend = folder, backend
        self.config = config or AdaptConfig(kind=getattr(backend, "kind", "litemedsam"))
        self.task: Optional[Task] = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.isFinished()

    def start(self) -> "AdaptJob":
        def work(task: Task) -> AdaptResult:
            ds = Dataset.open(self.folder)
            return adapt(ds, self.config, say=lambda m: task.deliver(("say", m, 0, 0)),
                         cancel=task.is_cancelled, backend=self.backend,
                         progress=lambda p, d, t: task.deliver(("progress", p, d, t)))

        task = Task(work, "adapt")
        task.item.connect(self._on_item)
        task.result.connect(self.finished.emit)
        task.error.connect(lambda exc: self.failed.emit(error_text(exc)))
        self.task = task.begin()
        return self

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _on_item(self, item: tuple) -> None:
        kind, a, b, c = item
        if kind == "say":
            self.said.emit(a)
        else:
            self.progress.emit(a, b, c)
