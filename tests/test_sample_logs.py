"""Sample logs (samples/<task>_<shots>shot.jsonl): what the model saw per query, checked against the
predictions file and the example data; crash-safe like predictions; off with --no-log-samples;
re-scorable with `score --predictions`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from idefics_eval.model_requests import candidates_of, shot_answer
from idefics_eval.plan import RunConfig, prepare

from conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--demo", "--demo-seed", "0", "--limit", "3", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")


def run_task(capsys, out: Path, cache: Path, task: str, shots: str, *more: str) -> None:
    code, _, err = invoke(capsys, "run", "--task", task, "--shots", shots, "--output-dir", str(out),
                          "--cache-dir", str(cache), *FAST, *more)
    assert code == 0, err


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per request kind, and vqav2 again without sample logs."""
    root = tmp_path_factory.mktemp("samples")
    folders = {}
    for name, task, shots, more in [("vqav2", "vqav2", "0,2", ()), ("plain", "vqav2", "0,2", ("--no-log-samples",)),
                                    ("scienceqa", "scienceqa", "0,2", ()), ("winoground", "winoground", "0", ())]:
        folders[name] = root / name
        run_task(NoCapture(), folders[name], root / "cache", task, shots, *more)
    return root, folders


class NoCapture:
    """What `invoke` reads output from, for the module's runs (capsys is per test): nothing."""

    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


def prepared(task: str, shots: tuple[int, ...] = (0, 2)):
    return prepare(RunConfig(task=task, shots=shots, output_dir=Path("unused"), demo=True, demo_seed=0, limit=3))


