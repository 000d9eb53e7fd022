#!/usr/bin/env python
"""Queue-guided corrections: 3D Dice after one box and after 1, 2, 3 corrections on the slices
the review queue puts first, against corrections on evenly spaced slices.

    python benchmarks/bench_queue.py [--only CT,T1c] [--rules old,default] [--users box,gt,clicks]
                                     [--updates full,around-all,around] [--no-even]
    python benchmarks/bench_queue.py --rules default --users box,box:union,clicks,clicks:union,gt \
                                     --updates full --no-even      # box corrections of a fill

A simulated person (axial, one structure at a time) starts from a ground-truth box on the
structure's largest slice, propagated (``engine.key_slices``, default stop rules). Then each
correction goes on a slice:

- queue: the first slice of ``annotation.review_queue.label_queue`` not yet touched (``--rules``:
  ``old`` = the previous weights, braked ends first and no size factor; ``default`` = the
  module's; ``noend``, ``size1`` one change each); ``empty`` key slice where the structure is
  absent;
- even: c corrections evenly spaced over the structure's true extent, all key slices
  propagated at once (a generous baseline: the person is told where the structure is).

Three models of the person (``--users``): ``box`` (the issue's: a correction is the model's mask
for a ground-truth box), ``gt`` (what the window lets a clinician do: the box, then brush
and click until the slice is right; the key slice is the reference mask, the first one too) and
``clicks`` (the ground-truth box, then up to 3 corrective clicks through the window's click path
``Session.predict(axis, index, box, points)`` with all clicks so far, each at the centre of the
largest error region, positive on a miss and negative on a leak: ``refine.corrective_click``,
bench_clicks' simulated user; the last mask is the key slice, the first one too).
``box:METHOD`` and ``clicks:METHOD``: a box drawn on a slice that holds an unreviewed fill
corrects that fill (``engine.correction.METHODS``; the default, ``union``, goes through
``Session.predict(..., previous_mask=fill)`` as the window does, and clicks go on from it).
And three ways to propagate after a correction (``--updates``): ``full`` (all gaps again from
all key slices, as ``medsam-segment --boxes ... --propagate``), ``around-all`` (the window's
Propagate on the fixed slice: only the gaps beside it, every slice its fronts reach replaced),
``around`` (the same, keeping the old fill where the new front's model IoU is not higher);
``window`` (the gaps beside the fixed slice, then the old fills there its fronts did not
reach removed: what the window does, equal to ``full``) and ``agree`` (the same, but a front
stops where it agrees with the old fill and leaves the fills beyond: ``key_slices`` ``fills``).
The model's answer to one prompt does not change, so answers are kept per (slice, box) across
arms; embeddings are kept on disk (``--cache-dir``).

Measured (AMD EPYC, 2 cores shared with other jobs; abdominal CT and MR 4 organs each, BRATS
pat0001 FLAIR whole tumour, BRATS pat0002 T1c tumour core (labels 1, 3, 4)); 3D Dice after one
box / +1 / +2 / +3 corrections, per kind; "mean" weighs the four kinds the same; "lowered":
corrections (of 30) that lowered a structure's 3D Dice by more than 0.001.

The person fixes each corrected slice (gt):

    arm                        FLAIR              T1c                CT (4)             MR (4)             mean                lowered
    queue new, full            .844 .848 .850 .853 .441 .489 .534 .616 .903 .940 .944 .947 .782 .808 .824 .838 .742 .771 .788 .814  2
    queue new, around-all      .844 .848 .850 .853 .441 .455 .494 .547 .903 .940 .944 .947 .782 .808 .824 .838 .742 .763 .778 .796  2
    queue new, around (keep)   .844 .848 .849 .852 .441 .455 .468 .482 .903 .933 .939 .946 .782 .809 .822 .836 .742 .761 .769 .779  1
    queue old, full            .844 .844 .852 .853 .441 .446 .446 .456 .903 .917 .918 .919 .782 .790 .833 .844 .742 .749 .762 .768  2
    even, full                 .844 .847 .854 .861 .441 .484 .561 .596 .903 .931 .940 .937 .782 .793 .821 .826 .742 .764 .794 .805  4

Box only (the issue's simulated person):

    queue new, full            .840 .839 .839 .839 .469 .523 .581 .576 .880 .869 .882 .886 .531 .652 .666 .650 .680 .721 .742 .738 10
    queue new, around-all      .840 .839 .839 .839 .469 .481 .507 .501 .880 .869 .882 .886 .531 .652 .666 .650 .680 .710 .724 .719 10
    queue old, full            .840 .836 .838 .834 .469 .474 .475 .468 .880 .894 .892 .893 .531 .693 .685 .730 .680 .724 .722 .731 10
    queue old, around (keep)   .840 .836 .838 .834 .469 .474 .475 .468 .880 .895 .894 .897 .531 .705 .703 .712 .680 .728 .728 .728  7
    even, full                 .840 .840 .845 .848 .469 .515 .595 .536 .880 .905 .916 .904 .531 .684 .701 .714 .680 .736 .764 .750  8

Box then up to 3 clicks (the person ``clicks``), ``full`` update (what the window's
``propagate_into`` now gives: ``propagate_keys(around=k)``, then the old unreviewed fills in
``rewritten_span`` the new fronts did not reach removed); the same run's box and gt rows for
reference (within 0.001 of the tables above); load 0.5 to 2.6:

    arm                        FLAIR              T1c                CT (4)             MR (4)             mean                lowered
    queue new, clicks          .840 .841 .840 .841 .440 .478 .534 .608 .898 .896 .929 .932 .754 .767 .771 .764 .733 .746 .769 .786  6
    even, clicks               .840 .841 .847 .849 .440 .483 .561 .591 .898 .921 .930 .919 .754 .765 .759 .776 .733 .752 .774 .784  8
    queue new, gt              .844 .848 .850 .853 .441 .489 .534 .616 .903 .940 .944 .947 .782 .809 .824 .838 .742 .771 .788 .813  2
    queue new, box             .840 .839 .839 .839 .469 .523 .581 .576 .880 .868 .882 .886 .531 .652 .666 .651 .680 .721 .742 .738 10

("lowered" here read from the per-structure curves at 3 decimals; 3 more drops of 0.001 or less
for queue/clicks and for even/clicks.) Clicks on the key slice land between a box and a fixed
slice: after 3 queue-guided corrections 0.786 against 0.738 (box) and 0.813 (gt). Most of the
lead over ``box`` is the first slice already (0.733 against 0.680: the MR spleen's box gives
0.042 in 3D, with clicks 0.740). Queue-guided and evenly spaced corrections tie with clicks
(+1 .746/.752, +2 .769/.774, +3 .786/.784); the queue wins on CT (+3 .932/.919) and T1c
(.608/.591), loses on MR (.764/.776) and FLAIR (.841/.849). Clicks do not converge on MR: the
queue's +3 lowers the MR mean (.771 -> .764; MR spleen .753 -> .730, MR kidney R queue slices
0, 1, 2 lowered twice), where gt corrections on the same kind gain .809 -> .838. The 6 queue
drops: CT liver +2, CT kidney R +1 (.924 -> .914), CT kidney L +1, MR spleen +3, MR kidney R
+2, +3. On FLAIR the queue sends box, gt and click corrections to slices 68, 67, 66: box and
clicks change little there (-0.001, +0.001), gt +0.009. On the T1c core the clicks on the first
slice lower the one-box 3D Dice (.440 against .469 for its box alone, as gt does).

A box on a filled slice corrects the fill (``engine.correction``, ``union``: the fill inside the
box, with the box's own mask added), before and after in one run per person; the gt person's
key slice is the reference mask, so correcting a fill does not apply to it (load 4 to 6):

    arm                        FLAIR              T1c                CT (4)             MR (4)             mean                lowered
    box  (before)              .840 .839 .839 .839 .469 .523 .581 .576 .880 .868 .882 .886 .531 .652 .666 .651 .680 .721 .742 .738 11
    box:union (after)          .840 .840 .840 .842 .469 .528 .597 .597 .880 .884 .885 .890 .531 .678 .686 .692 .680 .732 .752 .756  1
    clicks (before)            .840 .841 .840 .841 .440 .478 .534 .608 .898 .896 .929 .932 .754 .767 .771 .764 .733 .746 .769 .786  6
    clicks:union (after)       .840 .841 .841 .842 .440 .474 .531 .604 .898 .932 .933 .936 .754 .772 .777 .795 .733 .755 .771 .794  1
    gt                         .844 .848 .850 .853 .441 .489 .534 .616 .903 .940 .944 .947 .782 .809 .824 .838 .742 .771 .788 .813  2

(box, box:union and gt from one run; clicks and clicks:union from a second run that repeated
box:union to the digit: the first run's clicks row had read a corrected state the box:union arm
left in the session, which kept answers skip; clicks now use the session itself.) With the fill
corrected, every kind's mean rises or stays at every step for box and clicks corrections; the
one box drop is the CT left kidney's third (0.918 -> 0.909, slice 6), the clicks one the CT
right kidney's first (0.924 -> 0.916; before: 0.924 -> 0.914). Other corrections measured in the first
run (``engine.correction``'s docstring): the box's mask when the fill does not reach the box's
edges, else the fill inside the box (``span``) .746 after 3, lowered 7; the higher model score
of the two (``score``) .749, 2; the fill's logits as SAM's mask prompt (``prompt``) .711, 9.
Handing over to the old fill where a new front agrees with it (``--updates agree``) was worse
for every person: box:union .742 after 3 (lowered 5), gt .793 against .813.

What it says (box and gt). (1) A person's fix converges, a box alone does not: with gt
corrections the new queue raises the mean 3D Dice at every step on every kind (two drops in 30:
CT liver +3 0.936 -> 0.932, CT right kidney +1 0.931 -> 0.927, where the model's IoU preferred a
worse front), while a box on a slice where the model is unsure gets an unsure mask back about
one time in three.
(2) The queue's size factor and no bonus for braked ends (``review_queue``, the default now)
send the person to large unsure slices instead of the organs' ends: gt mean after 3 corrections
0.814 against 0.768 with the old weights, and above evenly spaced corrections (0.805, +1 and +3;
+2 0.788 against 0.794). With box-only corrections the old weights did as well (0.731 against
0.738 after 3, lower after 1). (3) How to propagate after a correction: all gaps again (``full``)
was best; the window's ``around`` equals it on CT, MR and FLAIR but not on the T1c core (0.547
against 0.616 after 3): after ``around`` the old fills the new fronts do not reach stay (a
front that ran past the fixed slice), ``full`` drops them. Keeping the old fill where the new
front is less sure (``around``, ``current``) helped the CT liver (0.943 against 0.932) and cost
the T1c core more (0.482 against 0.547): not used by the window.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bench_model_input import DATA, cpu_model  # noqa: E402
from medsam_gui.annotation import review_queue  # noqa: E402
from medsam_gui.annotation.labels import LabelMap, SliceRecord  # noqa: E402
from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine.evaluate import dice, mask_box  # noqa: E402
from medsam_gui.engine.correction import DEFAULT_METHOD as DEFAULT_FIX  # noqa: E402
from medsam_gui.engine.correction import correct_fill  # noqa: E402
from medsam_gui.engine.key_slices import (DEFAULT_MEET, kept_fills, rewritten_span,  # noqa: E402
                                          run_keys, stop_text)
from medsam_gui.engine.refine import corrective_click  # noqa: E402  (bench_clicks' user)
from medsam_gui.io import load_volume  # noqa: E402

BRATS = DATA / "brain_tumour_brats2015"
ABD = DATA / "abdomen_totalsegmentator"
ORGANS = {"liver": 5, "spleen": 1, "kidney R": 2, "kidney L": 3}
ROUNDS = 3
CLICKS = 3  # the clicks person: corrective clicks on a key slice after its box
# queue rules: label_queue keyword arguments
RULES = {
    "old": dict(weights={"iou": 1.0, "area": 0.25, "shape": 0.25, "end": 0.5}, size_power=0.0),
    "noend": dict(weights={"iou": 1.0, "area": 0.25, "shape": 0.25, "end": 0.0},
                  size_power=0.0),
    "size1": dict(weights={"iou": 1.0, "area": 0.25, "shape": 0.25, "end": 0.5},
                  size_power=1.0),
    "noend size1": dict(weights={"iou": 1.0, "area": 0.25, "shape": 0.25, "end": 0.0},
                        size_power=1.0),
    "default": {},
}


class Memo:
    """A session whose answers are kept by (axis, slice, box): the arms repeat the same
    prompts, and the model's answer to one prompt does not change."""

    def __init__(self, session):
        self.session, self.volume, self.memo = session, session.volume, {}

    def __getattr__(self, name):  # embed, backend, ...: the session's
        return getattr(self.session, name)

    def predict(self, axis, index, box, points=None):
        key = (axis, int(index), tuple(round(float(v), 3) for v in box),
               tuple(tuple(p) for p in points or ()))
        if key not in self.memo:
            self.memo[key] = self.session.predict(axis, index, box, points)
        return self.memo[key]


