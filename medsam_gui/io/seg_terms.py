"""What a segment is, in DICOM's coded terms: a short list of property types and a guess.

A DICOM SEG describes each segment by a segmented property category and type (SNOMED CT codes),
which viewers show and PACS index. The short list covers what this tool is used for; the
default for a label is guessed from its name ("liver", "kidney_left", "tumour core" …) and
falls back to Tissue / Tissue, which is also 3D Slicer's default for a new segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Tuple

from pydicom.sr.coding import Code

TISSUE = Code("85756007", "SCT", "Tissue")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")


@dataclass(frozen=True)
class PropertyType:
    """One choice of the list: the name shown, its category and type codes, RT interpretation."""

    key: str
    category: Code
    type: Code
    rt_type: str  # RTROIInterpretedType for an RT Structure Set ("ORGAN", "GTV", "")


def _anatomy(key: str, value: str, meaning: str) -> PropertyType:
    return PropertyType(key, ANATOMICAL_STRUCTURE, Code(value, "SCT", meaning), "ORGAN")


def _altered(key: str, value: str, meaning: str, rt: str = "") -> PropertyType:
    return PropertyType(key, MORPHOLOGICALLY_ALTERED, Code(value, "SCT", meaning), rt)


PROPERTY_TYPES: Dict[str, PropertyType] = {p.key: p for p in (
    PropertyType("Tissue", TISSUE, TISSUE, ""),
    _altered("Tumour (neoplasm)", "108369006", "Neoplasm", "GTV"),
    _altered("Lesion", "52988006", "Lesion"),
    _altered("Oedema", "79654002", "Edema"),
    _altered("Necrosis", "6574001", "Necrosis"),
    _altered("Cyst", "367643001", "Cyst"),
    _anatomy("Brain", "12738006", "Brain"),
    _anatomy("Liver", "10200004", "Liver"),
    _anatomy("Spleen", "78961009", "Spleen"),
    _anatomy("Kidney", "64033007", "Kidney"),
    _anatomy("Pancreas", "15776009", "Pancreas"),
    _anatomy("Stomach", "69695003", "Stomach"),
    _anatomy("Gallbladder", "28231008", "Gallbladder"),
    _anatomy("Lung", "39607008", "Lung"),
    _anatomy("Heart", "80891009", "Heart"),
    _anatomy("Aorta", "15825003", "Aorta"),
    _anatomy("Prostate", "41216001", "Prostate"),
    _anatomy("Vertebra", "51282000", "Vertebra"),
    _anatomy("Bone", "272673000", "Bone"),
    _anatomy("Organ", "91772007", "Organ"),
)}
DEFAULT_TYPE = "Tissue"

# words in a label name -> property type (checked in this order; whole words, any case)
_NAME_HINTS: Tuple[Tuple[str, str], ...] = (
    (r"tumou?rs?|neoplasms?|gtv|enhancing|core|metasta\w*|cancer|carcinoma", "Tumour (neoplasm)"),
    (r"o?edema", "Oedema"),
    (r"necro\w*", "Necrosis"),
    (r"cysts?", "Cyst"),
    (r"lesions?|nodules?|mass", "Lesion"),
    (r"vertebra\w*|[ctls]\d{1,2}", "Vertebra"),
)


def guess_property_type(name: str) -> str:
    """The list entry a label called ``name`` most likely is (``DEFAULT_TYPE`` if none)."""
    words = " ".join(re.split(r"[\s_\-./,()]+", name.lower()))
    for pattern, key in _NAME_HINTS:
        if re.search(rf"\b(?:{pattern})\b", words):
            return key
    for key, prop in PROPERTY_TYPES.items():
        if prop.category == ANATOMICAL_STRUCTURE and re.search(
                rf"\b{re.escape(key.lower())}s?\b", words):
            return key
    return DEFAULT_TYPE


def property_type(key: str) -> PropertyType:
    if key not in PROPERTY_TYPES:
        raise ValueError(f"unknown segment property type {key!r}; one of {list(PROPERTY_TYPES)}")
    return PROPERTY_TYPES[key]
