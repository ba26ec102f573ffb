"""The committed `--demo` data of Hateful Memes, VisDial, ScienceQA and Winoground: each release's own
layout, pictures that show what the texts say, loading through the task files, and files that are
exactly what `python -m idefics_eval.demo.make_closed_data` writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_closed_data, make_data
from idefics_eval.formats import load_split
from idefics_eval.tasks import load_task

DATA = make_closed_data.DEFAULT_OUT
TASKS = make_closed_data.TASKS
COUNTS = {
    ("hatefulmemes", "train"): 40, ("hatefulmemes", "validation"): 12, ("hatefulmemes", "test"): 16,
    ("visdial", "train"): 32, ("visdial", "validation"): 12,
    ("scienceqa", "train"): 40, ("scienceqa", "validation"): 12, ("scienceqa", "test"): 14,
    ("winoground", "test"): 12,
}
NAMES = list(make_data.COLORS)
PALETTE = np.array([make_data.COLORS[n] for n in NAMES], dtype=float)


def task_files(task: str) -> list[Path]:
    return sorted(p.relative_to(DATA) for p in (DATA / task).rglob("*") if p.is_file())


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=float)


def color_at(array: np.ndarray, x: int, y: int) -> str:
    """The named colour nearest to the 3x3 patch around (x, y)."""
    patch = array[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
    return NAMES[int(np.argmin(((PALETTE - patch) ** 2).sum(1)))]


def shape_at(array: np.ndarray, position: str, background: str) -> str | None:
    """The shape drawn at a scene position, told apart by how much of its box it fills."""
    x, y = make_data.POSITIONS[position]
    color = color_at(array, x, y)
    if color == background:
        return None
    box = array[y - 8 : y + 9, x - 8 : x + 9]
    filled = (np.linalg.norm(box - make_data.COLORS[color], axis=-1) < np.linalg.norm(box - make_data.COLORS[background], axis=-1)).mean()
    return "triangle" if filled < 0.6 else "circle" if filled < 0.9 else "square"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the files as a whole ------------------------------------------------------------------------------


@pytest.mark.parametrize("task_split", list(COUNTS), ids=lambda p: f"{p[0]}-{p[1]}")
def test_loads_through_the_task_file_with_the_expected_counts(task_split):
    task, split = task_split
    loaded = load_split(load_task(task), split, str(DATA / task))
    assert len(loaded) == COUNTS[task_split] and loaded.name == f"{task}/{split}"
    assert len({e.id for e in loaded.examples}) == len(loaded)
    for example in loaded.examples:
        if example.label is not None and example.candidates:
            assert example.answers == (example.candidates[example.label],)


@pytest.mark.parametrize("task", TASKS)
def test_images_decode_as_64x64_rgb_and_each_task_stays_small(task):
    images = [p for p in task_files(task) if p.suffix in (".png", ".jpg")]
    assert images
    for relative in images:
        with Image.open(DATA / relative) as image:
            assert image.format == {".png": "PNG", ".jpg": "JPEG"}[relative.suffix]
            assert (image.convert("RGB").size, image.mode) == ((64, 64), "RGB")
    assert sum((DATA / p).stat().st_size for p in task_files(task)) < 300_000


def test_regenerating_reproduces_the_committed_files(tmp_path):
    make_closed_data.main(["--out", str(tmp_path)])
    for task in TASKS:
        committed = task_files(task)
        assert committed == sorted(p.relative_to(tmp_path) for p in (tmp_path / task).rglob("*") if p.is_file())
        for relative in committed:
            if relative.suffix in (".json", ".jsonl"):
                assert (tmp_path / relative).read_bytes() == (DATA / relative).read_bytes(), relative
            else:  # JPEG bytes may differ between libjpeg builds (PNG between zlib builds); the pixels may not
                tolerance = 2 if relative.suffix == ".jpg" else 0
                assert np.abs(pixels(tmp_path / relative) - pixels(DATA / relative)).max() <= tolerance, relative


# --- Hateful Memes -------------------------------------------------------------------------------------

HOSTILE = re.compile(r"no (\w+)s allowed in here|(\w+)s ruin everything|send the (\w+)s away|we do not want (\w+)s")


@pytest.mark.parametrize("stem", list(make_closed_data.MEME_SPLITS))
def test_memes_are_hateful_exactly_when_hostile_text_meets_its_target_in_the_picture(stem):
    records = read_jsonl(DATA / "hatefulmemes" / f"{stem}.jsonl")
    assert len(records) == make_closed_data.MEME_SPLITS[stem]
    assert {r["label"] for r in records} == {0, 1}  # ROC AUC needs both classes
    confounders = 0
    for record in records:
        assert list(record) == ["id", "img", "label", "text"] and record["img"] == f"img/{record['id']:05d}.png"
        array = pixels(DATA / "hatefulmemes" / record["img"])
        background = color_at(array, 32, 32)  # the middle of the picture is never drawn on
        shown = {shape_at(array, p, background) for p in ("left", "right")} - {None}
        assert shown
        match = HOSTILE.fullmatch(record["text"])
        target = next(group for group in match.groups() if group) if match else None
        assert record["label"] == int(target in shown), record
        confounders += bool(target) and not record["label"]
    assert confounders  # the same kind of text over a picture without its target


def test_meme_text_is_rendered_on_the_picture():
    record = read_jsonl(DATA / "hatefulmemes" / "train.jsonl")[0]
    array = pixels(DATA / "hatefulmemes" / record["img"])
    top = array[1:12]
    assert (np.abs(top - 255).max(-1) < 30).any()  # white letters
    assert (top.max(-1) < 30).any()  # and their black shadow


# --- VisDial -------------------------------------------------------------------------------------------


def dialog_truth(question: str, scene: make_data.Scene) -> str:
    """The answer to a templated VisDial question, read off the scene independently of the generator."""
    at = {s.position: s for s in scene.shapes}
    patterns = [
        (r"what color is the background", lambda: scene.background),
        (r"how many shapes are there", lambda: str(len(scene.shapes))),
        (r"are there any people", lambda: "no"),
        (r"is this a photo", lambda: "no it's a drawing"),
        (r"is it daytime", lambda: "i can't tell"),
        (r"is there a (\w+)", lambda k: "yes" if any(s.kind == k for s in scene.shapes) else "no"),
        (r"what shape is on the (\w+)", lambda p: f"a {at[p].kind}"),
        (r"what color is the shape on the (\w+)", lambda p: at[p].color),
        (r"is there anything on the (\w+)", lambda p: "yes" if p in at else "no"),
    ]
    for pattern, answer in patterns:
        if match := re.fullmatch(pattern, question):
            return answer(*match.groups())
    raise AssertionError(f"no template matches {question!r}")


@pytest.mark.parametrize("split", list(make_closed_data.DIALOG_SPLITS))
def test_visdial_dialogs_are_true_to_their_pictures_with_100_options_per_round(split):
    data = json.loads((DATA / "visdial" / f"visdial_1.0_{split}.json").read_text())
    assert (data["version"], data["split"], list(data["data"])) == ("1.0", f"{split}2018", ["questions", "answers", "dialogs"])
    questions, answers, dialogs = data["data"]["questions"], data["data"]["answers"], data["data"]["dialogs"]
    assert len(dialogs) == make_closed_data.DIALOG_SPLITS[split]
    for dialog in dialogs:
        scene = make_data.make_scene(dialog["image_id"])
        assert len(dialog["dialog"]) == 10
        for turn in dialog["dialog"]:
            options = turn["answer_options"]
            assert len(options) == len(set(options)) == 100 and options[turn["gt_index"]] == turn["answer"]
            assert answers[turn["answer"]] == dialog_truth(questions[turn["question"]], scene)
            assert not questions[turn["question"]].endswith("?")  # as in VisDial: no question marks
    folders = ("VisualDialog_val2018",) if split == "val" else ("train2014", "val2014")
    images = [p.name for folder in folders for p in (DATA / "visdial" / folder).iterdir()]
    assert sorted(int(name[-16:-4]) for name in images) == sorted(d["image_id"] for d in dialogs)  # none stale


def test_visdial_train_images_come_from_both_coco_folders_and_val_has_dense_relevance():
    assert {p.parent.name for p in (DATA / "visdial").rglob("COCO_*.jpg")} == {"train2014", "val2014"}
    data = json.loads((DATA / "visdial" / "visdial_1.0_val.json").read_text())
    dense = json.loads((DATA / "visdial" / "visdial_1.0_val_dense_annotations.json").read_text())
    assert [d["image_id"] for d in dense] == [d["image_id"] for d in data["data"]["dialogs"]]
    assert not (DATA / "visdial" / "visdial_1.0_train_dense_annotations.json").exists()
    for entry, dialog in zip(dense, data["data"]["dialogs"]):
        turn = dialog["dialog"][entry["round_id"] - 1]
        relevance = entry["gt_relevance"]
        assert len(relevance) == 100 and relevance[turn["gt_index"]] == 1.0
        assert set(relevance) <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0} and sum(r > 0 for r in relevance) >= 2
    loaded = load_split(load_task("visdial"), "validation", str(DATA / "visdial"))
    assert {e.metadata["round_id"] for e in loaded.examples} != {10}  # the annotated rounds vary
    assert all(len(e.metadata["relevance"]) == 100 for e in loaded.examples)


# --- ScienceQA -----------------------------------------------------------------------------------------


def problem_truth(question: str, scene: make_data.Scene) -> str:
    at = {s.position: s for s in scene.shapes}
    patterns = [
        (r"Which shape is on the (\w+) of the picture\?", lambda p: at[p].kind),
        (r"What is the color of the background\?", lambda: scene.background),
        (r"How many shapes are in the picture\?", lambda: str(len(scene.shapes))),
        (r"Is there an? (\w+) (\w+) in the picture\?",
         lambda c, k: "yes" if any(s.color == c and s.kind == k for s in scene.shapes) else "no"),
        (r"Which color is the (\w+)\?", lambda k: next(s.color for s in scene.shapes if s.kind == k)),
    ]
    for pattern, answer in patterns:
        if match := re.fullmatch(pattern, question):
            return answer(*match.groups())
    raise AssertionError(f"no template matches {question!r}")


def test_scienceqa_problems_are_true_to_their_pictures_and_text_only_ones_are_skipped():
    problems = json.loads((DATA / "scienceqa" / "problems.json").read_text())
    splits = json.loads((DATA / "scienceqa" / "pid_splits.json").read_text())
    assert {"train", "val", "test", "trainval"} <= set(splits)
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    text_only = 0
    for split in ("train", "val", "test"):
        for pid in splits[split]:
            problem = problems[pid]
            assert problem["split"] == split and 2 <= len(problem["choices"]) <= 4
            image = DATA / "scienceqa" / "images" / split / pid / "image.png"
            if problem["image"] is None:
                text_only += 1
                assert not image.parent.exists()
                continue
            scene = make_closed_data.problem_scene(int(pid))
            assert problem["choices"][problem["answer"]] == problem_truth(problem["question"], scene)
            array = pixels(image)
            assert color_at(array, 1, 1) == scene.background
    assert text_only == sum(without for _, without in make_closed_data.PROBLEM_SPLITS.values())
    loaded = load_split(load_task("scienceqa"), "test", str(DATA / "scienceqa"))
    assert all(e.fields["context"].startswith("Question: ") and "\nOptions: (A) " in e.fields["context"] for e in loaded.examples)
    assert {e.fields["hint"] != "" for e in loaded.examples} == {True, False}


# --- Winoground ----------------------------------------------------------------------------------------

CAPTIONS = [
    (r"an? (\w+) (\w+) left of an? (\w+) (\w+)", lambda c1, k1, c2, k2: {"left": (k1, c1), "right": (k2, c2)}),
    (r"an? (\w+) above an? (\w+)", lambda k1, k2: {"top": (k1, None), "bottom": (k2, None)}),
    (r"an? (\w+) is (above|below) and an? (\w+) is (above|below)",
     lambda k1, r1, k2, r2: {{"above": "top", "below": "bottom"}[r1]: (k1, None), {"above": "top", "below": "bottom"}[r2]: (k2, None)}),
]


def described(caption: str) -> dict[str, tuple[str, str | None]]:
    """position -> (shape, colour or None) that a demo caption says is there."""
    for pattern, layout in CAPTIONS:
        if match := re.fullmatch(pattern, caption):
            return layout(*match.groups())
    raise AssertionError(f"no caption pattern matches {caption!r}")


def test_winoground_captions_swap_words_and_each_describes_its_own_image():
    records = read_jsonl(DATA / "winoground" / "examples.jsonl")
    assert [r["id"] for r in records] == list(range(12))
    assert {r["collapsed_tag"] for r in records} == {"Object", "Relation"}
    for record in records:
        assert list(record) == ["id", "image_0", "image_1", "caption_0", "caption_1", "tag", "secondary_tag",
                                "num_main_preds", "collapsed_tag"]
        assert record["caption_0"] != record["caption_1"]
        assert sorted(record["caption_0"].split()) == sorted(record["caption_1"].split())
        arrays = [pixels(DATA / "winoground" / "images" / f"{record[f'image_{k}']}.png") for k in (0, 1)]
        assert np.abs(arrays[0] - arrays[1]).max() > 0
        for k in (0, 1):
            background = color_at(arrays[k], 1, 1)
            for position, (kind, color) in described(record[f"caption_{k}"]).items():
                assert shape_at(arrays[k], position, background) == kind, (record, k)
                x, y = make_data.POSITIONS[position]
                assert color in (None, color_at(arrays[k], x, y)), (record, k)
        # and the other caption does not describe image 0
        assert any(
            shape_at(arrays[0], p, color_at(arrays[0], 1, 1)) != kind
            or color not in (None, color_at(arrays[0], *make_data.POSITIONS[p]))
            for p, (kind, color) in described(record["caption_1"]).items()
        )