def structures():
    """(kind, name, volume, truth3d), axial."""
    for kind, image, labels in (("abdominal CT", "example_ct_sm", "example_seg"),
                                ("abdominal MR", "example_mr_sm", "example_seg_mr")):
        vol = load_volume(ABD / f"{image}.nii.gz")
        seg = np.asarray(nib.load(str(ABD / f"{labels}.nii.gz")).dataobj)
        for name, v in ORGANS.items():
            yield kind, name, vol, seg == v
    pat = BRATS / "brats_2013_pat0001_1"
    gt = np.asarray(nib.load(str(pat / "OTMultiClass.nii.gz")).dataobj)
    yield ("BRATS FLAIR", "pat0001 whole tumour",
           load_volume(pat / "Flair_subtrMeanDivStd.nii.gz"), gt > 0)
    pat = BRATS / "brats_2013_pat0002_1"
    gt = np.asarray(nib.load(str(pat / "OTMultiClass.nii.gz")).dataobj)
    yield ("BRATS T1c", "pat0002 tumour core",
           load_volume(pat / "T1c_subtrMeanDivStd.nii.gz"), np.isin(gt, (1, 3, 4)))


class Structure:
    """One structure's key slices, its fill and the label map the queue reads.

    ``user``: "box" (a correction is the model's mask of a ground-truth box) or "gt" (the
    person fixes the slice after the box: the key slice is the ground-truth mask).
    ``update``: "full" (propagate again from all key slices, as ``medsam-segment --boxes``)
    or "around" (the window: only the gaps beside the new key slice, keeping the old fill
    where the new front is less sure, ``propagate_keys(around=, current=)``), or "around-all"
    (only the gaps beside the new key slice, every slice its fronts reach replaced)."""

    def __init__(self, session, truth3d, user="box", update="full", meet=DEFAULT_MEET):
        user, _, self.fix = user.partition(":")  # box:span = a box correcting a fill
        self.session, self.user, self.update, self.meet = session, user, update, meet
        self.geom = session.volume.geometry("axial")
        self.truth = [self.geom.take(truth3d, i).astype(bool) for i in range(self.geom.n_slices)]
        self.truth3d = truth3d
        self.keys = {}  # slice -> [mask] or [] (empty key)
        self.boxes = {}
        self.masks, self.ious, self.stops, self.sources = {}, {}, {}, {}
        self.prompts = {}  # filled slice -> the prompt box that made it

    def add_key(self, k: int) -> None:
        if self.truth[k].any():
            box = mask_box(self.truth[k])
            session = self.session  # answers kept per prompt
            if self.user == "clicks" or self.fix == DEFAULT_FIX:
                # the session itself: clicks go on from the state its last box left on the
                # slice (a kept answer would skip that)
                session = getattr(self.session, "session", self.session)
            if self.fix == DEFAULT_FIX and k in self.ious:
                # a box drawn on an unreviewed fill, as the window does it
                mask = session.predict("axial", k, box, None, self.masks[k]).mask
            elif self.fix and k in self.ious:  # the other corrections measured
                mask, _iou = correct_fill(self.session, "axial", k, box, self.masks[k],
                                          self.ious[k], self.prompts.get(k), self.fix)
            else:
                mask = session.predict("axial", k, box).mask
            if self.user == "clicks":
                # the window's click path: all clicks so far, each at the centre of the
                # largest error region of the current mask (bench_clicks' simulated user)
                points = []
                for _ in range(CLICKS):
                    c = corrective_click(self.truth[k], mask)
                    if c is None:
                        break
                    points.append(c)
                    mask = session.predict("axial", k, box, points).mask
            self.keys[k] = [self.truth[k].copy() if self.user == "gt" else mask]
            self.boxes[k] = box
        else:
            self.keys[k] = []
        for d in (self.masks, self.ious, self.stops, self.sources, self.prompts):
            d.pop(k, None)
        if self.keys[k]:
            self.masks[k] = self.keys[k][0]
        self.last = k

    def propagate(self) -> None:
        if self.update in ("window", "agree") and len(self.keys) > 1:
            # the window: the gaps beside the new key slice; old fills there that no new front
            # wrote are dropped, but ("agree") a front stops where it agrees with the old fill
            # and leaves that fill and those beyond it
            fills = {i: self.masks[i] for i in self.ious} if self.update == "agree" else None
            result = run_keys(self.session, "axial", self.keys, meet=self.meet,
                              around=self.last, fills=fills)
            span = rewritten_span(self.keys, self.last, self.geom.n_slices)
            keep = set(kept_fills(result.stops, span, lambda i: i not in self.keys))
            keep |= {s.index for s in result.steps}
            for i in range(span[0], span[1] + 1):
                if i in self.ious and i not in keep:
                    for d in (self.masks, self.ious, self.stops, self.sources, self.prompts):
                        d.pop(i, None)
        elif self.update.startswith("around") and len(self.keys) > 1:
            current = dict(self.ious) if self.update == "around" else None
            result = run_keys(self.session, "axial", self.keys, meet=self.meet,
                              around=self.last, current=current)
        else:
            result = run_keys(self.session, "axial", self.keys, meet=self.meet)
            self.masks = {k: m[0] for k, m in self.keys.items() if m}
            self.ious, self.stops, self.sources, self.prompts = {}, {}, {}, {}
        stops = {(s.seed, s.direction): stop_text("axial", s) for s in result.stops}
        for s in result.steps:
            self.masks[s.index], self.ious[s.index] = s.mask, s.iou
            self.stops[s.index] = stops.get((s.seed, s.direction), "")
            self.sources[s.index] = s.source
            if len(s.boxes) == 1:
                self.prompts[s.index] = s.boxes[0]

    def dice3d(self) -> float:
        pred = np.zeros(self.truth3d.shape, bool)
        for i, m in self.masks.items():
            self.geom.take(pred, i)[...] = m
        return dice(pred, self.truth3d)

    def labelmap(self) -> LabelMap:
        lm = LabelMap(self.truth3d.shape)
        for k, m in self.keys.items():
            lm.records[("axial", k, 1)] = SliceRecord(
                "axial", k, 1, status="edited" if (not m or self.user == "gt") else "model",
                boxes=[list(self.boxes[k])] if m else [])
        for i, iou in self.ious.items():
            lm.records[("axial", i, 1)] = SliceRecord(
                "axial", i, 1, iou=iou, method="propagated", from_slices=[self.sources[i]],
                stop_reason=self.stops[i])
        for i, m in self.masks.items():
            self.geom.take(lm.array, i)[m] = 1
        return lm

    def queued_slice(self, rule):
        for item in review_queue.label_queue(self.labelmap(), self.geom, 1, **rule):
            if item.slice not in self.keys:
                return item.slice
        return None


