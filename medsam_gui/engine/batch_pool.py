"""medsam-segment --batch --workers N: N worker processes on this machine.

Each worker is a spawned process (a forked torch may hang) that loads the model once, with 1/N
of the CPU threads, and runs one case at a time sent to it over a pipe. The parent watches every
worker's pipe and its process: a worker that dies (killed by a signal such as kill -9 or the
out-of-memory killer, or a crash in a native library) costs only the case it held. That case
runs once more in a fresh worker; if that worker dies too, the case is reported as failed
("the worker process died twice on this case …") and the batch goes on. The other workers keep
their model and their cases. A killed worker leaves no partial output: outputs are written under
temporary names and renamed into place at the end (its temporary file is removed the next time
that folder is written).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from medsam_gui.engine.batch import Case, Done, Outcome, run_case

Note = Callable[[str], None]
ATTEMPTS = 2  # a case whose worker dies runs once more, in a fresh worker


def _serve(conn: Connection, case_args: List[str], threads: int) -> None:
    """A worker: run the cases sent to it until it gets ``None`` or its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl+C
    while True:
        try:
            case = conn.recv()
        except (EOFError, OSError):
            return
        if case is None:
            return
        conn.send(run_case(case, case_args, threads))


@dataclass
class _Worker:
    process: "mp.process.BaseProcess"
    conn: Connection  # the parent's end of the pipe
    case: Optional[Case] = None
    attempt: int = 0  # 1: the case's first run, 2: its retry


def how_it_died(exitcode: Optional[int]) -> str:
    """A dead worker's exit code in words."""
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {"SIGKILL": ": out of memory, or killed", "SIGSEGV": ": a crash",
                "SIGABRT": ": a crash"}.get(name, "")
        return f"killed by {name}{hint}"
    return f"it exited with code {exitcode}"


class Pool:
    """The worker processes of one batch run."""

    def __init__(self, case_args: Sequence[str], threads: int) -> None:
        self.ctx = mp.get_context("spawn")
        self.case_args = list(case_args)
        self.threads = threads
        self.workers: List[_Worker] = []

    def start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(child, self.case_args, self.threads),
                                daemon=True, name="medsam-batch-worker")
        proc.start()
        child.close()
        worker = _Worker(proc, parent)
        self.workers.append(worker)
        return worker

    def give(self, worker: _Worker, case: Case, attempt: int) -> bool:
        """Send ``case`` to ``worker``; False when the worker is already gone."""
        worker.case, worker.attempt = case, attempt
        try:
            worker.conn.send(case)
        except (BrokenPipeError, OSError):
            return False
        return True

    def retire(self, worker: _Worker, timeout: float = 10.0) -> None:
        """Tell an idle worker to stop and wait for it (killed after ``timeout`` s)."""
        if worker in self.workers:
            self.workers.remove(worker)
        try:
            worker.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        worker.process.join(timeout)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5)
        worker.conn.close()

    def bury(self, worker: _Worker) -> Optional[int]:
        """Forget a dead worker; its exit code."""
        if worker in self.workers:
            self.workers.remove(worker)
        worker.process.join(5)
        worker.conn.close()
        return worker.process.exitcode

    def kill_all(self) -> None:
        for worker in list(self.workers):
            worker.process.kill()
        for worker in list(self.workers):
            self.bury(worker)


def run_pool(todo: Sequence[Case], case_args: Sequence[str], workers: int, done: Done,
             note: Note = lambda text: None) -> None:
    """Run ``todo`` on ``workers`` processes; ``done`` gets each case's outcome, ``note`` a line
    when a worker dies and its case is run again."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue: Deque[Tuple[Case, int]] = deque((c, 1) for c in todo)
    pool = Pool(case_args, threads)

    def feed(worker: _Worker) -> None:
        """Give ``worker`` the next case, or retire it when none is left."""
        if not queue:
            pool.retire(worker)
            return
        case, attempt = queue.popleft()
        if not pool.give(worker, case, attempt):  # it died before it got the case
            worker.case = None
            queue.appendleft((case, attempt))
            died(worker)

    def died(worker: _Worker) -> None:
        case, attempt = worker.case, worker.attempt
        how = how_it_died(pool.bury(worker))
        if case is not None and attempt < ATTEMPTS:
            note(f"case {case.n}: the worker process died ({how}); running it again in a "
                 "fresh worker")
            feed_to = pool.start()
            if not pool.give(feed_to, case, attempt + 1):
                died(feed_to)
        elif case is not None:
            done(Outcome(case.n, case.out, "failed", f"the worker process died twice on this "
                         f"case ({how})", attempts=attempt))
            if queue:
                feed(pool.start())
        elif queue:  # died between cases: replace it
            feed(pool.start())

    try:
        for _ in range(min(workers, len(queue))):
            feed(pool.start())
        while pool.workers:
            busy = {}
            for w in pool.workers:
                busy[w.conn] = w
                busy[w.process.sentinel] = w
            for ready in wait(list(busy)):
                worker = busy[ready]
                if worker not in pool.workers:
                    continue  # its pipe and its sentinel were both ready
                try:
                    outcome = worker.conn.recv() if worker.conn.poll() else None
                except (EOFError, OSError):
                    outcome = None
                if outcome is None:
                    if not worker.process.is_alive() or ready is worker.process.sentinel:
                        died(worker)
                    continue
                outcome.attempts = worker.attempt
                worker.case = None
                done(outcome)
                feed(worker)
    except KeyboardInterrupt:  # the cases not started are dropped, running ones stopped
        pool.kill_all()
        raise
    finally:
        pool.kill_all()
