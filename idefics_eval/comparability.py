"""Comparability: whether two results rows' numbers may stand side by side, read from what they record.

A row's `config` records how its number was made (runner.py). `settings(row)` names what changes a
number, under the names of the options that set it (`num_beams`, `limit`, `selection`, ...) and `n`,
the queries scored; `differences(a, b)` lists what differs between two rows in the words reports
print ("num_beams 1 vs 3", "limit 8 vs full", "selection rices vs random", "split selection (1024, seed 0)
vs reporting": a selection-split row never compares with a reporting one); `partial(row)` says why a
row scored fewer queries than a full run would (`--limit`, the bundled demo data, skipped queries).
export, compare and plot all decide through these three, so they cannot disagree.

A setting a row does not record (written before it was recorded) is unknown and left out of the
comparison: old results files stay readable, and unknown is not reported as a difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .formats import BUNDLED
from .results import Result

FULL = "full"
# Settings of one task: compared between rows of the same task only (tasks have their own defaults).
TASK_SETTINGS = frozenset({"task file", "prompt", "queries", "n", "max_new_tokens", "num_beams", "stop_words",
                           "first_line", "strip_quotes", "length_penalty", "early_stopping", "banned_words",
                           "add_start_token", "support"})
# What the shots depend on: compared between few-shot rows only (a zero-shot row shows no shots).
SHOT_SETTINGS = frozenset({"encoder", "support", "seeds"})
# Used by generated answers only, not by ranked or matched candidates.
GENERATION_ONLY = ("num_beams", "max_new_tokens", "stop_words", "first_line", "strip_quotes", "length_penalty",
                   "early_stopping", "banned_words")
# What a row's banned_words None means (engine.banned_token_ids).
DEFAULT_BAN = "every newline token and the image tokens"
# The generation options given on the command line: compared between tasks (each task's own
# resolved settings are compared between rows of that task).
CROSS_TASK_SETTINGS = frozenset({"generation options"})
# Reasons for being partial, not settings: export marks them (--allow-partial) instead of refusing a mix.
PARTIAL_SETTINGS = frozenset({"limit", "demo data"})


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):  # JSON, so that a stop word "\n" stays on one line
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


def _short(digest: str | None) -> str:
    return f" ({digest[:8]})" if digest else ""


def bundled_data(source: str | None) -> bool:
    """Whether `source` (a data folder or hub id) is the bundled sample data; a row written from
    another checkout is known by its path's end."""
    if not source:
        return False
    path = Path(source)
    return path.resolve().is_relative_to(BUNDLED) or path.parts[-4:-1] == ("idefics_eval", "demo", "data")


def is_demo_data(row: Result) -> bool | None:
    """Whether the row's queries are the bundled sample data (None: the row does not say)."""
    if "demo_data" in row.config:
        return bool(row.config["demo_data"])
    source = row.config.get("data", {}).get("source")
    return bundled_data(source) if source else None


def split_of(row: Result) -> str:
    """The row's queries as text: "reporting" (the task's query split; every row made before selection
    splits existed), or "selection (SIZE, seed SEED)" for a selection split held out of train."""
    split = row.config.get("split") or {}
    if split.get("name") != "selection":
        return "reporting"
    return f"selection ({split.get('size')}, seed {split.get('seed')})"


def is_selection(row: Result) -> bool:
    """Whether the row scored a selection split (for choosing checkpoints and prompts, never reported)."""
    return split_of(row) != "reporting"


