"""The committed `--demo` data of OK-VQA, TextVQA and VizWiz: each task's own file layout, true answers,
pictures that show what the questions ask about, loading through the task files, and files that are
exactly what `python -m idefics_eval.demo.make_vqa_family` writes."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_data, make_vqa_family
from idefics_eval.formats import load_split
from idefics_eval.tasks import load_task

DATA = make_vqa_family.DEFAULT_OUT
TASKS = ("okvqa", "textvqa", "vizwiz")
SPLITS = ("train", "validation")
SIZES = {"train": 48, "validation": 16}
NAMES = list(make_data.COLORS)
PALETTE = np.array([make_data.COLORS[n] for n in NAMES], dtype=float)


def files(task: str, split: str):
    return load_task(task).vqa_json[split]


def load(task: str, split: str) -> tuple[dict, dict]:
    entry = files(task, split)
    folder = DATA / task
    return json.loads((folder / entry.questions).read_text()), json.loads((folder / entry.annotations).read_text())


def pixels(task: str, split: str, question: dict) -> np.ndarray:
    entry = files(task, split)
    with Image.open(DATA / task / entry.images / entry.image_file.format(**question)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
        return np.asarray(image, dtype=float)


def color_at(array: np.ndarray, x: int, y: int) -> str:
    """The named colour nearest to the 3x3 patch around (x, y)."""
    patch = array[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
    return NAMES[int(np.argmin(((PALETTE - patch) ** 2).sum(1)))]


def most_frequent(answers: list[str]) -> str:
    (top, count), *rest = Counter(answers).most_common()
    assert not rest or rest[0][1] < count, answers  # strictly the most frequent
    return top


@pytest.fixture(params=[(task, split) for task in TASKS for split in SPLITS], ids=lambda p: f"{p[0]}-{p[1]}")
def task_split(request):
    return request.param


def test_files_follow_the_task_spec_layout(task_split):
    task, split = task_split
    questions, annotations = load(task, split)
    entry = files(task, split)
    folder = DATA / task / entry.images
    expected = {entry.image_file.format(**q) for q in questions["questions"]}
    if task == "textvqa":  # both splits' images live in train_images/
        expected |= {entry.image_file.format(**q) for other in SPLITS for q in load(task, other)[0]["questions"]}
    assert expected == {p.name for p in folder.iterdir()}  # every image exists, none is stale
    assert len(questions["questions"]) == len(annotations["annotations"]) == SIZES[split]


def test_loads_through_the_task_file_with_the_expected_counts(task_split):
    task, split = task_split
    loaded = load_split(load_task(task), split, str(DATA / task))
    assert len(loaded) == SIZES[split] and loaded.name == f"{task}/{split}"
    assert all(len(e.answers) == 10 and e.fields["question"] for e in loaded.examples)
    assert len({e.id for e in loaded.examples}) == SIZES[split]
    images = {e.image_id for e in loaded.examples}
    if task == "vizwiz":
        assert len(images) == SIZES[split]  # one question per photo
    else:
        assert len(images) < SIZES[split]  # some images have two questions


@pytest.mark.parametrize("task", TASKS)
def test_support_and_query_images_are_disjoint(task):
    train, validation = ({q["image_id"] for q in load(task, split)[0]["questions"]} for split in SPLITS)
    assert train and validation and not train & validation


def test_okvqa_json_is_well_formed():
    for split, subtype in [("train", "train2014"), ("validation", "val2014")]:
        questions, annotations = load("okvqa", split)
        assert set(questions) == {"license", "data_subtype", "task_type", "questions", "info", "data_type"}
        assert (questions["data_subtype"], annotations["data_subtype"]) == (subtype, subtype)
        assert set(annotations) == {"license", "data_subtype", "annotations", "info", "data_type", "question_types"}
        for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
            assert set(q) == {"image_id", "question", "question_id"} and isinstance(q["image_id"], int)
            assert q["question_id"] // 10 == q["image_id"] and q["question_id"] % 10 < 2
            assert set(a) == {"image_id", "answer_type", "question_type", "question_id", "answers"}
            assert (a["question_id"], a["image_id"], a["answer_type"]) == (q["question_id"], q["image_id"], "other")
            assert a["question_type"] in annotations["question_types"]
            answers = a["answers"]
            assert [x["answer_id"] for x in answers] == list(range(1, 11))
            assert all(set(x) == {"answer_id", "raw_answer", "answer_confidence", "answer"} for x in answers)
            assert all(answers[i]["raw_answer"] == answers[i + 1]["raw_answer"] for i in range(0, 10, 2))  # 5 annotators
            assert all(x["answer"] == make_vqa_family.okvqa_process(x["raw_answer"]) for x in answers)


@pytest.mark.parametrize("task", ["textvqa", "vizwiz"])
def test_openflamingo_vqa_format_is_well_formed(task):
    title = {"textvqa": "TextVQA", "vizwiz": "VizWiz"}[task]
    for split, subtype, first_id in [("train", "train", 0), ("validation", "validation", 34602 if task == "textvqa" else 0)]:
        questions, annotations = load(task, split)
        assert list(questions) == ["questions", "info", "task_type", "data_type", "license", "data_subtype"]
        assert list(annotations) == ["annotations", "info", "task_type", "license", "data_subtype"]
        assert (questions["data_type"], annotations["task_type"]) == (title, title)
        assert questions["data_subtype"] == annotations["data_subtype"] == f"{title}-{subtype}"
        ids = [q["question_id"] for q in questions["questions"]]
        assert ids == list(range(first_id, first_id + SIZES[split]))
        for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
            assert list(q) == ["question", "image_id", "question_id"]
            assert list(a) == ["question_id", "image_id", "question_type", "answers", "multiple_choice_answer"]
            assert (a["question_id"], a["image_id"]) == (q["question_id"], q["image_id"])
            assert a["multiple_choice_answer"] == a["answers"][0]["answer"]  # as in OpenFlamingo's files
            if task == "textvqa":
                assert re.fullmatch(r"[0-9a-f]{16}", q["image_id"]) and a["question_type"] == "none of the above"
                assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
                assert all(x["answer_confidence"] == "yes" for x in a["answers"])
            else:
                prefix = "train" if split == "train" else "val"
                assert q["image_id"] == f"VizWiz_{prefix}_{q['question_id']:08d}.jpg"  # the id is the file name
                assert a["question_type"] in {"other", "yes/no", "number", "unanswerable"}
                assert all(set(x) == {"answer", "answer_confidence"} for x in a["answers"])  # no answer_id
                assert all(x["answer_confidence"] in {"yes", "maybe", "no"} for x in a["answers"])


# --- true answers, read off the scenes independently of the generator's question templates ---

FRUIT = {"red": "apple", "yellow": "banana", "orange": "orange", "green": "lime", "purple": "grape", "blue": "blueberry"}
VEGETABLE = {"orange": "carrot", "green": "broccoli", "purple": "eggplant", "red": "tomato"}
TRAFFIC = {"red": "stop", "green": "go", "yellow": "slow down"}
SIDES = {"circle": "0", "square": "4", "triangle": "3"}


def okvqa_truth(question: str, scene: make_data.Scene) -> str:
    at = {s.position: s for s in scene.shapes}

    def color(target: str) -> str:
        if target == "the background":
            return scene.background
        if match := re.fullmatch(r"the shape on the (\w+)", target):
            return at[match[1]].color
        (shape,) = [s for s in scene.shapes if f"the {s.kind}" == target]  # named by kind: must be unique
        return shape.color

    patterns = [
        (r"What fruit is the same color as (.+)\?", lambda t: FRUIT[color(t)]),
        (r"Which vegetable is usually the color of (.+)\?", lambda t: VEGETABLE[color(t)]),
        (r"At a traffic light, what does the color of (.+) tell drivers to do\?", lambda t: TRAFFIC[color(t)]),
        (r"How many sides does the shape on the (\w+) have\?", lambda p: SIDES[at[p].kind]),
        (r"Which ancient Egyptian monuments are shaped like the shape on the (\w+)\?",
         lambda p: "pyramid" if at[p].kind == "triangle" else None),
    ]
    for pattern, answer in patterns:
        if match := re.fullmatch(pattern, question):
            return answer(*match.groups())
    raise AssertionError(f"no template matches {question!r}")


@pytest.mark.parametrize("split", SPLITS)
def test_okvqa_most_frequent_answer_is_true_and_needs_outside_knowledge(split):
    task = "okvqa"
    questions, annotations = load(task, split)
    kinds = set()
    for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
        scene = make_data.make_scene(q["image_id"])
        assert most_frequent([x["answer"] for x in a["answers"]]) == okvqa_truth(q["question"], scene), q
        kinds.add(a["question_type"])
    assert len(kinds) >= 3  # several knowledge categories


@pytest.mark.parametrize("split", SPLITS)
def test_okvqa_images_show_their_scene(split):
    task = "okvqa"
    for q in load(task, split)[0]["questions"]:
        array, scene = pixels(task, split, q), make_data.make_scene(q["image_id"])
        assert color_at(array, 1, 1) == scene.background
        for shape in scene.shapes:
            assert color_at(array, *make_data.POSITIONS[shape.position]) == shape.color


def textvqa_truth(question: str, text: make_vqa_family.TextScene) -> str:
    word = text.word.lower()
    return {
        "what does the sign say?": word,
        "what word is written on the sign?": word,
        "what number is shown at the bottom?": text.number,
        "what color are the letters on the sign?": text.ink,
        "what is the first letter on the sign?": word[0],
        "how many letters are in the word on the sign?": str(len(word)),
    }[question]


@pytest.mark.parametrize("split", SPLITS)
def test_textvqa_questions_ask_about_rendered_text(split):
    task = "textvqa"
    questions, annotations = load(task, split)
    for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
        text = make_vqa_family.make_text_scene(q["image_id"])
        assert most_frequent([x["answer"] for x in a["answers"]]) == textvqa_truth(q["question"], text), q
        array = pixels(task, split, q)
        x0, y0, x1, y1 = make_vqa_family.SIGN
        assert color_at(array, x0 + 2, y0 + 2) == text.sign and color_at(array, 1, 40) == text.scene.background
        sign = array[y0 : y1 + 1, x0 : x1 + 1]
        ink = np.linalg.norm(sign - make_data.COLORS[text.ink], axis=-1) < np.linalg.norm(
            sign - make_data.COLORS[text.sign], axis=-1
        )
        assert ink.sum() >= 6 * len(text.word), q  # the word's letters are drawn on the sign
        plate = array[44:59, 16:48]
        assert plate.std() > 40  # digits on a plate, not a flat area


@pytest.mark.parametrize("split", SPLITS)
def test_vizwiz_degraded_photos_are_unanswerable(split):
    task = "vizwiz"
    questions, annotations = load(task, split)
    photos = make_vqa_family.vizwiz_photos(split)
    assert [p.image_id for p in photos] == [q["image_id"] for q in questions["questions"]]
    degraded = [p for p in photos if p.degraded]
    assert len(degraded) == SIZES[split] // 4 and {p.degraded for p in degraded} <= {"blur", "dark"}
    for photo, q, a in zip(photos, questions["questions"], annotations["annotations"], strict=True):
        truth = most_frequent([x["answer"] for x in a["answers"]])
        array = pixels(task, split, q)
        if photo.degraded:
            assert truth == "unanswerable" and a["question_type"] == "unanswerable"
            if photo.degraded == "dark":
                assert array.mean() < 40, q
            else:  # blurred: no sharp edge anywhere
                assert np.abs(np.diff(array, axis=1)).max() < 40 and np.abs(np.diff(array, axis=0)).max() < 40, q
        else:
            assert truth != "unanswerable" and a["question_type"] != "unanswerable"
            assert color_at(array, 1, 1) == photo.scene.background
            at = {s.position: s for s in photo.scene.shapes}
            for position, shape in at.items():
                assert color_at(array, *make_data.POSITIONS[position]) == shape.color
            expected = {
                "What color is the background?": photo.scene.background,
                "How many things are in this picture?": str(len(photo.scene.shapes)),
                "What color is this?": photo.scene.shapes[0].color,
                "What is this? Thank you.": photo.scene.shapes[0].kind,
            }.get(q["question"])
            if expected is None:
                (color,) = re.fullmatch(r"Is this (\w+)\?", q["question"]).groups()
                expected = "yes" if photo.scene.shapes[0].color == color else "no"
            assert truth == expected, q


def test_vizwiz_answers_look_like_annotations():
    records = [a for split in SPLITS for a in load("vizwiz", split)[1]["annotations"]]
    assert {a["question_type"] for a in records} == {"other", "yes/no", "number", "unanswerable"}
    firsts = [a["multiple_choice_answer"] == most_frequent([x["answer"] for x in a["answers"]]) for a in records]
    assert any(firsts) and not all(firsts)  # the first answer is not always the most frequent
    texts = [x["answer"] for a in records for x in a["answers"]]
    assert any(t[0].isupper() for t in texts) and any(t.endswith(".") for t in texts)


def test_regenerating_reproduces_the_committed_files(tmp_path):
    make_vqa_family.main(["--out", str(tmp_path)])
    for task in TASKS:
        committed = sorted(p.relative_to(DATA / task) for p in (DATA / task).rglob("*") if p.is_file())
        assert committed == sorted(p.relative_to(tmp_path / task) for p in (tmp_path / task).rglob("*") if p.is_file())
        for relative in committed:
            new, old = tmp_path / task / relative, DATA / task / relative
            if relative.suffix == ".json":
                assert new.read_bytes() == old.read_bytes(), relative
            else:  # JPEG bytes may differ between libjpeg builds; the pixels may not
                assert np.abs(np.asarray(Image.open(new), dtype=int) - np.asarray(Image.open(old), dtype=int)).max() <= 2
        assert sum(p.stat().st_size for p in (DATA / task).rglob("*") if p.is_file()) < 300_000
