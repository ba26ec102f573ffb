"""The runner's choices: random shots over seeds, truncation on whole shots, CLIP retrieval, HF data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idefics_eval.compare import compare_runs
from idefics_eval.export import export
from idefics_eval.runner import RunConfig, run

DEMO_DATA = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data" / "vqav2"


def config(tmp_path: Path, **overrides) -> RunConfig:
    base = dict(task="vqav2", shots=(0, 4), output_dir=tmp_path / "out", demo=True, limit=4, num_beams=1,
                max_new_tokens=5, cache_dir=tmp_path / "cache", progress=False)
    return RunConfig(**(base | overrides))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_random_selection_over_seeds_reports_mean_and_std(tmp_path):
    rows = run(config(tmp_path, selection="random", seeds=(0, 1, 2), shots=(4,)))
    per_seed = [r for r in rows if r.seed is not None]
    assert [r.seed for r in per_seed] == [0, 1, 2]
    (mean,) = [r for r in rows if r.seed is None]
    values = [r.metrics["vqa_accuracy"] for r in per_seed]
    assert mean.metrics["vqa_accuracy"] == pytest.approx(sum(values) / 3)
    assert mean.metrics_std is not None and mean.config["shots"]["seeds"] == [0, 1, 2]
    # what the reports need to tell comparable rows apart (idefics_eval/comparability.py)
    recorded = {key: per_seed[0].config[key] for key in ("limit", "num_queries", "demo_data", "request", "generation_options")}
    assert recorded == {"limit": 4, "num_queries": 32, "demo_data": True, "request": "generate",
                        "generation_options": {"num_beams": 1, "max_new_tokens": 5}}
    shots = {seed: [line["shots"] for line in lines(tmp_path / "out" / "predictions" / f"vqav2_4shot_seed{seed}.jsonl")]
             for seed in (0, 1, 2)}
    assert shots[0] != shots[1] != shots[2]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved) == 4


def test_random_zero_shot_is_evaluated_once_for_all_seeds(tmp_path, monkeypatch):
    from idefics_eval import runner

    evaluated = []
    evaluate = runner._evaluate_setting
    monkeypatch.setattr(runner, "_evaluate_setting", lambda p, loaded, selector, shots, seed, *rest: (
        evaluated.append((shots, seed)), evaluate(p, loaded, selector, shots, seed, *rest))[1])
    rows = run(config(tmp_path, selection="random", seeds=(1, 2, 3)))
    assert evaluated == [(0, None), (4, 1), (4, 2), (4, 3)]
    assert sorted(path.name for path in (tmp_path / "out" / "predictions").iterdir()) == [
        "vqav2_0shot.jsonl", "vqav2_4shot_seed1.jsonl", "vqav2_4shot_seed2.jsonl", "vqav2_4shot_seed3.jsonl"]
    (zero,) = [r for r in rows if r.shots == 0]
    assert zero.seed is None and zero.predictions == "predictions/vqav2_0shot.jsonl"
    assert zero.config["shots"] == {"selection": "random", "seed": None, "seeds": [1, 2, 3]}
    assert zero.metrics_std == dict.fromkeys(zero.metrics, 0.0)
    assert [(r.shots, r.seed) for r in rows if r.shots == 4] == [(4, 1), (4, 2), (4, 3), (4, None)]
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 5
    exported = json.loads(export([tmp_path / "out"], "json", "long", intervals=False))
    assert [(r["seed"], r["std"]) for r in exported if r["shots"] == 0 and r["metric"] == "vqa_accuracy"] == [(None, 0.0)]
    paired = compare_runs(tmp_path / "out", tmp_path / "out", resamples=10).records
    assert [(r["shots"], r["seed"]) for r in paired] == [(0, None), (4, 1), (4, 2), (4, 3)]


def test_rices_and_random_share_the_zero_shot_file_only_under_one_identity(tmp_path):
    from idefics_eval.errors import UserError

    zero_shot = tmp_path / "out" / "predictions" / "vqav2_0shot.jsonl"
    rices = run(config(tmp_path, shots=(0,)))
    before = zero_shot.stat().st_mtime_ns
    with pytest.raises(UserError, match="holds vqav2/rices predictions made with a different generation "
                                        r"\(it shares vqav2_0shot.jsonl\).*--overwrite"):
        run(config(tmp_path, shots=(0,), selection="random", max_new_tokens=2))
    random = run(config(tmp_path, shots=(0,), selection="random"))
    assert random[0].metrics == rices[0].metrics and zero_shot.stat().st_mtime_ns == before  # read back, not made again
    shorter = run(config(tmp_path, shots=(0,), selection="random", max_new_tokens=2, overwrite=True))
    assert shorter[0].config["generation"]["max_new_tokens"] == 2 and zero_shot.stat().st_mtime_ns != before


def test_long_prompts_lose_their_least_similar_shots_and_are_counted(tmp_path):
    full = run(config(tmp_path / "a"))
    short = run(config(tmp_path / "b", max_length=100))
    assert full[1].num_truncated == 0 and short[1].num_truncated == 4
    full_lines = lines(tmp_path / "a" / "out" / "predictions" / "vqav2_4shot.jsonl")
    short_lines = lines(tmp_path / "b" / "out" / "predictions" / "vqav2_4shot.jsonl")
    for whole, cut in zip(full_lines, short_lines):
        assert cut["dropped_shots"] > 0
        assert cut["shots"] == whole["shots"][cut["dropped_shots"]:]  # the first shots are the least similar
    assert short[0].num_truncated == 0  # zero-shot prompts fit


def test_rices_with_a_named_clip_encoder(tmp_path, tiny_clip):
    rows = run(config(tmp_path, rices_encoder=str(tiny_clip)))
    encoder = rows[1].config["shots"]["encoder"]
    assert encoder.startswith(f"clip:{tiny_clip}:")
    model_rows = run(config(tmp_path / "own"))
    assert model_rows[1].config["shots"]["index_fingerprint"] != rows[1].config["shots"]["index_fingerprint"]


def test_huggingface_save_to_disk_data_gives_the_same_predictions_as_the_official_files(tmp_path):
    import datasets

    from idefics_eval import formats
    from idefics_eval.tasks import load_task

    spec = load_task("vqav2")
    splits = {}
    for split in ("train", "validation"):
        examples = formats.load_split(spec, split, str(DEMO_DATA)).examples
        splits[split] = datasets.Dataset.from_dict(
            {
                "question_id": [int(e.id) for e in examples],
                "image_id": [int(e.image_id) for e in examples],
                "question": [e.fields["question"] for e in examples],
                "answers": [[{"answer": a, "answer_id": i + 1} for i, a in enumerate(e.answers)] for e in examples],
                "answer_type": [e.metadata["answer_type"] for e in examples],
                "question_type": [e.metadata["question_type"] for e in examples],
                "image": [str(e.image.path) for e in examples],
            }
        ).cast_column("image", datasets.Image())
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "hf")
    official = run(config(tmp_path / "a"))
    from_hf = run(config(tmp_path / "b", data=str(tmp_path / "hf")))
    assert [r.metrics for r in from_hf] == [r.metrics for r in official]
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):
        a = lines(tmp_path / "a" / "out" / "predictions" / name)
        b = lines(tmp_path / "b" / "out" / "predictions" / name)
        assert [(x["id"], x["prediction"], x["shots"]) for x in a] == [(x["id"], x["prediction"], x["shots"]) for x in b]


def test_a_folder_made_before_the_generation_settings_were_recorded_still_resumes(tmp_path):
    from idefics_eval.store import SETTINGS_ADDED

    run(config(tmp_path, shots=(0,)))
    manifest = tmp_path / "out" / "manifest.json"
    data = json.loads(manifest.read_text())
    for entry in data.values():  # as an earlier version wrote it
        for key in SETTINGS_ADDED:
            del entry["identity"]["generation"][key]
    manifest.write_text(json.dumps(data))
    before = (tmp_path / "out" / "predictions" / "vqav2_0shot.jsonl").read_bytes()
    run(config(tmp_path, shots=(0,)))  # resumes: nothing refused, the file kept as it was
    assert (tmp_path / "out" / "predictions" / "vqav2_0shot.jsonl").read_bytes() == before
    data = json.loads(manifest.read_text())
    assert all(entry["identity"]["generation"]["length_penalty"] == 1.0 for entry in data.values())
