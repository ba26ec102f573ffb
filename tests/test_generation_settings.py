"""The task file's generation settings (length_penalty, early_stopping, banned_words, add_start_token)
do what transformers' `generate` does with them, in the fast path as in the plain one, and a run
records them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from idefics_eval.cli import main
from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import load_model
from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker

from conftest import make_example
from test_engine_fast import _prompts
from test_ranking import CANDIDATES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eos_prone():
    """The demo model with its </s> logit made close to that of a token it often predicts, so that
    beams finish at different lengths: the case where length penalty and early stopping matter
    (the plain demo model never ends an answer)."""
    loaded = load_model("demo", device="cpu", dtype="float32", demo_seed=0)
    eos = loaded.processor.tokenizer.eos_token_id
    with torch.no_grad():
        weight = loaded.model.lm_head.weight
        weight[eos] = weight[478] * 0.97 + weight[21] * 0.1
    return loaded


@pytest.fixture(scope="module")
def prompts():
    return _prompts(8)


def generated(loaded, prompts, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast path's and model.generate's new tokens for these settings."""
    generator = Generator(loaded, GenerationSettings(max_new_tokens=8, num_beams=3, **settings), ImageFeatureCache())
    return generator.generate_ids_fast(prompts), generator.generate_ids_plain(prompts)


