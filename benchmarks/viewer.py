"""The run viewer's size and speed: `idefics-eval view` of a synthetic run of many samples, and of the demo.

The synthetic run is one VQAv2 sample log of `--rows` queries at `--shots` shots, each line shaped as
the runner writes it (question, 10 answers, metadata, shots with similarity and image, the whole
prompt), its images the bundled demo data's (so thumbnails are few: the figure is the pages' data).
With `--screenshots DIR`, also demo runs of two models (the canary, the random tiny model), and PNG
screenshots of the overview, a sample page and the diff page taken in headless Chromium.

Usage: python benchmarks/viewer.py [--rows 50000] [--shots 8] [--screenshots docs/images]
Last line: RESULT name=viewer rows=<n> build_s=<seconds> site_mib=<MiB> largest_file_mib=<MiB> ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idefics_eval.cli import main  # noqa: E402
from idefics_eval.viewer import build_site  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "<fake_token_around_image><image><fake_token_around_image>"
CHROMIUM = ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            "--virtual-time-budget=5000"]


def synthetic_run(folder: Path, rows: int, shots: int) -> Path:
    images = sorted(str(p) for p in (ROOT / "idefics_eval" / "demo" / "data" / "vqav2").rglob("*.jpg"))
    samples = folder / "samples"
    samples.mkdir(parents=True)
    with open(samples / f"vqav2_{shots}shot.jsonl", "w", encoding="utf-8") as handle:
        for n in range(rows):
            shown = [{"id": f"s{(n + k) % 9973}", "similarity": 0.9 - 0.01 * k, "answer": "red",
                      "image": images[(n + k) % len(images)]} for k in range(shots)]
            prompt = "<s>Instruction: provide an answer to the question. Use the image to answer.\n" + "".join(
                f"Image:{IMAGE}Question: What colour is the shape on the left? Answer: red\n" for _ in shown)
            line = {"id": f"q{n:06d}", "prediction": "red", "shots": [s["id"] for s in shown], "score": (n % 4) / 3,
                    "dropped_shots": 0, "inputs": {"question": f"What colour is shape {n}?"}, "answers": ["red"] * 10,
                    "metadata": {"answer_type": ("other", "yes/no", "number")[n % 3], "question_type": "what color is"},
                    "images": [images[n % len(images)]], "shown_shots": shown,
                    "prompt": prompt + f"Image:{IMAGE}Question: What colour is shape {n}? Answer:",
                    "prompt_tokens": 20 + 18 * shots, "raw_prediction": " red"}
            handle.write(json.dumps(line) + "\n")
    return folder


def measure(runs: list[Path], site: Path) -> tuple[float, float, float]:
    """(seconds to build, site MiB, largest file MiB)."""
    start = time.perf_counter()
    build_site(runs, site)
    seconds = time.perf_counter() - start
    sizes = [p.stat().st_size for p in site.rglob("*") if p.is_file()]
    return seconds, sum(sizes) / 2**20, max(sizes) / 2**20


def run_demo(folder: Path, *more: str) -> None:
    """A small demo run (an error exits with its one line, as the command line does)."""
    main(["run", "--demo", "--task", "vqav2,scienceqa", "--shots", "0,4", "--limit", "8", "--no-progress",
          "--output-dir", str(folder), *more])


def screenshots(out: Path, work: Path) -> None:
    """A demo run of the canary and of the random tiny model (checkpoints A and B), their site, one PNG of each view."""
    from PIL import Image

    out = out.resolve()
    os.chdir(work)  # the pages name the runs as given: short relative folders read better than temporary ones
    first, second = Path("runs/canary"), Path("runs/random")
    run_demo(first, "--num-beams", "1", "--max-new-tokens", "5")
    run_demo(second, "--num-beams", "1", "--max-new-tokens", "5", "--demo-seed", "0")
    site = work / "site"
    build_site([first, second], site)
    out.mkdir(parents=True, exist_ok=True)
    for page, name, height in (("index.html", "view_index.png", 1000), ("vqav2_4shot.html", "view_samples.png", 800),
                               ("diff_vqav2_4shot.html", "view_diff.png", 600)):
        subprocess.run([*CHROMIUM, f"--user-data-dir={work / 'profile'}", f"--window-size=1000,{height}",
                        f"--screenshot={out / name}", (site / page).as_uri()], check=True, capture_output=True, timeout=120)
        with Image.open(out / name) as image:  # a 256-colour palette: a third of the size, as legible
            image.convert("RGB").quantize(256).save(out / name, optimize=True)
        print(f"wrote {out / name}")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--screenshots", type=Path, help="Also write PNG screenshots of each view into this folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if args.screenshots is not None:
            screenshots(args.screenshots, work)
        demo = work / "demo"
        run_demo(demo, "--num-beams", "1", "--max-new-tokens", "3")
        demo_s, demo_mib, _ = measure([demo], work / "demo_site")
        synthetic = synthetic_run(work / "synthetic", args.rows, args.shots)
        log_mib = next((synthetic / "samples").iterdir()).stat().st_size / 2**20
        seconds, mib, largest = measure([synthetic], work / "synthetic_site")
        page = work / "synthetic_site" / f"vqav2_{args.shots}shot.html"
        first_s, filtered_s = (open_page(page, fragment, work / "profile") for fragment in ("", "#wrong=1&page=100"))
        shutil.rmtree(work / "synthetic_site")
    print(f"RESULT name=viewer rows={args.rows} shots={args.shots} build_s={seconds:.1f} site_mib={mib:.1f} "
          f"largest_file_mib={largest:.2f} log_mib={log_mib:.1f} browser_first_page_s={first_s:.2f} "
          f"browser_wrong_page100_s={filtered_s:.2f} demo_build_s={demo_s:.1f} demo_site_mib={demo_mib:.2f}")


def open_page(page: Path, fragment: str, profile: Path) -> float:
    """Seconds for headless Chromium to start, load the page and draw its rows (checked to be there)."""
    start = time.perf_counter()
    done = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
                          check=True, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if 'data-ready="1"' not in done.stdout or 'class="sample' not in done.stdout:
        raise SystemExit(f"{page}{fragment}: no rows drawn")
    return seconds


if __name__ == "__main__":
    main_()
