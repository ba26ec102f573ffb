"""Score the canary (and, for comparison, the random tiny model) on the bundled demo tasks.

    python -m idefics_eval.canary.report [--model DIR] [--out runs/canary-report]

Runs the ordinary harness (`runner.run`, RICES shots, the tasks' own prompts and metrics) and
prints one line per task and shot count: the canary's score and the random model's. These are the
numbers quoted in README.md ("The demo model").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runner import RunConfig, run

TASKS = {  # task -> (headline metric, shot counts)
    "vqav2": ("vqa_accuracy", (0, 4, 8)),
    "coco": ("cider", (0, 4, 8)),
    "imagenet": ("accuracy", (0, 4)),
    "canary_words": ("vqa_accuracy", (0, 1, 2, 4, 8, 16, 32)),
}


def scores(task: str, shots: tuple[int, ...], out: Path, model: str | None, demo_seed: int | None) -> dict[int, float]:
    metric = TASKS[task][0]
    config = RunConfig(task=task, shots=shots, output_dir=out, model=model, demo=model is None, demo_seed=demo_seed,
                       progress=False)
    return {row.shots: row.metrics[metric] for row in run(config)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A canary checkpoint folder (default: the shipped one).")
    parser.add_argument("--out", type=Path, default=Path("runs/canary-report"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args(argv)
    print(f"{'task':14} {'metric':13} {'shots':>5} {'canary':>8} {'random':>8}")
    for task in args.tasks.split(","):
        shots = TASKS[task][1]
        canary = scores(task, shots, args.out / "canary" / task, args.model, None)
        random_model = scores(task, shots, args.out / "random" / task, None, 0)
        for k in shots:
            print(f"{task:14} {TASKS[task][0]:13} {k:5d} {canary[k]:8.1f} {random_model[k]:8.1f}", flush=True)


if __name__ == "__main__":
    main()
