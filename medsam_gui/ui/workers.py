"""QThread glue: run core calls (load, encode, precompute, predict) off the GUI thread.

Only plumbing lives here: a generic ``Task`` thread with result/error/progress signals and a
cancel flag, and ``Precomputer``, which keeps one background ``Session.precompute`` running
centred on the slice being looked at (restarted when the user scrolls, retried once on
failure, then reported).
"""

from __future__ import annotations

import traceback
from typing import Callable, List, Optional

from PyQt5.QtCore import QObject, QThread, QTimer, pyqtSignal

from medsam_gui.errors import MedsamError


def error_text(exc: BaseException) -> str:
    """What the user sees: the MedsamError message as it is, else type + message."""
    if isinstance(exc, MedsamError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: " + (str(exc) or "close other programs or use a smaller model")
    return f"{type(exc).__name__}: {exc}"


class Task(QThread):
    """Runs ``fn(task)`` in a thread; ``fn`` may call ``task.report(done, total)`` and check
    ``task.cancelled``. Emits ``result(value)`` or ``error(exception)`` and then finishes."""

    result = pyqtSignal(object)
    error = pyqtSignal(object)
    progress = pyqtSignal(int, int)
    item = pyqtSignal(object)  # a partial result (e.g. one propagated slice), in order

    _alive: List["Task"] = []  # keep Python references until the thread has finished

    def __init__(self, fn: Callable[["Task"], object], name: str = "task",
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.cancelled = False
        self.finished.connect(self._forget)

    def run(self) -> None:
        try:
            value = self.fn(self)
        except BaseException as exc:  # reported to the GUI, never raised in the thread
            exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            self.error.emit(exc)
        else:
            self.result.emit(value)

    def report(self, done: int, total: int) -> None:
        self.progress.emit(int(done), int(total))

    def deliver(self, value: object) -> None:
        """Hand a partial result to the GUI thread (``item`` signal)."""
        self.item.emit(value)

    def cancel(self) -> None:
        self.cancelled = True

    def is_cancelled(self) -> bool:
        return self.cancelled

    def begin(self) -> "Task":
        Task._alive.append(self)
        self.start()
        return self

    def _forget(self) -> None:
        if self in Task._alive:
            Task._alive.remove(self)


def run_task(fn: Callable[[Task], object], on_result: Callable[[object], None],
             on_error: Callable[[BaseException], None], name: str = "task",
             on_progress: Optional[Callable[[int, int], None]] = None,
             on_item: Optional[Callable[[object], None]] = None) -> Task:
    """Start ``fn`` in a thread and deliver its outcome to GUI-thread callbacks."""
    task = Task(fn, name)
    task.result.connect(on_result)
    task.error.connect(on_error)
    if on_progress is not None:
        task.progress.connect(on_progress)
    if on_item is not None:
        task.item.connect(on_item)
    return task.begin()


class Precomputer(QObject):
    """Background encoding of the slices around the one on screen.

    ``follow(session, axis, index)`` (debounced) re-centres: the running precompute is cancelled
    between two slices and restarted from the new centre. A failure is retried once; a second
    failure is reported through ``failed`` and background encoding stops until the next follow.
    """

    progress = pyqtSignal(str, int, int)  # axis, done, total
    encoded = pyqtSignal(str)  # axis: some slice became cached
    failed = pyqtSignal(str)
    idle = pyqtSignal()

    def __init__(self, radius: Optional[int] = 32, delay_ms: int = 120,
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.radius = radius  # None: the whole axis
        self.enabled = True
        self._task: Optional[Task] = None
        self._want: Optional[tuple] = None
        self._retried = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._restart)

    @property
    def running(self) -> bool:
        return self._task is not None

    def follow(self, session, axis: str, index: int, immediate: bool = False) -> None:
        if not self.enabled or session is None:
            return
        want = (session, axis, int(index))
        if want == self._want and not immediate and (self._task is not None
                                                     or self._timer.isActive()):
            return  # already encoding around this slice (the linked views redrew): keep on
        if want != self._want:
            self._retried = False
        self._want = want
        if immediate:
            self._timer.stop()
            self._restart()
        else:
            self._timer.start()

    def stop(self, wait: bool = False) -> None:
        self._want = None
        self._timer.stop()
        task = self._task
        if task is not None:
            task.cancel()
            if wait:
                task.wait()

    def _restart(self) -> None:
        if self._task is not None:  # restart when the running one has stopped
            self._task.cancel()
            return
        if self._want is None:
            return
        session, axis, center = self._want
        indices = None
        if self.radius is not None:
            n = session.volume.n_slices(axis)
            indices = list(range(max(0, center - self.radius), min(n, center + self.radius + 1)))

        def work(task: Task) -> int:
            def progress(done: int, total: int) -> None:
                task.report(done, total)

            return session.precompute(axis, center, progress=progress,
                                      cancel=task.is_cancelled, indices=indices)

        task = Task(work, f"precompute {axis} {center}")
        task.progress.connect(lambda d, t, a=axis: self._on_progress(a, d, t))
        task.result.connect(lambda _v, w=self._want: self._on_done(w))
        task.error.connect(lambda exc, w=self._want: self._on_error(w, exc))
        self._task = task
        task.begin()

    def _on_progress(self, axis: str, done: int, total: int) -> None:
        self.progress.emit(axis, done, total)
        if done:
            self.encoded.emit(axis)

    def _finish(self) -> None:
        self._task = None

    def _on_done(self, want: tuple) -> None:
        self._finish()
        if self._want is not None and self._want != want:
            self._restart()  # the user moved meanwhile
        else:
            self.idle.emit()

    def _on_error(self, want: tuple, exc: BaseException) -> None:
        self._finish()
        if self._want is None:
            return
        if not self._retried:
            self._retried = True
            self._restart()
            return
        self._want = None
        self.failed.emit("Background encoding failed (tried twice): " + error_text(exc))
