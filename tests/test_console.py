"""The libraries are kept quiet without being imported for it (`console.quiet_libraries`)."""

import subprocess
import sys


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return done.stdout.strip()


def test_quieting_imports_no_library():
    out = run_python(
        "import sys\n"
        "from idefics_eval.console import quiet_libraries\n"
        "with quiet_libraries():\n"
        "    pass\n"
        "print(sorted(m for m in ('datasets', 'transformers', 'torch') if m in sys.modules))\n"
    )
    assert out == "[]"


def test_a_library_imported_inside_the_block_is_quiet_there_and_restored_after():
    out = run_python(
        "import json\n"
        "from idefics_eval.console import quiet_libraries\n"
        "with quiet_libraries():\n"
        "    import datasets\n"
        "    from transformers.utils import logging as hf\n"
        "    inside = [datasets.is_progress_bar_enabled(), hf.is_progress_bar_enabled(), hf.get_verbosity() == hf.ERROR]\n"
        "after = [datasets.is_progress_bar_enabled(), hf.is_progress_bar_enabled(), hf.get_verbosity() == hf.WARNING]\n"
        "print(json.dumps([inside, after]))\n"
    )
    assert out == "[[false, false, true], [true, true, true]]"


def test_a_library_imported_before_the_block_is_quiet_inside_it():
    out = run_python(
        "import datasets\n"
        "from idefics_eval.console import quiet_libraries\n"
        "with quiet_libraries():\n"
        "    inside = datasets.is_progress_bar_enabled()\n"
        "print(inside, datasets.is_progress_bar_enabled())\n"
    )
    assert out == "False True"
