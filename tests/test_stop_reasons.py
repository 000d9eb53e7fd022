"""The window's stop reasons in a reader's words (``propagation_actions.plain_reason``): the
engine's terse reasons, as ``engine.propagation`` formats them, each reworded; a value at its
limit never reads as the limit itself."""

from __future__ import annotations

import pytest

import numpy as np

from medsam_gui.engine.propagation import StopRules, broken_rule

plain_reason = pytest.importorskip("medsam_gui.ui.propagation_actions").plain_reason


@pytest.mark.parametrize("terse, words", [
    ("moved 0.412 of its diameter (limit 0.35)", "jumped sideways by 41% of its width, limit 35%"),
    ("moved 0.353 of its diameter (limit 0.35)", "by 35.3% of its width, limit 35%"),
    ("moved 0.350 of its diameter (limit 0.35)", "by just over 35% of its width, limit 35%"),
    ("area grew 2.30x (limit 2x)", "the mask grew 2.30× from one slice to the next, limit 2×"),
    ("model IoU 0.41 below 0.5", "the model was unsure: score 0.41, below 0.5"),
    ("mask of 21 px (< 25)", "the mask shrank to 21 pixels, fewer than 25"),
    ("empty key slice 16", "slice 16 is marked empty"),
    ("met the front from key slice 80", "met the fill from slice 80"),
    ("key slice 12", "reached your slice 12"),
    ("something new", "something new"),
])
def test_engine_reasons_read_plainly(terse, words):
    assert words in plain_reason(terse)


def test_reasons_of_several_objects_are_each_reworded():
    said = plain_reason("empty mask; mask of 3 px (< 25)")
    assert said == "the structure ended; the mask shrank to 3 pixels, fewer than 25"


def _disk(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:128, :128]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_every_engine_reason_is_reworded():
    """Reasons made by the engine's own rule check (not copied strings): each is reworded, so
    a change of the engine's wording cannot reach the status bar raw unnoticed."""
    rules = StopRules()
    prev = _disk(64, 64, 10)
    d = 2 * np.sqrt(prev.sum() / np.pi)
    made = [
        broken_rule(rules, prev, np.zeros_like(prev), 0.9),
        broken_rule(rules, prev, _disk(64, 64, 2), 0.9),
        broken_rule(rules, prev, _disk(64, 64, 10), 0.3),
        broken_rule(rules, prev, _disk(64, 64, 16), 0.9),
        broken_rule(rules, prev, _disk(64, 64 + 0.36 * d, 10), 0.9),
        broken_rule(rules, prev, _disk(64, 64 + 0.3502 * d, 10), 0.9),
    ]
    assert all(made), made
    for terse in made:
        said = plain_reason(terse)
        assert said != terse and "(limit" not in said and "px" not in said, (terse, said)
    assert broken_rule(rules, prev, _disk(64, 64 + 0.3 * d, 10), 0.9) is None
