"""Start-up: the fixed cost of the commands that load no model, against `python -c pass` measured in
the same run (the interpreter's own start), and the heavy libraries each one imports.

Timed: `idefics-eval --help`, `idefics-eval tasks`, and `idefics-eval score RUN_DIR` on a small demo
run made first (local bundled data: no hub, no model). Each command runs `--repeats` times in a fresh
process; the median wall time is reported, and its ratio to `python -c pass`. The issue's goal for
`tasks` is under 1.5 s; on a loaded machine read the ratios, not the seconds.

Usage: python benchmarks/startup.py [--repeats 5]
Last line: RESULT name=startup help=<ratio> tasks=<ratio> score=<ratio> tasks_s=<seconds> ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "datasets", "pandas", "matplotlib", "faiss", "pycocoevalcap", "sklearn")
COMMAND = """
import json, sys
from idefics_eval.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def timed(code: str, repeats: int) -> tuple[float, str]:
    """Median wall seconds of `python -c code` in a fresh process, and the last run's stderr."""
    walls, err = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        err = done.stderr
    return statistics.median(walls), err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        subprocess.run([sys.executable, "-m", "idefics_eval", "run", "--task", "vqav2", "--demo", "--shots", "0",
                        "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress",
                        "--output-dir", str(run_dir), "--cache-dir", str(Path(folder) / "cache")],
                       check=True, capture_output=True)
        baseline, _ = timed("pass", repeats)
        print(f"python -c pass: {baseline:.3f} s (median of {repeats})")
        ratios, seconds = {}, {}
        for name, args in (("help", ["--help"]), ("tasks", ["tasks"]), ("score", ["score", str(run_dir)])):
            wall, err = timed(COMMAND.format(args=args, heavy=HEAVY), repeats)
            imported = json.loads(err.strip().splitlines()[-1])
            ratios[name], seconds[name] = wall / baseline, wall
            print(f"idefics-eval {' '.join(args[:1])}: {wall:.3f} s = {wall / baseline:.1f}x python -c pass; "
                  f"imports {', '.join(imported) or 'none of ' + '/'.join(HEAVY)}")
    print(f"tasks under 1.5 s: {'yes' if seconds['tasks'] < 1.5 else 'no'}")
    print("RESULT name=startup " + " ".join(f"{k}={v:.1f}" for k, v in ratios.items())
          + " " + " ".join(f"{k}_s={v:.3f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
