"""The next case, ready before the user gets there: while a case is worked on, a worker loads the
worklist's next case and encodes the slices it opens on (the middle axial slice and
``radius`` on each side, with the automatic model input a newly opened scan starts with) into
the window's embedding cache. Opening it then finds them cached: the first box is answered
from the cache instead of waiting for the encoder.

It runs after the open case's own background encoding has gone idle (it never takes the CPU
from the slices being looked at) and is cancelled between two slices when the user opens
another case.
"""

from __future__ import annotations

from typing import Optional

from PyQt5.QtCore import QObject, pyqtSignal

from medsam_gui.ui.workers import Task, error_text


class NextCase(QObject):
    ready = pyqtSignal(str, int)  # case id, slices encoded now (0: all were cached already)
    failed = pyqtSignal(str, str)  # case id, why (said in the status bar; nothing else stops)

    def __init__(self, panel, radius: int = 8):
        super().__init__(panel)
        self.panel, self.radius = panel, radius
        self.enabled = True
        self.task: Optional[Task] = None
        self.case_id: Optional[str] = None  # the case being prepared
        self.prepared = set()  # (case id, model) pairs already done

    def start(self) -> Optional[Task]:
        """Prepare the case after the open one (no-op at the end of the list)."""
        panel, w = self.panel, self.panel.window
        if not self.enabled or panel.dataset is None or panel.current is None or \
                w.backend is None:
            return None
        case = panel.dataset.neighbour(panel.current, 1)
        if case is None or (case.id, id(w.backend)) in self.prepared or \
                (case.id == self.case_id and self.task is not None):
            return None
        if w.cache is None:  # no session yet: the open case comes first
            return None
        self.cancel()
        backend, cache, radius = w.backend, w.cache, self.radius

        def work(task: Task) -> int:
            from medsam_gui.dataset.cases import load_case_volume
            from medsam_gui.engine import ModelInput, Session

            volume = load_case_volume(case)
            if task.is_cancelled():
                return 0
            session = Session(volume, backend, cache, ModelInput())
            mid = volume.n_slices("axial") // 2
            return session.precompute("axial", mid, cancel=task.is_cancelled,
                                      indices=list(range(mid - radius, mid + radius + 1)))

        task = Task(work, f"next case {case.id}")
        key = (case.id, id(backend))
        task.result.connect(lambda n, cid=case.id: (self.prepared.add(key),
                                                    self.ready.emit(cid, int(n))))
        task.error.connect(lambda exc, cid=case.id: self.failed.emit(cid, error_text(exc)))
        self.task, self.case_id = task, case.id
        task.finished.connect(lambda t=task: self._forget(t))
        return task.begin()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _forget(self, task: Task) -> None:
        if self.task is task:
            self.task = None
