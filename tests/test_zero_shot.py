"""Flamingo-style zero-shot (`--zero-shot text-only`, a protocol's `zero_shot:`): a 0-shot prompt shows
the first two support examples as a shot is rendered, without their images, then the query; the same
two for every query, recorded in the rows, the manifest and the sample log; true zero-shot (`none`)
stays the default. The token layout is checked against the processor's own encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke

from idefics_eval.comparability import differences
from idefics_eval.dry_run import prompt_view
from idefics_eval.errors import UserError
from idefics_eval.model_requests import shot_answer
from idefics_eval.models import demo_model_name, load_prompt_side
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.results import read_results

FAKE, IMAGE = "<fake_token_around_image>", "<image>"
FAST = ("--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")


def config(task: str, tmp_path: Path, **more) -> RunConfig:
    return RunConfig(task=task, shots=(0,), output_dir=tmp_path, demo=True, cache_dir=tmp_path / "cache", progress=False, **more)


@pytest.mark.parametrize("task", ["vqav2", "hatefulmemes"])
def test_text_only_zero_shot_tokens_hold_one_image_block_after_the_two_shots_text(task, tmp_path):
    view = prompt_view(config(task, tmp_path, zero_shot="text-only"))
    p = prepare(config(task, tmp_path, zero_shot="text-only"), writes=False)
    first_two = p.support.examples[:2]
    assert view.shot_ids == tuple(shot.id for shot in first_two)
    processor = load_prompt_side(demo_model_name(None)).processor
    tokenizer = processor.tokenizer
    image_id, fake_id = tokenizer.convert_tokens_to_ids(IMAGE), tokenizer.convert_tokens_to_ids(FAKE)
    ids = view.to_json()["input_ids"]
    assert ids.count(image_id) == 1 and ids.count(fake_id) == 2  # one placeholder block: the query's
    block = ids.index(image_id)
    assert ids[block - 1] == ids[block + 1] == fake_id
    # Before the block: the prefix and each shot as the template renders it, with its image left out.
    answer = shot_answer(p.spec)
    before, after = p.template.example.split(IMAGE)
    shots_text = "".join(before + after.format_map({**shot.fields, p.template.target[1:-1]: answer(shot)}) for shot in first_two)
    bos = tokenizer.bos_token if p.generation.add_start_token else ""
    expected = (bos + (p.template.prefix + shots_text + before.format_map(p.queries.examples[0].fields)).strip(" ")
                + FAKE + IMAGE + FAKE)
    assert tokenizer.decode(ids[: block + 2]) == expected
    # The processor's own encoding of the same interleaved input (only the query's image in it).
    query = p.queries.examples[0]
    processed = processor(text=[[item if isinstance(item, str) else item.load() for item in view.requests[0].prompt.items]],
                          return_tensors="pt")
    own = processed["input_ids"][0].tolist()
    assert (own if p.generation.add_start_token else own[1:]) == ids
    assert processed["pixel_values"].shape[1] == 1 and view.requests[0].prompt.images == [query.image]


def test_true_zero_shot_stays_the_default(tmp_path):
    view = prompt_view(config("vqav2", tmp_path))
    assert view.shot_ids == () and prepare(config("vqav2", tmp_path), writes=False).config.zero_shot == "none"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("task", ["vqav2", "scienceqa"])
def test_fast_and_plain_paths_agree_and_the_shots_are_recorded(task, tmp_path, capsys):
    made = {}
    for path in ("fast", "plain"):
        out = tmp_path / path
        code, _, err = invoke(capsys, "run", "--task", task, *FAST, "--zero-shot", "text-only", "--output-dir", str(out),
                              *(["--plain-generation"] if path == "plain" else []))
        assert code == 0, err
        made[path] = [(line["id"], line["prediction"], line["shots"], [round(s, 4) for s in line.get("scores", [])])
                      for line in lines(out / "predictions" / f"{task}_0shot.jsonl")]
    assert made["fast"] == made["plain"]
    support = prepare(config(task, tmp_path / "measure", zero_shot="text-only"), writes=False).support
    first_two = [example.id for example in support.examples[:2]]
    assert all(shots == first_two for _, _, shots, _ in made["fast"]) and len(made["fast"]) == 2
    out = tmp_path / "fast"
    (row,) = json.loads((out / "results.json").read_text())
    assert row["config"]["zero_shot"] == "text-only"
    assert row["config"]["shots"]["text_only_shots"] == first_two and row["config"]["shots"]["support_split"] == support.name
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest.values()
    assert entry["identity"]["zero_shot"] == "text-only"
    assert entry["files"][f"{task}_0shot.jsonl"]["text_only_shots"] == first_two
    for line in lines(out / "samples" / f"{task}_0shot.jsonl"):
        assert [(shot["id"], shot["image"]) for shot in line["shown_shots"]] == [(first_two[0], None), (first_two[1], None)]
        assert line["prompt"].count(IMAGE) == 1


def test_text_only_changes_predictions_and_another_style_is_refused_in_the_same_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ("run", "--task", "hatefulmemes", *FAST, "--limit", "4", "--output-dir", str(out))
    assert invoke(capsys, *args)[0] == 0
    none, (none_row,) = lines(out / "predictions" / "hatefulmemes_0shot.jsonl"), read_results(out / "results.json")
    code, _, err = invoke(capsys, *args, "--zero-shot", "text-only")
    assert code == 2 and "zero_shot" in err and len(err.strip().splitlines()) == 1, err
    assert invoke(capsys, *args, "--zero-shot", "text-only", "--overwrite")[0] == 0
    text_only = lines(out / "predictions" / "hatefulmemes_0shot.jsonl")
    assert all(line["shots"] == [] for line in none) and all(len(line["shots"]) == 2 for line in text_only)
    assert [line["scores"] for line in none] != [line["scores"] for line in text_only]
    (text_only_row,) = read_results(out / "results.json")
    assert "zero_shot none vs text-only" in differences(none_row, text_only_row)  # export and compare name it


def test_a_folder_made_before_zero_shot_styles_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ("run", "--task", "vqav2", *FAST, "--output-dir", str(out))
    assert invoke(capsys, *args)[0] == 0
    before = (out / "predictions" / "vqav2_0shot.jsonl").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest.values():  # as an earlier version wrote it
        del entry["identity"]["zero_shot"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = invoke(capsys, *args)
    assert code == 0, err
    assert (out / "predictions" / "vqav2_0shot.jsonl").read_bytes() == before
    assert invoke(capsys, *args, "--zero-shot", "text-only")[0] == 2  # and is still not text-only's


def test_the_protocol_sets_the_style_and_the_option_wins(tmp_path):
    protocol = tmp_path / "mine.yaml"
    protocol.write_text("name: mine\ndefault:\n  zero_shot: text-only\ntasks:\n  okvqa:\n    zero_shot: none\n")
    styles = {task: prepare(config(task, tmp_path, protocol=str(protocol)), writes=False).config.zero_shot
              for task in ("vqav2", "okvqa", "winoground")}
    assert styles == {"vqav2": "text-only", "okvqa": "none", "winoground": "none"}  # the default section passes Winoground by
    assert prepare(config("vqav2", tmp_path, protocol=str(protocol), zero_shot="none"), writes=False).config.zero_shot == "none"
    for name in ("idefics", "openflamingo"):
        assert prepare(config("vqav2", tmp_path, protocol=name), writes=False).config.zero_shot == "text-only"
    assert prepare(config("vqav2", tmp_path, protocol="default"), writes=False).config.zero_shot == "none"


def test_zero_shot_only_tasks_refuse_text_only_in_one_line(tmp_path, capsys):
    code, _, err = invoke(capsys, "prompt", "--task", "winoground", "--shots", "0", "--demo", "--zero-shot", "text-only")
    assert code == 2 and "winoground is zero-shot only" in err and len(err.strip().splitlines()) == 1
    protocol = tmp_path / "mine.yaml"
    protocol.write_text("name: mine\ntasks:\n  winoground:\n    zero_shot: text-only\n")
    with pytest.raises(UserError, match="tasks.winoground.zero_shot"):
        prepare(config("winoground", tmp_path, protocol=str(protocol)), writes=False)
    protocol.write_text("name: mine\ndefault:\n  zero_shot: images\n")
    with pytest.raises(UserError, match="default.zero_shot"):
        prepare(config("vqav2", tmp_path, protocol=str(protocol)), writes=False)


def test_the_sweep_and_the_api_take_the_style():
    import inspect

    from idefics_eval import api
    from idefics_eval.sweep import SweepConfig, _run_config

    sweep = SweepConfig(checkpoints="x", tasks=("vqav2",), shots=(0,), output_dir=Path("out"), zero_shot="text-only")
    checkpoint = type("Checkpoint", (), {"name": "c", "path": Path("c")})()
    assert _run_config(sweep, checkpoint, "vqav2").zero_shot == "text-only"
    assert inspect.signature(api.evaluate).parameters["zero_shot"].default is None