def evenly_spaced(truth, seed: int, c: int):
    present = [i for i, t in enumerate(truth) if t.any()]
    lo, hi = present[0], present[-1]
    out = []
    for p in np.linspace(lo, hi, c + 2)[1:-1]:
        k = int(round(p))
        while k in out or k == seed:
            k += 1 if k < hi else -1
        out.append(k)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="",
                    help="structures whose kind + name contains one of these (comma-separated)")
    ap.add_argument("--rules", default="old,default", help="queue rules: " + ",".join(RULES))
    ap.add_argument("--users", default="box,gt", help="box,gt,clicks")
    ap.add_argument("--updates", default="full,around-all",
                    help="full,around-all,around")
    ap.add_argument("--no-even", action="store_true")
    ap.add_argument("--cache-dir", default="/tmp/medsam_bench_clicks_cache")
    args = ap.parse_args(argv)
    rules = [r for r in args.rules.split(",") if r]
    users = [u for u in args.users.split(",") if u]
    updates = [u for u in args.updates.split(",") if u]
    backend = load_backend("litemedsam")
    cache = EmbeddingCache(disk_dir=args.cache_dir)
    rows = defaultdict(list)  # (kind, arm) -> [[dice after 0..3]]
    drops = defaultdict(int)  # arm -> corrections that lowered a structure's 3D Dice
    t_all = time.perf_counter()
    for kind, name, vol, truth3d in structures():
        if args.only and not any(o in f"{kind} {name}" for o in args.only.split(",")):
            continue
        session = Memo(Session(vol, backend, cache))
        geom = vol.geometry("axial")
        areas = [int(geom.take(truth3d, i).sum()) for i in range(geom.n_slices)]
        seed = int(np.argmax(areas))
        line = []
        for user in users:
            for update in updates:
                for rule in rules:
                    arm = f"queue {rule} / {user} / {update}"
                    s = Structure(session, truth3d, user, update)
                    s.add_key(seed)
                    s.propagate()
                    curve, picked = [s.dice3d()], []
                    for _ in range(ROUNDS):
                        k = s.queued_slice(RULES[rule])
                        if k is not None:
                            picked.append(k)
                            s.add_key(k)
                            s.propagate()
                        curve.append(s.dice3d())
                        drops[arm] += curve[-1] < curve[-2] - 1e-3
                    rows[(kind, arm)].append(curve)
                    line.append(f"{arm} {picked} " + " ".join(f"{v:.3f}" for v in curve))
            if args.no_even:
                continue
            arm = f"even / {user} / full"
            s = Structure(session, truth3d, user)
            s.add_key(seed)
            s.propagate()
            curve = [s.dice3d()]
            for c in range(1, ROUNDS + 1):
                e = Structure(session, truth3d, user)
                for k in [seed] + evenly_spaced(e.truth, seed, c):
                    e.add_key(k)
                e.propagate()
                curve.append(e.dice3d())
                drops[arm] += curve[-1] < curve[-2] - 1e-3
            rows[(kind, arm)].append(curve)
            line.append(f"{arm} " + " ".join(f"{v:.3f}" for v in curve))
        print(f"  {kind} {name}:\n    " + "\n    ".join(line), file=sys.stderr, flush=True)
    print(f"CPU: {cpu_model()}; axial; a ground-truth box on the largest slice, then corrections "
          f"(a ground-truth box, or an empty key slice where the structure is absent); "
          f"{time.perf_counter() - t_all:.0f} s in all\n")
    print("| kind | arm (where / user / update) | structures | 1 box | +1 | +2 | +3 |")
    print("|---|---|---|---|---|---|---|")
    overall = defaultdict(list)
    for (kind, arm), curves in sorted(rows.items()):
        c = np.asarray(curves)
        overall[arm].append(c.mean(0))
        print(f"| {kind} | {arm} | {len(c)} | " + " | ".join(f"{v:.3f}" for v in c.mean(0))
              + " |")
    print("\nmean over kinds (each kind weighs the same); corrections that lowered a "
          "structure's 3D Dice:")
    for arm, r in sorted(overall.items()):
        print(f"  {arm:36s} " + " ".join(f"{v:.3f}" for v in np.mean(r, 0))
              + f"   lowered {drops[arm]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
