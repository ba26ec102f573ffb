"""Start-up: each command imports the heavy libraries it uses, when it uses them, and no others
(benchmarks/startup.py times them; docs/performance.md has the figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


REFUSED = """
import json, sys
from idefics_eval.cli import main
try:
    main({args!r})
except SystemExit as exit:
    print(json.dumps([exit.code, sorted(m for m in {heavy!r} if m in sys.modules)]))
"""


def refused(*args: str) -> tuple[int, list[str], list[str]]:
    """The exit status, the lines on stderr and the heavy libraries imported of `idefics-eval ARGS`, in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", REFUSED.format(args=list(args), heavy=HEAVY)], capture_output=True, text=True,
                          timeout=600)
    code, imported = json.loads(done.stdout.strip().splitlines()[-1])
    return code, done.stderr.strip().splitlines(), imported


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


BAD_RUNS = {
    "unknown task": (["--task", "vqa2"], "unknown task 'vqa2'"),
    "unknown protocol": (["--task", "vqav2", "--protocol", "flamingo"], "--protocol 'flamingo': unknown protocol"),
    "missing data folder": (["--task", "vqav2", "--data", "{tmp}/moved"], "data folder not found: {tmp}/moved"),
    "missing support data folder": (["--task", "nocaps", "--shots", "4", "--support-data", "{tmp}/coco"],
                                    "data folder not found: {tmp}/coco"),
    "bad shots": (["--task", "vqav2", "--shots", "4,x"], "'x' is not a whole number"),
    "bad limit": (["--task", "vqav2", "--limit", "0"], "--limit 0: give a positive number"),
}


@pytest.mark.parametrize("case", BAD_RUNS, ids=str)
def test_a_run_with_a_bad_argument_is_refused_before_the_model_libraries_load(case, tmp_path):
    """One line and status 2, without importing torch or transformers (4-20 s of a start that would end in that line)."""
    args, message = BAD_RUNS[case]
    args = [arg.format(tmp=tmp_path) for arg in args]
    code, stderr, imported = refused("run", "--demo", *(["--shots", "0"] if "--shots" not in args else []), *args,
                                     "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert code == 2
    assert len(stderr) == 1 and stderr[0].startswith("error: ") and message.format(tmp=tmp_path) in stderr[0], stderr
    assert imported == []


@pytest.mark.parametrize("command, message", [
    (["sweep", "--checkpoints", "{tmp}/ckpt-*", "--output-dir", "{tmp}/sweep", "--task", "vqav2", "--protocol", "flamingo"],
     "--protocol 'flamingo': unknown protocol"),
    (["prompt", "--demo", "--shots", "0", "--task", "vqav2", "--data", "{tmp}/moved"], "data folder not found: {tmp}/moved"),
], ids=lambda value: value[0] if isinstance(value, list) else "")
def test_sweep_and_prompt_refuse_a_bad_argument_before_the_model_libraries_load(command, message, tmp_path):
    (tmp_path / "ckpt-1").mkdir()
    (tmp_path / "ckpt-1" / "config.json").write_text('{"model_type": "idefics"}')
    code, stderr, imported = refused(*(arg.format(tmp=tmp_path) for arg in command), "--cache-dir", str(tmp_path / "cache"))
    assert code == 2
    assert stderr[-1].startswith("error: ") and message.format(tmp=tmp_path) in stderr[-1], stderr
    assert imported == []


def test_the_run_settings_default_image_cache_is_the_image_cache_default():
    from idefics_eval.image_cache import DEFAULT_MAX_BYTES
    from idefics_eval.plan import IMAGE_CACHE_MB, RunConfig

    assert IMAGE_CACHE_MB << 20 == DEFAULT_MAX_BYTES
    assert RunConfig("vqav2", (0,), Path(".")).image_cache_mb == IMAGE_CACHE_MB


def test_a_run_of_a_checkpoint_folder_is_refused_before_the_model_libraries_load(tmp_path):
    """With --model (not --demo) as well: the folder's own check, which needs them, comes after the cheap ones."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "idefics"}')
    code, stderr, imported = refused("run", "--model", str(tmp_path / "ckpt"), "--task", "vqav2", "--shots", "0", "--data",
                                     str(tmp_path / "moved"), "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and len(stderr) == 1 and "data folder not found" in stderr[0], stderr
    assert imported == []
