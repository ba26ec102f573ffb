"""The committed `--demo` data: official VQA v2 layout, pictures that show their scenes, true answers,
and files that are exactly what `python -m idefics_eval.demo.make_data` writes."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_data
from idefics_eval.tasks import parse_task

DATA = make_data.DEFAULT_OUT
TASK = parse_task(Path(__file__).resolve().parents[2] / "tasks" / "vqav2.yaml")
SIZES = {"train": 96, "validation": 32}
ANSWER_TYPES = {"yes/no", "number", "other"}
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}


def load(split: str) -> tuple[dict, dict]:
    files = TASK.vqa_json[split]
    return json.loads((DATA / files.questions).read_text()), json.loads((DATA / files.annotations).read_text())


@pytest.fixture(scope="module", params=["train", "validation"])
def split(request):
    return request.param


def normalise(answer: str) -> str:
    """A small stand-in for VQA answer normalisation: case, punctuation, articles, number words."""
    words = re.sub(r"[.!?,]", "", answer.lower()).split()
    return " ".join(NUMBERS.get(w, w) for w in words if w not in {"a", "an", "the"})


def truth(question: str, scene: make_data.Scene) -> str:
    """The answer to a templated question, read off the scene independently of the generator."""
    at = {s.position: s for s in scene.shapes}
    yes_no = lambda value: "yes" if value else "no"  # noqa: E731

    def only(kind: str) -> make_data.Shape:
        (shape,) = [s for s in scene.shapes if s.kind == kind]  # the question must be unambiguous
        return shape

    patterns = [
        (r"What color is the background\?", lambda: scene.background),
        (r"What color is the shape on the (\w+)\?", lambda p: at[p].color),
        (r"What shape is on the (\w+)\?", lambda p: at[p].kind),
        (r"What color is the (\w+)\?", lambda k: only(k).color),
        (r"Is there a (\w+) (\w+)\?", lambda c, k: yes_no(any(s.color == c and s.kind == k for s in scene.shapes))),
        (r"Is there a shape on the (\w+)\?", lambda p: yes_no(p in at)),
        (r"Is the (\w+) (\w+)\?", lambda k, c: yes_no(only(k).color == c)),
        (r"How many shapes are there\?", lambda: str(len(scene.shapes))),
        (r"How many (\w+)s are there\?", lambda k: str(sum(s.kind == k for s in scene.shapes))),
    ]
    for pattern, answer in patterns:
        if match := re.fullmatch(pattern, question):
            return answer(*match.groups())
    raise AssertionError(f"no template matches {question!r}")


def test_files_follow_the_task_spec_layout(split):
    files = TASK.vqa_json[split]
    questions, _ = load(split)
    folder = DATA / files.images
    expected = {files.image_file.format(**q) for q in questions["questions"]}
    assert expected == {p.name for p in folder.iterdir()}  # every image exists, none is stale


def test_json_is_well_formed_official_vqa_v2(split):
    questions, annotations = load(split)
    subtype = make_data.SPLITS[split][0]
    assert list(questions) == ["info", "task_type", "data_type", "license", "data_subtype", "questions"]
    assert (questions["task_type"], questions["data_type"], questions["data_subtype"]) == ("Open-Ended", "mscoco", subtype)
    assert {"info", "license", "data_subtype", "annotations"} <= set(annotations)
    assert annotations["data_subtype"] == subtype
    assert len(questions["questions"]) == len(annotations["annotations"]) == SIZES[split]
    per_image = Counter(q["image_id"] for q in questions["questions"])
    assert set(per_image.values()) == {2}
    for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
        assert set(q) == {"image_id", "question", "question_id"}
        assert isinstance(q["image_id"], int) and isinstance(q["question"], str)
        assert q["question_id"] // 1000 == q["image_id"] and q["question_id"] % 1000 < 2
        keys = {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}
        assert set(a) == keys
        assert (a["question_id"], a["image_id"]) == (q["question_id"], q["image_id"])
        assert a["answer_type"] in ANSWER_TYPES and a["question_type"]
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(set(x) == {"answer", "answer_confidence", "answer_id"} for x in a["answers"])
        assert all(x["answer_confidence"] in {"yes", "maybe", "no"} for x in a["answers"])
        counts = Counter(x["answer"] for x in a["answers"]).most_common()
        assert counts[0][0] == a["multiple_choice_answer"] and (len(counts) == 1 or counts[1][1] < counts[0][1])
    assert len({q["question_id"] for q in questions["questions"]}) == SIZES[split]


def test_train_and_validation_images_are_disjoint():
    train = {q["image_id"] for q in load("train")[0]["questions"]}
    validation = {q["image_id"] for q in load("validation")[0]["questions"]}
    assert train and validation and not train & validation


def test_images_are_64x64_rgb_and_show_their_scene(split):
    names = list(make_data.COLORS)
    palette = np.array([make_data.COLORS[n] for n in names], dtype=float)

    def color_at(pixels, x, y):  # nearest named colour to the 3x3 patch around (x, y)
        patch = pixels[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
        return names[int(np.argmin(((palette - patch) ** 2).sum(1)))]

    files = TASK.vqa_json[split]
    for image_id in {q["image_id"] for q in load(split)[0]["questions"]}:
        with Image.open(DATA / files.images / files.image_file.format(image_id=image_id)) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
            pixels = np.asarray(image, dtype=float)
        scene = make_data.make_scene(image_id)
        assert color_at(pixels, 1, 1) == scene.background
        at = {s.position: s for s in scene.shapes}
        for position, (x, y) in make_data.POSITIONS.items():
            shape = at.get(position)
            assert color_at(pixels, x, y) == (shape.color if shape else scene.background), (image_id, position)
            if shape:  # the fraction of the shape's box in its colour tells the shape apart
                box = pixels[y - 8 : y + 9, x - 8 : x + 9]
                filled = np.linalg.norm(box - make_data.COLORS[shape.color], axis=-1) < np.linalg.norm(
                    box - make_data.COLORS[scene.background], axis=-1
                )
                kind = "triangle" if filled.mean() < 0.6 else "circle" if filled.mean() < 0.9 else "square"
                assert kind == shape.kind, (image_id, position)


def test_most_frequent_answer_is_the_true_answer(split):
    questions, annotations = load(split)
    for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
        scene = make_data.make_scene(q["image_id"])
        most_frequent = Counter(x["answer"] for x in a["answers"]).most_common(1)[0][0]
        assert most_frequent == truth(q["question"], scene), q


def test_answers_look_like_human_annotations(split):
    _, annotations = load(split)
    records = annotations["annotations"]
    assert {a["answer_type"] for a in records} == ANSWER_TYPES
    unanimous = [a for a in records if len({x["answer"] for x in a["answers"]}) == 1]
    assert 0 < len(unanimous) < len(records)
    others = [(x["answer"], a["multiple_choice_answer"]) for a in records for x in a["answers"] if x["answer"] != a["multiple_choice_answer"]]
    variants = {answer for answer, correct in others if normalise(answer) == correct}  # normalisation must undo
    assert any(normalise(answer) != correct for answer, correct in others)  # some annotators are wrong
    assert any(v[0].isupper() for v in variants) and any(v.endswith(".") for v in variants)
    if split == "train":  # the bigger split has every kind of variant
        assert any(v in NUMBERS for v in variants) and any(v.startswith(("a ", "the ")) for v in variants)


def test_regenerating_reproduces_the_committed_files(tmp_path):
    make_data.main(["--out", str(tmp_path)])
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file())
    assert committed == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in committed:
        if relative.suffix == ".json":
            assert (tmp_path / relative).read_bytes() == (DATA / relative).read_bytes(), relative
        else:  # JPEG bytes may differ between libjpeg builds; the pixels may not
            new = np.asarray(Image.open(tmp_path / relative), dtype=int)
            old = np.asarray(Image.open(DATA / relative), dtype=int)
            assert np.abs(new - old).max() <= 2, relative
