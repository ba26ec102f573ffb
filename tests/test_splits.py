"""Drawn splits (idefics_eval/splits.py): the support subset and the selection split held out of train,
their disjointness by id and by image, what is recorded, and what run, score, export, compare and
sweep do with a selection-split row."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from idefics_eval import formats
from idefics_eval.comparability import differences, is_selection
from idefics_eval.errors import UserError
from idefics_eval.examples import ExampleSet
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.results import read_results
from idefics_eval.splits import selection_split, support_subset
from idefics_eval.tasks import Subset, load_task

from conftest import invoke, make_example

RUN = ("--task", "vqav2", "--demo", "--num-beams", "1", "--max-new-tokens", "2", "--no-progress")


def vqa_split(name: str, images: range, per_image: int = 3) -> ExampleSet:
    """A split with `per_image` questions about each image: image ids are shared, example ids are not."""
    examples = [make_example(f"{name}-{i}-{q}", f"img{i}", f"q{q}?", ["a"], rgb=(i % 256, q, 0))
                for i in images for q in range(per_image)]
    return ExampleSet(f"vqa/{name}", "constructed", tuple(examples))


def ids(split: ExampleSet) -> set[str]:
    return {e.id for e in split.examples}


def images(split: ExampleSet) -> set[str]:
    return {e.image_id for e in split.examples}


def test_the_support_subset_is_a_seeded_draw_independent_of_the_splits_order():
    train = vqa_split("train", range(40))
    shuffled = list(train.examples)
    random.Random(1).shuffle(shuffled)
    drawn = support_subset(train, Subset(20, 0))
    assert len(drawn.examples) == 20 and drawn.note is None
    assert ids(support_subset(ExampleSet(train.name, train.source, tuple(shuffled)), Subset(20, 0)).examples) == ids(drawn.examples)
    assert ids(support_subset(train, Subset(20, 1)).examples) != ids(drawn.examples)
    assert [e.id for e in drawn.examples.examples] == [e.id for e in train.examples if e.id in ids(drawn.examples)]  # source order
    assert drawn.record == {"size": 20, "requested_size": 20, "seed": 0, "of": 120}
    assert support_subset(train, None).examples is train


def test_a_support_subset_larger_than_the_split_is_the_whole_split_with_a_note():
    train = vqa_split("train", range(4))
    drawn = support_subset(train, Subset(50, 0))
    assert ids(drawn.examples) == ids(train) and drawn.record["size"] == 12 and drawn.record["requested_size"] == 50
    assert "fewer than the 50 asked for" in drawn.note


def test_the_selection_split_shares_no_example_and_no_image_with_the_support_set_or_the_reporting_split():
    train = vqa_split("train", range(60))  # three questions per image
    reporting = vqa_split("validation", range(55, 70))  # its images 55-59 are also train's
    support = support_subset(train, Subset(30, 0))
    selection, shots = selection_split("vqa", train, reporting, Subset(1000, 0), support)
    assert shots is support
    chosen = selection.examples
    assert chosen.name == "vqa/selection" and len(chosen) > 0
    assert not ids(chosen) & ids(support.examples) and not images(chosen) & images(support.examples)
    assert not images(chosen) & images(reporting)
    # every train example that could be held out is: those left are on a support or reporting image
    left = [e for e in train.examples if e.id not in ids(chosen) | ids(support.examples)]
    assert all(e.image_id in images(support.examples) | images(reporting) for e in left)
    assert selection.record == {"name": "selection", "size": len(chosen), "requested_size": 1000, "seed": 0,
                                "drawn_from": "vqa/train", "support_subset": support.record}
    assert "fewer than the 1000 asked for" in selection.note


def test_without_a_support_subset_the_selection_split_is_held_out_of_the_shots():
    train = vqa_split("train", range(40))
    reporting = vqa_split("validation", range(100, 110))
    selection, shots = selection_split("vqa", train, reporting, Subset(10, 3), None)
    assert len(selection.examples) == 10 and selection.note is None and selection.record["support_subset"] is None
    assert not images(selection.examples) & images(shots.examples)
    assert ids(shots.examples) == {e.id for e in train.examples if e.image_id not in images(selection.examples)}
    assert "/" not in shots.examples.name.partition("/")[2]  # one dataset for the shot selector (shots._dataset_of)
    # asked for all of it: at most half of train's images are held out, the rest stays for shots
    most, rest = selection_split("vqa", train, reporting, Subset(10_000, 3), None)
    assert len(images(most.examples)) == 20 and len(images(rest.examples)) == 20 and "half its images" in most.note


def test_a_selection_split_with_nothing_left_is_refused():
    train = vqa_split("train", range(5))
    with pytest.raises(UserError, match="lower the support_subset size"):
        selection_split("vqa", train, vqa_split("validation", range(9, 10)), Subset(10, 0), support_subset(train, Subset(15, 0)))


def test_a_selection_run_records_its_split_and_scores_only_held_out_queries(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = invoke(capsys, "run", *RUN, "--shots", "0,2", "--split", "selection", "--output-dir", str(out),
                               "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert "note: selection_split: vqav2/train has 48 examples left" in stdout
    assert stdout.count("note: scored vqav2/selection: 48 queries held out of vqav2/train (seed 0)") == 1
    rows = read_results(out / "results.json")
    spec = load_task("vqav2")
    train = formats.load_split(spec, "train", formats.demo_data(spec))
    validation = formats.load_split(spec, "validation", formats.demo_data(spec))
    for row in rows:
        assert row.config["split"] == {"name": "selection", "size": 48, "requested_size": 1000, "seed": 0,
                                       "drawn_from": "vqav2/train", "support_subset": None}
        assert row.config["data"]["query_split"] == "vqav2/selection" and row.num_examples == 48 and is_selection(row)
    lines = [json.loads(line) for line in (out / "predictions" / "vqav2_2shot.jsonl").open()]
    by_id = {e.id: e for e in train.examples}
    held_out = {by_id[line["id"]].image_id for line in lines}
    assert set(by_id) >= {line["id"] for line in lines} and not {line["id"] for line in lines} & ids(validation)
    assert all(by_id[shot].image_id not in held_out for line in lines for shot in line["shots"])
    code, _, err = invoke(capsys, "run", *RUN, "--shots", "0,2", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and "split" in err and len(err.strip().splitlines()) == 1  # the reporting split: another run
    code, stdout, _ = invoke(capsys, "score", str(out))  # draws the selection split again from what the rows record
    assert code == 0 and f"{rows[0].metrics['vqa_accuracy']:.2f}" in stdout


def test_a_selection_row_is_never_in_a_card_cell_nor_comparable_with_a_reporting_row(tmp_path, capsys):
    folders = {}
    for split in ("selection", "reporting"):
        folders[split] = tmp_path / split
        code, _, err = invoke(capsys, "run", *RUN, "--shots", "0", "--limit", "3", "--split", split,
                              "--output-dir", str(folders[split]), "--cache-dir", str(tmp_path / "cache"))
        assert code == 0, err
    selection, reporting = (read_results(folders[s] / "results.json")[0] for s in ("selection", "reporting"))
    assert "split selection (48, seed 0) vs reporting" in differences(selection, reporting)
    code, _, err = invoke(capsys, "export", str(folders["selection"]), "--allow-partial")
    assert code == 2 and "selection-split rows only" in err
    code, both, err = invoke(capsys, "export", str(folders["selection"]), str(folders["reporting"]), "--allow-partial",
                             "--format", "json")
    assert code == 0, err
    assert [row["VQAv2 (OE VQA acc)"] for row in json.loads(both)] == [reporting.metrics["vqa_accuracy"]]
    code, long, err = invoke(capsys, "export", str(folders["selection"]), "--layout", "long", "--no-ci", "--format", "json")
    assert code == 0, err
    assert {record["split"] for record in json.loads(long)} == {"selection (48, seed 0)"}


def test_nocaps_and_winoground_have_no_selection_split(tmp_path, capsys):
    for task, why in (("nocaps", "takes its shots from coco"), ("winoground", "is zero-shot only")):
        code, _, err = invoke(capsys, "run", "--task", task, "--demo", "--shots", "0", "--split", "selection",
                              "--output-dir", str(tmp_path / task), "--no-progress")
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1


def protocol_with_subset(tmp_path: Path, size: int) -> str:
    path = tmp_path / f"subset{size}.yaml"
    path.write_text(f"name: subset{size}\ndefault:\n  support_subset: {{size: {size}, seed: 0}}\n")
    return str(path)


def test_shots_come_from_the_support_subset_recorded_and_another_subset_is_refused(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = (*RUN, "--shots", "2", "--limit", "4", "--cache-dir", str(cache))
    assert invoke(capsys, "run", *args, "--output-dir", str(out), "--protocol", protocol_with_subset(tmp_path, 10))[0] == 0
    p = prepare(RunConfig(task="vqav2", shots=(2,), output_dir=tmp_path / "x", demo=True,
                          protocol=protocol_with_subset(tmp_path, 10)), writes=False)
    assert len(p.support) == 10 and p.support.name == "vqav2/train[10 of 96, seed 0]"
    lines = [json.loads(line) for line in (out / "predictions" / "vqav2_2shot.jsonl").open()]
    assert all(set(line["shots"]) <= ids(p.support) for line in lines)
    row = read_results(out / "results.json")[0]
    assert row.config["shots"]["support_subset"] == {"size": 10, "requested_size": 10, "seed": 0, "of": 96}
    assert row.config["shots"]["support_split"] == "vqav2/train[10 of 96, seed 0]"
    code, _, err = invoke(capsys, "run", *args, "--output-dir", str(out), "--protocol", protocol_with_subset(tmp_path, 12))
    assert code == 2 and "already holds" in err and len(err.strip().splitlines()) == 1  # shots from another support set
    assert invoke(capsys, "run", *args, "--output-dir", str(tmp_path / "run12"), "--protocol", protocol_with_subset(tmp_path, 12))[0] == 0
    # the RICES index is built over each subset's images: one cache entry per subset, keyed by its content
    metas = {m["split"]: m for m in (json.loads(path.read_text()) for path in (cache / "indexes").glob("*/meta.json"))}
    assert sorted(metas) == ["vqav2/train[10 of 96, seed 0]", "vqav2/train[12 of 96, seed 0]"]
    assert set(metas["vqav2/train[10 of 96, seed 0]"]["image_ids"]) == images(p.support)


def test_without_a_subset_nothing_new_is_recorded_so_older_folders_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = (*RUN, "--shots", "0,2", "--limit", "2", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert invoke(capsys, "run", *args)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())["vqav2/rices"]
    assert "split" not in manifest["identity"] and all("support_subset" not in f for f in manifest["files"].values())
    assert manifest["files"]["vqav2_2shot.jsonl"]["support_split"] == "vqav2/train"
    before = (out / "predictions" / "vqav2_2shot.jsonl").read_text()
    code, _, err = invoke(capsys, "run", *args)
    assert code == 0, err
    assert (out / "predictions" / "vqav2_2shot.jsonl").read_text() == before


def test_the_idefics_protocol_draws_the_authors_sizes():
    from idefics_eval.protocols import apply_protocol, load_protocol

    protocol = load_protocol("idefics")
    sizes = {task: (apply_protocol(load_task(task), protocol).support_subset, apply_protocol(load_task(task), protocol).selection_split)
             for task in ("vqav2", "okvqa", "coco", "hatefulmemes", "renderedsst2", "imagenet")}
    assert sizes["vqav2"] == sizes["okvqa"] == (Subset(2048, 0), Subset(1024, 0))
    assert sizes["coco"] == (Subset(2048, 0), Subset(5000, 0))
    assert sizes["hatefulmemes"] == (Subset(2048, 0), Subset(1000, 0))
    assert sizes["renderedsst2"][0] == Subset(512, 0) and sizes["imagenet"] == (Subset(2048, 0), Subset(1000, 0))
    assert load_task("vqav2").support_subset is None  # the default: the whole support split


def test_a_sweep_selects_on_the_selection_split_and_says_so(tmp_path, capsys):
    from idefics_eval.demo.model import save_demo_model

    save_demo_model(tmp_path / "ckpts" / "step-1", 1)
    common = ("sweep", "--checkpoints", str(tmp_path / "ckpts" / "step-*"), "--task", "vqav2", "--shots", "0", "--limit", "2",
              "--num-beams", "1", "--max-new-tokens", "1", "--demo-data", "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    code, stdout, err = invoke(capsys, *common, "--output-dir", str(tmp_path / "sweep"))
    assert code == 0, err
    assert stdout.splitlines()[0].startswith("sweep: checkpoints are compared on each task's selection split")
    assert read_results(tmp_path / "sweep" / "step-1" / "results.json")[0].config["split"]["name"] == "selection"
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["split"] == "selection"
    code, stdout, err = invoke(capsys, *common, "--output-dir", str(tmp_path / "reporting"), "--split", "reporting")
    assert code == 0, err
    assert "reporting split" in stdout.splitlines()[0]
    assert "split" not in read_results(tmp_path / "reporting" / "step-1" / "results.json")[0].config


def test_the_api_takes_the_split(demo_loaded, tmp_path):
    from idefics_eval.api import evaluate

    rows = evaluate(demo_loaded.model, demo_loaded.processor, "hatefulmemes", shots=[0], limit=2, demo_data=True,
                    split="selection", output_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert rows[0].config["split"]["name"] == "selection" and rows[0].config["data"]["query_split"] == "hatefulmemes/selection"
    with pytest.raises(UserError, match="--split 'held-out'"):
        evaluate(demo_loaded.model, demo_loaded.processor, "hatefulmemes", shots=[0], demo_data=True, split="held-out",
                 output_dir=tmp_path / "bad")
