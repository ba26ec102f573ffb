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


def test_the_program_skips_the_exit_collections_and_still_runs_its_exit_handlers(tmp_path):
    """As a process (`python -m idefics_eval`) the collector's passes at exit are skipped (gc.freeze);
    the atexit handlers still run: the image-feature spill folder is removed, the results are whole."""
    out, spill = tmp_path / "out", tmp_path / "spill"
    code = ("import atexit, gc, runpy, sys\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "sys.argv[0] = 'idefics-eval'\n"
            "runpy.run_module('idefics_eval', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code, "run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2",
                           "--num-beams", "1", "--max-new-tokens", "2", "--output-dir", str(out), "--cache-dir",
                           str(tmp_path / "cache"), "--image-cache-mb", "0", "--image-cache-dir", str(spill), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "frozen True"
    assert spill.is_dir() and not any(spill.iterdir())
    assert json.loads((out / "results.json").read_text())[0]["num_examples"] == 2


def test_main_called_with_arguments_leaves_the_collector_alone(capsys):
    import gc

    main(["tasks"])
    assert gc.get_freeze_count() == 0
