"""Drawn splits: a fixed random subset of the support split, and a selection query split held out of train.

The IDEFICS authors drew their shots from a fixed set of 2,048 random train examples and chose
checkpoints and prompts on validation queries held out of train, apart from the reporting split
(neither draw was published). A task (or protocol) says the same with `support_subset: {size, seed}`
and `selection_split: {size, seed}`; `--split selection` scores the selection split.

A draw takes examples in the order of a hash of (seed, example id): it depends on the split's content
and the seed only, never on the file's order, the queries, --limit or sharding. The support subset is
drawn first and does not depend on whether a selection split is asked for, so reporting and selection
runs show shots from the same set. The selection split then takes its queries from what train has
left: no query is a support example or about a support image, none is in the reporting split (by id
or by image). Without a support subset the support set is all of train, so the selection split is
held out of it first (at most half of train, so that shots remain) and shots come from the rest.
Where train cannot hold the sizes asked for (the small bundled demo data), the draw takes what there
is and says so in one line (`Drawn.note`); with nothing left for the selection split it is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import formats
from .errors import UserError
from .examples import Example, ExampleSet
from .tasks import Subset, TaskSpec

SELECTION = "selection"  # the split name of a selection run's queries and rows: "<task>/selection"
REPORTING = "reporting"  # the task's query_split: what results are reported on


@dataclass(frozen=True)
class Drawn:
    """A drawn split, what a results row records of it, and the line saying it is smaller than asked."""

    examples: ExampleSet
    record: dict
    note: str | None = None


def draw_order(examples: Iterable[Example], seed: int) -> list[Example]:
    """`examples` in the order a draw with `seed` takes them."""
    return sorted(examples, key=lambda example: hashlib.sha256(f"{seed}\x1f{example.id}".encode()).digest())


def _keep(split: ExampleSet, name: str, ids: set[str]) -> ExampleSet:
    """The examples of `split` whose id is in `ids`, in the split's order."""
    return ExampleSet(name, split.source, tuple(e for e in split.examples if e.id in ids))


def support_subset(support: ExampleSet, subset: Subset | None) -> Drawn:
    """The support set shots come from: `subset.size` examples of `support` drawn with `subset.seed`,
    or all of it (subset None)."""
    if subset is None:
        return Drawn(support, {})
    n = len(support)
    chosen = {e.id for e in draw_order(support.examples, subset.seed)[: subset.size]}
    name = f"{support.name}[{len(chosen)} of {n}, seed {subset.seed}]"
    note = None
    if len(chosen) < subset.size:
        note = (f"support_subset: {support.name} has {n} examples, fewer than the {subset.size} asked for; "
                f"shots come from all {n}")
    record = {"size": len(chosen), "requested_size": subset.size, "seed": subset.seed, "of": n}
    return Drawn(_keep(support, name, chosen), record, note)


def selection_split(task: str, train: ExampleSet, reporting: ExampleSet, subset: Subset,
                    support: Drawn | None) -> tuple[Drawn, Drawn]:
    """The selection queries held out of `train` and the support set shots then come from.

    `support` is the drawn support subset (None: the support set is all of train, less the selection
    queries and every example about their images)."""
    taken_ids = {e.id for e in reporting.examples}
    taken_images = {e.image_id for e in reporting.examples}
    if support is not None:
        taken_ids |= {e.id for e in support.examples.examples}
        taken_images |= {e.image_id for e in support.examples.examples}
    pool = [e for e in train.examples if e.id not in taken_ids and e.image_id not in taken_images]
    # Without a support subset the rest of train is the support set: at most half of its images go.
    room = len(pool) if support is not None else len({e.image_id for e in train.examples}) // 2
    chosen, images = [], set()
    for example in draw_order(pool, subset.seed):
        if len(chosen) == subset.size:
            break
        if support is not None or example.image_id in images or len(images) < room:
            chosen.append(example)
            images.add(example.image_id)
    if not chosen:
        left = "nothing once the support subset and the reporting split are left out" if support is not None else \
            "too few examples to hold any out"
        raise UserError(f"{task}: the selection split is drawn from {train.name} ({len(train)} examples), which has {left}; "
                        "lower the support_subset size, or use data with a larger train split")
    queries = _keep(train, f"{task}/{SELECTION}", {e.id for e in chosen})
    record = {"name": SELECTION, "size": len(chosen), "requested_size": subset.size, "seed": subset.seed,
              "drawn_from": train.name, "support_subset": support.record if support is not None else None}
    note = None
    if len(chosen) < subset.size:
        after = "after the support subset and the reporting split" if support is not None else "to hold out (half its images)"
        note = (f"selection_split: {train.name} has {len(chosen)} examples left {after}, fewer than the "
                f"{subset.size} asked for; the selection split has {len(chosen)}")
    if support is not None:
        return Drawn(queries, record, note), support
    # (the support set's name has no "/": shots.py reads the dataset from what comes before it)
    rest = {e.id for e in train.examples if e.image_id not in images}
    return Drawn(queries, record, note), Drawn(_keep(train, f"{train.name} less the selection split", rest), {})


def load_selection_split(spec: TaskSpec, data: str | None, cache_dir: Path | None, selection: Subset,
                         support: Subset | None) -> tuple[Drawn, Drawn]:
    """The selection split of `spec` on `data` and the support set shots then come from, as `run
    --split selection` draws them (and `score` draws them again from what a row records)."""
    if spec.support_task is not None or spec.zero_shot_only:
        why = f"takes its shots from {spec.support_task}" if spec.support_task else "is zero-shot only"
        raise UserError(f"task {spec.name} {why}: it has no train split of its own to hold a selection split out of; "
                        f"select on {spec.support_task or 'another task'} or use --split {REPORTING}")
    train = formats.load_split(spec, spec.support_split, data, cache_dir)
    reporting = formats.load_split(spec, spec.query_split, data, cache_dir)
    drawn_support = support_subset(train, support) if support is not None else None
    return selection_split(spec.name, train, reporting, selection, drawn_support)


def selection_note(task: str, record: dict) -> str:
    """The line `run` prints after a selection-split run."""
    return (f"scored {task}/{SELECTION}: {record['size']} queries held out of {record['drawn_from']} (seed {record['seed']}), "
            "for choosing checkpoints and prompts; export never reports them")


def recorded_subsets(record: dict) -> tuple[Subset, Subset | None]:
    """The selection split's and support subset's settings a row's `split` record holds."""
    support = record.get("support_subset")
    return (Subset(record["requested_size"], record["seed"]),
            Subset(support["requested_size"], support["seed"]) if support else None)
