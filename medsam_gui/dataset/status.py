"""Where each case stands: new, in progress, to review, done; reviewed-slice counts and time.

Read from the manifest (what the user decided: "to review", "done", who and when, time spent)
and from the case's workspace, whose ``annotation.json`` alone is read (no label map is
decompressed, so the status of hundreds of cases is quick):

- ``new``: nothing saved for the case;
- ``in progress``: work saved, the user has not set a state;
- ``to review`` / ``done``: as the user (or ``add --labels``) set it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from medsam_gui.annotation.labels import REVIEWED
from medsam_gui.dataset.manifest import Case, Dataset

STATUSES = ("new", "in progress", "to review", "done")


@dataclass
class CaseStatus:
    id: str
    status: str  # one of STATUSES ("excluded" for an excluded case)
    image: str
    series_uid: Optional[str]
    labels: List[str] = field(default_factory=list)  # names in the case's label table
    reviewed_slices: int = 0  # (view, slice) pairs with at least one reviewed label
    unreviewed_slices: int = 0  # (view, slice) pairs with machine-made, unreviewed labels
    reviewed_records: int = 0  # (view, slice, label) triples a person edited or accepted
    seconds: float = 0.0
    done_by: str = ""
    done_at: str = ""
    problem: str = ""  # the workspace could not be read

    def to_json(self) -> dict:
        return asdict(self)


def read_work_summary(ds: Dataset, case: Case) -> Optional[dict]:
    """The case's saved annotation.json (None when nothing is saved)."""
    from medsam_gui.annotation.saved_work import JSON_FILE

    ws = ds.workspace(case)
    dirs = ws.entry_dirs()
    if not dirs:
        return None
    path = dirs[0] / JSON_FILE
    if not path.is_file():  # only backups (a torn save): the newest whole one
        from medsam_gui.annotation import generations as gens

        found = gens.list_generations(dirs[0])
        if not found:
            return None
        path = found[0].folder / JSON_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def case_status(ds: Dataset, case: Case) -> CaseStatus:
    st = CaseStatus(case.id, "new", case.image, case.series_uid, seconds=case.seconds,
                    done_by=case.done_by, done_at=case.done_at)
    try:
        meta = read_work_summary(ds, case)
    except (OSError, ValueError) as exc:
        meta, st.problem = None, f"saved work unreadable ({type(exc).__name__})"
    if meta is not None:
        st.status = "in progress"
        st.labels = [str(lab.get("name", "")) for lab in meta.get("labels", [])]
        reviewed, unreviewed = set(), set()
        for rec in meta.get("slices", []):
            key = (rec.get("axis"), rec.get("index"))
            if rec.get("status") in REVIEWED:
                reviewed.add(key)
                st.reviewed_records += 1
            else:
                unreviewed.add(key)
        st.reviewed_slices = len(reviewed)
        st.unreviewed_slices = len(unreviewed - reviewed)
    if case.state:
        st.status = case.state
    if case.excluded:
        st.status = "excluded"
    return st


def dataset_status(ds: Dataset, include_excluded: bool = False) -> List[CaseStatus]:
    cases = ds.cases if include_excluded else ds.active()
    return [case_status(ds, c) for c in cases]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def table_text(statuses: List[CaseStatus]) -> str:
    """A plain-text table for the terminal, with a total line."""
    head = ("case", "status", "reviewed", "unreviewed", "time", "labels", "done by")
    rows = [(s.id, s.status + (" (!)" if s.problem else ""), str(s.reviewed_slices),
             str(s.unreviewed_slices), _hms(s.seconds), ", ".join(s.labels)[:40],
             s.done_by) for s in statuses]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head] + rows]
    counts = {k: sum(1 for s in statuses if s.status == k) for k in STATUSES}
    lines.append(f"{len(statuses)} cases: " + ", ".join(f"{n} {k}" for k, n in counts.items())
                 + f"; {sum(s.reviewed_slices for s in statuses)} reviewed slices; "
                 f"{_hms(sum(s.seconds for s in statuses))} spent")
    lines += [f"{s.id}: {s.problem}" for s in statuses if s.problem]
    return "\n".join(lines)
