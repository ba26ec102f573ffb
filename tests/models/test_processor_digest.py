"""The processor's digest in a run's identity (`models.processor_digest`, `store.identity_of`).

A checkpoint's tokenizer or preprocessor config can change while its weights do not, and the
weights' fingerprint was all that named the model: such a rerun resumed the old predictions and
reports saw one model. The fixtures are tiny IDEFICS2 checkpoints written by `save_family_demo`,
edited the way such a change happens (one added token's flags, one image processor setting).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import ByT5Tokenizer, IdeficsImageProcessorPil, IdeficsProcessor

from idefics_eval.comparability import differences
from idefics_eval.demo.families import save_family_demo
from idefics_eval.models import CANARY_DIR, load_model, processor_digest
from idefics_eval.results import read_results

from conftest import invoke

DIGESTS = """
from idefics_eval.models import CANARY_DIR, load_model
print(load_model(str(CANARY_DIR), device="cpu").processor_digest, load_model("demo", device="cpu", demo_seed=3).processor_digest)
"""


def test_the_canary_s_and_the_demo_s_digests_are_the_same_in_every_process():
    """The demo's tokenizer is trained when it loads, and sets and dicts have no order: two loads, and
    another process, must still give one digest, or a folder would not resume its own run."""
    canary = load_model(str(CANARY_DIR), device="cpu").processor_digest
    demo = load_model("demo", device="cpu", demo_seed=3).processor_digest
    assert load_model(str(CANARY_DIR), device="cpu").processor_digest == canary
    assert load_model("demo", device="cpu", demo_seed=3).processor_digest == demo
    other = subprocess.run([sys.executable, "-c", DIGESTS], capture_output=True, text=True, check=True, timeout=300)
    assert other.stdout.split() == [canary, demo]


def test_a_padded_call_leaves_the_digest_as_it_was(demo_loaded):
    """A padded batch leaves the tokenizer's padding set until the next call: state, not configuration."""
    before = processor_digest(demo_loaded.processor)
    demo_loaded.processor.tokenizer(["a cat", "a cat on a mat"], padding=True)
    assert processor_digest(demo_loaded.processor) == before


def test_a_python_tokenizer_is_named_by_its_vocabulary_and_added_tokens():
    """A tokenizer without a Rust backend (an in-memory model's, say) has no tokenizer.json parts."""
    processor = IdeficsProcessor(IdeficsImageProcessorPil(), ByT5Tokenizer())
    before = processor_digest(processor)
    assert processor_digest(IdeficsProcessor(IdeficsImageProcessorPil(), ByT5Tokenizer())) == before
    processor.tokenizer.add_tokens(["<new>"])
    assert processor_digest(processor) != before


def _swer_added(folder):
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["added_tokens"].append({"id": tokenizer["model"]["vocab"]["swer"], "content": "swer", "single_word": False,
                                      "lstrip": False, "rstrip": False, "normalized": True, "special": False})
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))  # "Answer:" is now "An", "swer", ":"


def _another_image_mean(folder):
    processor = json.loads((folder / "processor_config.json").read_text())
    processor["image_processor"]["image_mean"] = [0.48, 0.46, 0.41]
    (folder / "processor_config.json").write_text(json.dumps(processor))


class Checkpoint:
    """A tiny IDEFICS2 checkpoint folder and runs of it on two demo VQAv2 queries."""

    def __init__(self, tmp_path, capsys):
        self.folder, self.tmp_path, self.capsys = tmp_path / "idefics2", tmp_path, capsys
        save_family_demo("idefics2", self.folder, seed=0)

    def run(self, out: str, *extra: str) -> tuple[int, str, str]:
        return invoke(self.capsys, "run", "--model", str(self.folder), "--demo-data", "--task", "vqav2", "--shots", "0",
                      "--limit", "2", "--output-dir", str(self.tmp_path / out), "--no-progress",
                      "--cache-dir", str(self.tmp_path / "cache"), *extra)

    def row(self, out: str):
        return read_results(self.tmp_path / out / "results.json")[0]


@pytest.mark.parametrize("edit", [_swer_added, _another_image_mean], ids=["added token", "image mean"])
def test_a_changed_tokenizer_or_image_processor_does_not_resume_the_folder(tmp_path, capsys, edit):
    checkpoint = Checkpoint(tmp_path, capsys)
    code, _, err = checkpoint.run("run")
    assert code == 0, err
    before = checkpoint.row("run")
    old = before.config["model"]["processor"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["vqav2/rices"]["identity"]["model"]["processor"] == old

    edit(checkpoint.folder)
    code, _, err = checkpoint.run("run")
    assert code == 2 and err.count("\n") == 1, err
    assert "predictions made with a different processor (the same weights, but a tokenizer or image processor" in err
    assert f"digest is {old}, not " in err and "use another --output-dir, or --overwrite to replace them" in err

    code, _, err = checkpoint.run("edited")
    assert code == 0, err
    new = checkpoint.row("edited").config["model"]["processor"]
    assert new != old and before.config["model"]["fingerprint"] == checkpoint.row("edited").config["model"]["fingerprint"]
    assert differences(before, checkpoint.row("edited")) == [f"processor {old[:8]} vs {new[:8]}"]
    code, out, err = invoke(capsys, "compare", str(tmp_path / "run"), str(tmp_path / "edited"), "--resamples", "10")
    assert code == 0, err
    assert f"processor {old[:8]} vs {new[:8]}" in out

    code, _, err = checkpoint.run("run", "--overwrite")
    assert code == 0, err
    assert checkpoint.row("run").config["model"]["processor"] == new


def test_an_unchanged_checkpoint_and_a_folder_from_before_the_digest_resume(tmp_path, capsys):
    checkpoint = Checkpoint(tmp_path, capsys)
    assert checkpoint.run("run")[0] == 0
    predictions, manifest, results = (tmp_path / "run" / name for name in ("predictions/vqav2_0shot.jsonl", "manifest.json", "results.json"))
    made, started = predictions.read_bytes(), checkpoint.row("run").started
    code, _, err = checkpoint.run("run")
    assert code == 0, err
    assert predictions.read_bytes() == made and checkpoint.row("run").started == started  # read back, not made again

    recorded = json.loads(manifest.read_text())  # as a version before the digest wrote them
    digest = recorded["vqav2/rices"]["identity"]["model"].pop("processor")
    manifest.write_text(json.dumps(recorded))
    rows = json.loads(results.read_text())
    for row in rows:
        del row["config"]["model"]["processor"]
    results.write_text(json.dumps(rows))
    code, _, err = checkpoint.run("run")
    assert code == 0, err
    assert predictions.read_bytes() == made and checkpoint.row("run").started == started
    assert json.loads(manifest.read_text())["vqav2/rices"]["identity"]["model"]["processor"] == digest
