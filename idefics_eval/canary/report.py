"""Score the canary (and, for comparison, the random tiny model) on the bundled demo tasks.

    python -m idefics_eval.canary.report [--model DIR] [--out runs/canary-report]

Runs the ordinary harness (`runner.run`, RICES shots, the tasks' own prompts and metrics) and
prints one line per task and shot count: the canary's score and the random model's. These are the
numbers quoted in README.md ("The demo model"). `canary_words:contrast` is canary_words over a
support set of one circle per colour, so that the retrieved shots show different colours and only
the image match tells the query's name (what `tests/test_canary.py` checks).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..runner import DEMO_DATA, RunConfig, run
from .world import write_words_data

TASKS = {  # task -> (headline metric, shot counts)
    "vqav2": ("vqa_accuracy", (0, 4, 8)),
    "coco": ("cider", (0, 4, 8)),
    "imagenet": ("accuracy", (0, 4)),
    "canary_words": ("vqa_accuracy", (0, 1, 2, 4, 8, 16, 32)),
    "canary_words:contrast": ("vqa_accuracy", (0, 2, 4, 8)),
}


def scores(task: str, shots: tuple[int, ...], out: Path, model: str | None, demo_seed: int | None) -> dict[int, float]:
    metric = TASKS[task][0]
    name, _, variant = task.partition(":")
    with tempfile.TemporaryDirectory() as folder:
        data = None
        if variant == "contrast":
            data = Path(folder)
            write_words_data(data, shapes=("circle",), repeats={"train": 1, "validation": 3})
        elif model is not None:  # --demo finds the bundled data itself; another model is given it
            data = DEMO_DATA / name
        config = RunConfig(task=name, shots=shots, output_dir=out, model=model, demo=model is None,
                           demo_seed=demo_seed, data=None if data is None else str(data), progress=False)
        return {row.shots: row.metrics[metric] for row in run(config)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A canary checkpoint folder (default: the shipped one).")
    parser.add_argument("--out", type=Path, default=Path("runs/canary-report"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args(argv)
    print(f"{'task':22} {'metric':13} {'shots':>5} {'canary':>8} {'random':>8}")
    for task in args.tasks.split(","):
        shots = TASKS[task][1]
        folder = task.replace(":", "-")
        canary = scores(task, shots, args.out / "canary" / folder, args.model, None)
        random_model = scores(task, shots, args.out / "random" / folder, None, 0)
        for k in shots:
            print(f"{task:22} {TASKS[task][0]:13} {k:5d} {canary[k]:8.1f} {random_model[k]:8.1f}", flush=True)


if __name__ == "__main__":
    main()
