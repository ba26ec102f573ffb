"""Start-up: each command imports the heavy libraries it uses, when it uses them, and no others
(benchmarks/startup.py times them; docs/performance.md has the figures)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from idefics_eval.cli import main

HEAVY = ("torch", "transformers", "datasets", "pandas", "matplotlib", "faiss", "pycocoevalcap", "sklearn", "scipy", "jinja2")
IMPORTED = """
import json, sys
from idefics_eval.cli import main
try:
    main({args!r})
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_imports(*args: str) -> list[str]:
    """The heavy libraries `idefics-eval ARGS` imports, run in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", IMPORTED.format(args=list(args), heavy=HEAVY)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main(["run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3",
          "--output-dir", str(out), "--cache-dir", str(tmp_path_factory.mktemp("cache")), "--no-progress"])
    return out


@pytest.mark.parametrize("args", [["--help"], ["tasks"], ["tasks", "--show", "vqav2"], ["run", "--help"]], ids=" ".join)
def test_commands_that_load_no_model_import_no_heavy_library(args):
    assert heavy_imports(*args) == []


def test_scoring_and_exporting_a_run_import_no_heavy_library(run_dir):
    assert heavy_imports("score", str(run_dir)) == []
    assert heavy_imports("export", "--allow-partial", str(run_dir)) == []


def test_a_zero_shot_demo_run_imports_only_the_model_libraries(tmp_path):
    """torch and transformers (which itself brings scipy and jinja2); no retrieval index, no dataset
    library for local files, no captioning metric for a VQA task, no tables, no plots."""
    imported = heavy_imports("run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "1", "--num-beams", "1",
                             "--max-new-tokens", "2", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                             "--no-progress")
    assert set(imported) - {"scipy", "jinja2"} == {"torch", "transformers"}
