"""Fairness metrics: accuracy overall and per demographic group, and the spread between groups (FairFace).

FairFace labels every face with three attributes: gender (2 classes), race (7) and age group (9). A
FairFace task classifies one of them (tasks/fairface_<attribute>.yaml), and its accuracy is broken
down by the groups of *all three*: how well the model recognises gender among the faces labelled
"East Asian", among those labelled "more than 70", and so on. The breakdown is what the IDEFICS model
card's bias section asks of FairFace; the overall accuracy alone hides a model that serves some
groups well and others badly.

Definitions (`fairness_report`, all values x100):

* `accuracy`: the fraction of queries whose top-ranked candidate is the label.
* `accuracy/<attribute>=<group>`: the same fraction among the queries of that group (e.g.
  `accuracy/race=Indian`). A query with no value for an attribute counts in the overall accuracy and
  in the other attributes' groups only.
* `spread/<attribute>`: the best-served group's accuracy minus the worst-served group's, over the
  groups of that attribute present in the evaluated queries (0 with one group): the max-min gap
  of the group accuracies. It is not weighted by group size, so a small group counts as much as a
  large one, and on a small or `--limit`ed run it is noisy (see the long export's bootstrap
  intervals).

The groups are the dataset's own label values (FairFace's CSV: `Male`, `Female`; `White`, `Black`,
`Latino_Hispanic`, `East Asian`, `Southeast Asian`, `Indian`, `Middle Eastern`; `0-2`, `3-9`,
`10-19`, ..., `60-69`, `more than 70`), listed in natural order (`3-9` before `10-19`).
Checked by tests/metrics/test_fairness.py on hand-made cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FAIRFACE_ATTRIBUTES", "HF_CLASS_NAMES", "fairness_report", "group_value"]

FAIRFACE_ATTRIBUTES = ("gender", "race", "age")

# The class order of HuggingFaceM4/FairFace's ClassLabel columns (its dataset card): an integer value
# in those columns is an index into these lists.
HF_CLASS_NAMES = {
    "gender": ("Male", "Female"),
    "race": ("East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic", "Southeast Asian"),
    "age": ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"),
}


def _natural(text: str) -> tuple:
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def fairness_report(correct: Sequence[bool | float], groups: Mapping[str, Sequence[str | None]]) -> dict[str, float]:
    """Accuracy (x100) overall, per group of each attribute, and each attribute's spread.

    `correct[i]` says whether query i was answered correctly (a bool, or a 0/1 score). `groups` maps an
    attribute name (e.g. "race") to each query's group under it (`groups["race"][i]`, None where query i
    has none). Returns `{"accuracy": ..., "accuracy/<attribute>=<group>": ..., ...,
    "spread/<attribute>": ...}`, the attributes in the order given and their groups in natural order.
    Raises ValueError without queries or when a group list's length differs from `correct`'s.
    """
    scores = [float(value) for value in correct]
    if not scores:
        raise ValueError("no queries to score")
    if any(value not in (0.0, 1.0) for value in scores):
        raise ValueError("correct must hold booleans or 0/1 scores")
    result = {"accuracy": 100.0 * sum(scores) / len(scores)}
    spreads: dict[str, float] = {}
    for attribute, values in groups.items():
        if len(values) != len(scores):
            raise ValueError(f"{len(values)} {attribute} values but {len(scores)} queries")
        members: dict[str, list[float]] = {}
        for score, value in zip(scores, values):
            if value is not None:
                members.setdefault(str(value), []).append(score)
        by_group = {group: 100.0 * sum(members[group]) / len(members[group]) for group in sorted(members, key=_natural)}
        for group, value in by_group.items():
            result[f"accuracy/{attribute}={group}"] = value
        if by_group:
            spreads[f"spread/{attribute}"] = max(by_group.values()) - min(by_group.values())
    return result | spreads


def group_value(metadata: Mapping[str, Any], fields: Mapping[str, str], attribute: str) -> str | None:
    """A query's group under `attribute`: its metadata value (the FairFace CSV reader puts all three
    there), else a prompt field of that name (a Hugging Face column mapped in the task file): an
    integer there is a HuggingFaceM4/FairFace ClassLabel index and is named by `HF_CLASS_NAMES`."""
    value = metadata.get(attribute)
    if value is None:
        value = fields.get(attribute)
        if value is None:
            return None
        text = str(value).strip()
        names = HF_CLASS_NAMES.get(attribute)
        if names is not None and text.isdigit():
            index = int(text)
            if index >= len(names):
                raise ValueError(f"{attribute} class index {index} is outside HuggingFaceM4/FairFace's {len(names)} classes")
            return names[index]
        return text
    return str(value)