def settings(row: Result) -> dict[str, str]:
    """The row's settings that change its numbers, by name, as text; unrecorded ones are absent."""
    config = row.config
    found: dict[str, object] = {"n": row.num_examples, "selection": row.selection, "split": split_of(row)}
    model, task, prompt, data = (config.get(key, {}) for key in ("model", "task", "prompt", "data"))
    if model:
        found["model"] = model.get("name", "unknown") + _short(model.get("fingerprint"))
        found["weights checksum"] = model.get("weights_checksum")  # tells apart weights of one sampled fingerprint
        found["dtype"] = model.get("dtype")
        found["processor"] = model.get("processor", "")[:8] or None  # the tokenizer's and image processor's digest
    if task:
        found["task file"] = f"v{task.get('version')}{_short(task.get('digest'))}"
    if prompt:
        found["prompt"] = f"{prompt.get('name')} v{prompt.get('version')}{_short(prompt.get('digest'))}"
    if data.get("query_split"):
        found["queries"] = f"{data['query_split']}{_short(data.get('query_fingerprint'))}"
    found["demo data"] = is_demo_data(row)
    if "limit" in config:
        limit, total = config["limit"], config.get("num_queries")
        found["limit"] = FULL if limit is None or (total is not None and limit >= total) else limit
    generation = dict(config.get("generation", {}))
    if "banned_words" in generation and generation["banned_words"] is None:  # recorded: the default ban
        generation["banned_words"] = DEFAULT_BAN
    if config.get("request", "generate") != "generate":
        generation = {k: v for k, v in generation.items() if k not in GENERATION_ONLY}
    found |= generation
    found["plain_generation"] = config.get("plain_generation")
    if "protocol" in config:  # one protocol for every task of a run: compared across tasks too
        found["protocol"] = config["protocol"].get("name") + _short(config["protocol"].get("digest"))
    if "generation_options" in config:
        found["generation options"] = _options(config["generation_options"], config.get("request", "generate"))
    if "chat_template" in config:  # the checkpoint's template wrapped the prompts (its digest)
        found["chat_template"] = config["chat_template"][:8]
    if row.shots == 0 and "zero_shot" in config:  # a few-shot row's numbers do not depend on it
        found["zero_shot"] = config["zero_shot"]
    if row.shots > 0:
        shots = config.get("shots", {})
        found["encoder"] = shots.get("encoder")
        if shots.get("support_split"):
            found["support"] = shots["support_split"] + _short(shots.get("support_fingerprint"))
        found["seeds"] = shots.get("seeds")
    return {name: _text(value) for name, value in found.items() if value is not None}


def _options(options: dict, request: str) -> str:
    given = {name: value for name, value in options.items() if request == "generate" or name not in GENERATION_ONLY}
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in sorted(given.items())) or "the task's defaults"


def differences(a: Result, b: Result, ignore: Iterable[str] = ()) -> list[str]:
    """What differs between two rows ("num_beams 1 vs 3"), among the settings both record that
    apply to both: task settings between rows of one task, shot settings between few-shot rows."""
    left, right = settings(a), settings(b)
    skip = set(ignore)
    skip |= TASK_SETTINGS if a.task != b.task else CROSS_TASK_SETTINGS
    if min(a.shots, b.shots) == 0:
        skip |= SHOT_SETTINGS
    return [f"{name} {left[name]} vs {right[name]}" for name in left
            if name in right and name not in skip and left[name] != right[name]]


@dataclass(frozen=True)
class Partial:
    """Why a row scored fewer queries than a full run on the real data would."""

    n: int  # queries scored
    total: int | None  # the query split's size (None: the row does not say)
    reasons: tuple[str, ...]  # "--limit 8", "bundled demo data", "2 skipped"

    def __str__(self) -> str:
        of = f" of {self.total}" if self.total is not None else ""
        return f"n={self.n}{of}: {', '.join(self.reasons)}"


def partial(row: Result) -> Partial | None:
    """The row's `Partial`, or None for a row that scored its whole split of the real data."""
    config, reasons = row.config, []
    limit, total = config.get("limit"), config.get("num_queries")
    if limit is not None and (total is None or limit < total):
        reasons.append(f"--limit {limit}")
    if is_demo_data(row):
        reasons.append("bundled demo data")
    if row.num_skipped:
        reasons.append(f"{row.num_skipped} skipped (bad examples)")
    return Partial(row.num_examples, total, tuple(reasons)) if reasons else None