def check_common(sample: dict, prediction: dict, example, p, tokenizer) -> None:
    """The prediction line's fields unchanged, the example's inputs and references, the shots as shown,
    and the prompt's text and length as the template renders and the tokenizer counts it."""
    assert {key: sample[key] for key in prediction} == prediction
    assert sample["inputs"] == dict(example.fields) and sample["answers"] == list(example.answers)
    assert sample["images"][0] == example.image.key
    support = {shot.id: shot for shot in p.support.examples}
    shots = [support[shot["id"]] for shot in sample["shown_shots"]]
    assert [shot.id for shot in shots] == prediction["shots"]
    assert [shot["answer"] for shot in sample["shown_shots"]] == [shot_answer(p.spec)(shot) for shot in shots]
    prompt = p.template.render(shots, example, shot_answer(p.spec)).processor_text(tokenizer.bos_token)
    assert sample["prompt"] == prompt
    assert sample["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_a_generated_task_logs_inputs_references_shots_prompt_and_raw_generation(runs, demo_loaded):
    _, folders = runs
    p = prepared("vqav2")
    for shots in (0, 2):
        predictions = lines(folders["vqav2"] / "predictions" / f"vqav2_{shots}shot.jsonl")
        samples = lines(folders["vqav2"] / "samples" / f"vqav2_{shots}shot.jsonl")
        assert [s["id"] for s in samples] == [e.id for e in p.queries.examples]
        for sample, prediction, example in zip(samples, predictions, p.queries.examples):
            check_common(sample, prediction, example, p, demo_loaded.processor.tokenizer)
            assert sample["metadata"]["answer_type"] == example.metadata["answer_type"]
            assert sample["raw_prediction"].strip().startswith(sample["prediction"])
            assert len(sample["shown_shots"]) == shots and sample["dropped_shots"] == 0
            similarities = [shot["similarity"] for shot in sample["shown_shots"]]
            assert all(-1.0 <= s <= 1.0 for s in similarities) and similarities == sorted(similarities)  # RICES: most similar last


def test_a_ranked_task_logs_every_candidates_score(runs, demo_loaded):
    _, folders = runs
    p = prepared("scienceqa")
    predictions = lines(folders["scienceqa"] / "predictions" / "scienceqa_2shot.jsonl")
    samples = lines(folders["scienceqa"] / "samples" / "scienceqa_2shot.jsonl")
    for sample, prediction, example in zip(samples, predictions, p.queries.examples, strict=True):
        check_common(sample, prediction, example, p, demo_loaded.processor.tokenizer)
        assert sample["candidates"] == list(candidates_of(p.spec, example)) and sample["label"] == example.label
        assert len(sample["scores"]) == len(example.candidates)
        assert sample["prediction"] == example.candidates[max(range(len(sample["scores"])), key=sample["scores"].__getitem__)]
        assert sample["score"] == float(sample["prediction"] == example.candidates[example.label])


def test_a_matched_task_logs_both_images_and_the_four_scores(runs, demo_loaded):
    _, folders = runs
    p = prepared("winoground", (0,))
    predictions = lines(folders["winoground"] / "predictions" / "winoground_0shot.jsonl")
    samples = lines(folders["winoground"] / "samples" / "winoground_0shot.jsonl")
    for sample, prediction, example in zip(samples, predictions, p.queries.examples, strict=True):
        check_common(sample, prediction, example, p, demo_loaded.processor.tokenizer)
        assert sample["images"] == [example.image.key, example.extra_images[0].key]
        assert len(sample["scores"]) == 4 and sample["inputs"]["caption_1"] == example.fields["caption_1"]


def test_no_log_samples_writes_none_and_the_same_predictions(runs):
    _, folders = runs
    assert not (folders["plain"] / "samples").exists()
    for name in ("vqav2_0shot.jsonl", "vqav2_2shot.jsonl"):
        assert (folders["plain"] / "predictions" / name).read_bytes() == (folders["vqav2"] / "predictions" / name).read_bytes()


@pytest.mark.parametrize("task, shots", [("vqav2", 2), ("scienceqa", 2), ("winoground", 0)])
def test_score_of_a_sample_log_equals_the_runs_metrics(runs, capsys, task, shots):
    root, folders = runs
    out = root / f"scored_{task}.json"
    code, _, err = invoke(capsys, "score", "--predictions", str(folders[task] / "samples" / f"{task}_{shots}shot.jsonl"), "-o", str(out))
    assert code == 0, err
    row = next(r for r in json.loads((folders[task] / "results.json").read_text()) if r["shots"] == shots)
    assert json.loads(out.read_text())["metrics"] == pytest.approx(row["metrics"])


def test_resume_after_a_kill_leaves_no_duplicate_or_partial_sample_line(runs, capsys, tmp_path):
    """As a SIGKILL leaves it (tests/test_kill.py kills a real process): the sample log's partial file
    one line ahead of the predictions' (killed between the two writes) and ending in half a line."""
    root, folders = runs
    killed = tmp_path / "killed"
    shutil.copytree(folders["vqav2"], killed)
    name = "vqav2_2shot.jsonl"
    whole_predictions = (killed / "predictions" / name).read_bytes()
    whole_samples = (killed / "samples" / name).read_bytes()
    sample_lines = whole_samples.splitlines(keepends=True)
    (killed / "predictions" / f"{name}.partial.0").write_bytes(whole_predictions.splitlines(keepends=True)[0])
    (killed / "samples" / f"{name}.partial.0").write_bytes(b"".join(sample_lines[:2]) + sample_lines[2][:40])
    (killed / "predictions" / name).unlink()
    (killed / "samples" / name).unlink()
    run_task(capsys, killed, root / "cache", "vqav2", "0,2")
    assert (killed / "samples" / name).read_bytes() == whole_samples
    assert (killed / "predictions" / name).read_bytes() == whole_predictions
    assert not list(killed.glob("*/*.partial*"))


def test_a_run_made_without_sample_logs_gets_them_on_rerun(runs, capsys, tmp_path):
    root, folders = runs
    later = tmp_path / "later"
    shutil.copytree(folders["plain"], later)
    run_task(capsys, later, root / "cache", "vqav2", "0,2")
    for name in ("vqav2_0shot.jsonl", "vqav2_2shot.jsonl"):
        assert (later / "samples" / name).read_bytes() == (folders["vqav2"] / "samples" / name).read_bytes()
        assert (later / "predictions" / name).read_bytes() == (folders["vqav2"] / "predictions" / name).read_bytes()


def test_every_field_is_documented(runs):
    """docs/outputs.md has a row for each key a sample line holds, of every request kind."""
    _, folders = runs
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "outputs.md").read_text(), re.MULTILINE))
    keys = {key for folder in ("vqav2", "scienceqa", "winoground") for path in (folders[folder] / "samples").glob("*.jsonl")
            for line in lines(path) for key in line}
    assert keys <= documented, f"undocumented sample fields: {sorted(keys - documented)}"
