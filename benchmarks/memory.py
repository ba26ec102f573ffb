"""Peak memory against the number of queries: the demo run on the bundled VQAv2 sample, and on the
same sample with N times more query questions (about the same images, new ids).

Prints both peak RSS figures and their ratio; memory must not grow in proportion to the queries.
Usage: python benchmarks/memory.py [--factor 10] [--shots 0,4]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data" / "vqav2"
QUESTIONS = "v2_OpenEnded_mscoco_val2014_questions.json"
ANNOTATIONS = "v2_mscoco_val2014_annotations.json"


def scaled_copy(target: Path, factor: int) -> int:
    """The demo data with every validation question repeated `factor` times under new ids."""
    shutil.copytree(DEMO, target)
    questions = json.loads((DEMO / QUESTIONS).read_text())
    annotations = json.loads((DEMO / ANNOTATIONS).read_text())
    q_out, a_out = [], []
    for copy in range(factor):
        for question, annotation in zip(questions["questions"], annotations["annotations"]):
            new_id = question["question_id"] * 100 + copy
            q_out.append(question | {"question_id": new_id})
            a_out.append(annotation | {"question_id": new_id})
    (target / QUESTIONS).write_text(json.dumps(questions | {"questions": q_out}))
    (target / ANNOTATIONS).write_text(json.dumps(annotations | {"annotations": a_out}))
    return len(q_out)


def peak_rss_mib(args: list[str]) -> float:
    """Peak RSS of a fresh process running the command line (ru_maxrss of the child, in MiB)."""
    code = "import resource, sys\nfrom idefics_eval.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--shots", default="0,4")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        count = scaled_copy(root / "big", options.factor)
        common = ["run", "--task", "vqav2", "--shots", options.shots, "--num-beams", "1", "--demo", "--no-progress",
                  "--cache-dir", str(root / "cache")]
        base = peak_rss_mib(common + ["--data", str(DEMO), "--output-dir", str(root / "base")])
        big = peak_rss_mib(common + ["--data", str(root / "big"), "--output-dir", str(root / "big-out")])
    print(f"queries: 32 -> {count}  peak RSS: {base:.0f} MiB -> {big:.0f} MiB")
    print(f"RESULT name=memory queries_ratio={count / 32:.1f} rss_ratio={big / base:.3f}")


if __name__ == "__main__":
    main()