def model_generate(loaded, prompts, **kwargs) -> torch.Tensor:
    """transformers' own call, written out here, not through the Generator."""
    generator = Generator(loaded, GenerationSettings(), ImageFeatureCache())
    inputs = generator.encode(prompts)
    tokenizer = loaded.processor.tokenizer
    output = loaded.model.generate(**inputs, max_new_tokens=8, num_beams=3, do_sample=False, no_repeat_ngram_size=0,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)
    return output[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("settings", [{"length_penalty": 0.0}, {"early_stopping": True}, {"early_stopping": "never"},
                                      {"length_penalty": 0.0, "early_stopping": "never"}])
def test_beam_settings_change_the_result_and_equal_generate(eos_prone, prompts, settings):
    default, _ = generated(eos_prone, prompts)
    fast, plain = generated(eos_prone, prompts, **settings)
    assert torch.equal(fast, plain)
    banned = Generator(eos_prone, GenerationSettings()).bad_words_ids
    assert torch.equal(plain, model_generate(eos_prone, prompts, bad_words_ids=banned, **settings))
    assert not torch.equal(fast, default)  # the setting matters on this case


def test_default_beam_settings_are_transformers_defaults(eos_prone, prompts):
    """length_penalty 1.0, early_stopping False: what generate does when given neither."""
    fast, plain = generated(eos_prone, prompts)
    banned = Generator(eos_prone, GenerationSettings()).bad_words_ids
    assert torch.equal(fast, plain) and torch.equal(plain, model_generate(eos_prone, prompts, bad_words_ids=banned))


def test_banned_words_are_bad_words_ids(demo_loaded, prompts):
    tokenizer = demo_loaded.processor.tokenizer
    default, _ = generated(demo_loaded, prompts)
    pair = tokenizer.decode([478, 314])  # two tokens the demo model often generates in a row
    assert tokenizer(pair, add_special_tokens=False)["input_ids"] == [478, 314]
    words = (pair, "Question")
    fast, plain = generated(demo_loaded, prompts, banned_words=words)
    bad_words_ids = tokenizer(list(words), add_special_tokens=False).input_ids
    assert torch.equal(fast, plain)
    assert torch.equal(plain, model_generate(demo_loaded, prompts, bad_words_ids=bad_words_ids))
    assert not torch.equal(fast, default)
    rows = [row.tolist() for row in fast]
    assert not any(row[i:i + 2] == [478, 314] for row in rows for i in range(len(row) - 1))
    nothing, plain_nothing = generated(demo_loaded, prompts, banned_words=())
    assert torch.equal(nothing, plain_nothing) and torch.equal(nothing, model_generate(demo_loaded, prompts))


def test_without_start_token_the_inputs_lack_it_and_both_paths_agree(eos_prone, prompts):
    bos = eos_prone.processor.tokenizer.bos_token_id
    generator = Generator(eos_prone, GenerationSettings(max_new_tokens=8, add_start_token=False), ImageFeatureCache())
    ours, processor = generator.text_inputs(prompts), generator.encode(prompts)
    with_bos = Generator(eos_prone, GenerationSettings()).text_inputs(prompts)
    assert bos in with_bos["input_ids"] and bos not in ours["input_ids"] and bos not in processor["input_ids"]
    assert ours["input_ids"].shape[1] == with_bos["input_ids"].shape[1] - 1
    for key, value in ours.items():
        assert torch.equal(processor[key].to(value.dtype), value), key
    fast, plain = generated(eos_prone, prompts, add_start_token=False)
    assert torch.equal(fast, plain)
    assert not torch.equal(fast, generated(eos_prone, prompts)[0])


def ranked_prompts():
    template = load_template("vqa")
    shots = [make_example("s1", "s1", "What color is the circle?", ["red"] * 10, rgb=(250, 0, 0))]
    query = make_example("q", "q", "What color is the square?", ["green"] * 10, rgb=(0, 200, 0))
    context = template.render(shots, query, most_common_answer)
    return context, [template.render(shots, query, most_common_answer, candidate=c) for c in CANDIDATES]


def test_ranked_requests_without_start_token(demo_loaded):
    context, continuations = ranked_prompts()
    bos = demo_loaded.processor.tokenizer.bos_token_id
    without = Ranker(demo_loaded, 3, add_start_token=False)
    assert all(ids[0] != bos for ids, _ in without._requests(context, continuations))
    assert all(ids[0] == bos for ids, _ in Ranker(demo_loaded, 3)._requests(context, continuations))
    fast, full = (getattr(without, path)(context, continuations, "sum") for path in ("loglikelihoods", "loglikelihoods_full"))
    assert fast == pytest.approx(full, abs=1e-4)
    assert fast != pytest.approx(Ranker(demo_loaded, 3).loglikelihoods(context, continuations, "sum"), abs=1e-4)


def task_dir(tmp_path: Path, task: str, old: str, new: str) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    text = (ROOT / "tasks" / f"{task}.yaml").read_text()
    assert old in text
    (folder / f"{task}.yaml").write_text(text.replace(old, new, 1))
    return folder


def run_demo(out: Path, task: str, tasks: Path | None, *extra: str) -> None:
    main(["run", "--task", task, "--demo", "--demo-seed", "0", "--shots", "0", "--limit", "2", "--output-dir", str(out),
          "--no-progress", "--max-new-tokens", "3", *(["--tasks-dir", str(tasks)] if tasks else []), *extra])


def predictions(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "predictions").glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_a_run_records_the_settings_and_a_change_is_a_configuration_change(tmp_path, capsys):
    tasks = task_dir(tmp_path, "renderedsst2", "\nsources:", "\nadd_start_token: false\nsources:")
    run_demo(tmp_path / "fast", "renderedsst2", tasks)
    run_demo(tmp_path / "plain", "renderedsst2", tasks, "--plain-generation")
    run_demo(tmp_path / "default", "renderedsst2", None)
    fast, plain = predictions(tmp_path / "fast"), predictions(tmp_path / "plain")
    assert [p["ranking"] for p in fast] == [p["ranking"] for p in plain]
    assert [p["scores"] for p in fast] != [p["scores"] for p in predictions(tmp_path / "default")]
    row = json.loads((tmp_path / "fast" / "results.json").read_text())[0]
    assert row["config"]["generation"]["add_start_token"] is False
    default_row = json.loads((tmp_path / "default" / "results.json").read_text())[0]
    assert {key: default_row["config"]["generation"][key] for key in ("length_penalty", "early_stopping", "banned_words")} == {
        "length_penalty": 1.0, "early_stopping": False, "banned_words": None}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # the same folder, the task's start token changed
        run_demo(tmp_path / "fast", "renderedsst2", None)
    assert exit_info.value.code == 2
    assert "generation" in capsys.readouterr().err


def test_recorded_settings_are_compared(tmp_path):
    from idefics_eval.comparability import differences
    from idefics_eval.results import read_results

    tasks = task_dir(tmp_path, "vqav2", "  num_beams: 3\n", "  num_beams: 3\n  length_penalty: 0\n  early_stopping: never\n")
    run_demo(tmp_path / "changed", "vqav2", tasks)
    run_demo(tmp_path / "default", "vqav2", None)
    changed, default = (read_results(tmp_path / name / "results.json")[0] for name in ("changed", "default"))
    found = differences(changed, default)
    assert "length_penalty 0.0 vs 1.0" in found and "early_stopping never vs no" in found
