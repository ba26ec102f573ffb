"""The VisDial v1.0 layout, built in tmp_path: dialogs JSON, val dense annotations and image files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import file_formats
from idefics_eval.formats.visdial_json import load_visdial_json

VAL = {
    "dialogs": "visdial_1.0_val.json",
    "dense_annotations": "visdial_1.0_val_dense_annotations.json",
    "image_file": "VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg",
}
TRAIN = {
    "dialogs": "visdial_1.0_train.json",
    "image_file": "train2014/COCO_train2014_{image_id:012d}.jpg | val2014/COCO_val2014_{image_id:012d}.jpg",
}
QUESTIONS = ["is the photo in color", "how many people are there", "is it sunny?"]
ANSWERS = ["yes", "no", "2", "two", "i can't tell"]


def turn(question: int, answer: int, options: list[int]) -> dict:
    return {"question": question, "answer": answer, "answer_options": options, "gt_index": options.index(answer)}


def dialogs_json(split: str, image_ids: tuple[int, int]) -> dict:
    return {
        "version": "1.0",
        "split": split,
        "data": {
            "questions": QUESTIONS,
            "answers": ANSWERS,
            "dialogs": [
                {"image_id": image_ids[0], "caption": "two people on a beach",
                 "dialog": [turn(0, 0, [1, 0, 4, 2]), turn(1, 2, [2, 3, 0, 1]), turn(2, 4, [0, 1, 3, 4])]},
                {"image_id": image_ids[1], "caption": "a dog",
                 "dialog": [turn(2, 1, [4, 3, 2, 1]), turn(0, 0, [0, 1, 2, 3])]},
            ],
        },
    }


DENSE = [
    {"image_id": 185565, "round_id": 2, "gt_relevance": [1.0, 0.6, 0, 0.2]},
    {"image_id": 284024, "round_id": 1, "gt_relevance": [0.0, 0.0, 0.2, 1]},
]


def write_visdial(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / VAL["dialogs"]).write_text(json.dumps(dialogs_json("val2018", (185565, 284024))))
    (root / VAL["dense_annotations"]).write_text(json.dumps(DENSE))
    (root / TRAIN["dialogs"]).write_text(json.dumps(dialogs_json("train2018", (9, 391895))))
    for relative in ("VisualDialog_val2018/VisualDialog_val2018_000000185565.jpg",
                     "VisualDialog_val2018/VisualDialog_val2018_000000284024.jpg",
                     "train2014/COCO_train2014_000000391895.jpg", "val2014/COCO_val2014_000000000009.jpg"):
        (root / relative).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4), (0, 0, 200)).save(root / relative)


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_val_example_is_the_densely_annotated_round(tmp_path):
    write_visdial(tmp_path)
    loaded = load_visdial_json(tmp_path, VAL, "visdial/validation")
    assert [e.id for e in loaded.examples] == ["185565_2", "284024_1"]
    first = loaded.examples[0]
    assert first.image_id == "185565"
    assert first.image == FileImage(tmp_path.resolve() / "VisualDialog_val2018" / "VisualDialog_val2018_000000185565.jpg")
    assert first.fields == {
        "caption": "two people on a beach",
        "history": "Question: is the photo in color? Answer: yes. Question: how many people are there? Answer: ",
    }
    assert first.candidates == ("2", "two", "yes", "no") and first.label == 0 and first.answers == ("2",)
    assert first.metadata == {"round_id": 2, "relevance": [1.0, 0.6, 0.0, 0.2]}
    second = loaded.examples[1]  # round 1: no earlier rounds; a question mark is not doubled
    assert second.fields["history"] == "Question: is it sunny? Answer: "
    assert second.label == 3 and second.answers == ("no",)


def test_train_example_is_the_last_round_and_images_come_from_either_coco_folder(tmp_path):
    write_visdial(tmp_path)
    loaded = load_visdial_json(tmp_path, TRAIN, "visdial/train")
    assert [e.id for e in loaded.examples] == ["9_3", "391895_2"]
    first, second = loaded.examples
    assert first.fields["history"] == (
        "Question: is the photo in color? Answer: yes. Question: how many people are there? Answer: 2. "
        "Question: is it sunny? Answer: "
    )
    assert (first.candidates[first.label], first.answers) == ("i can't tell", ("i can't tell",))
    assert first.metadata == {"round_id": 3}  # no dense annotation, no relevance
    assert first.image.path == tmp_path.resolve() / "val2014" / "COCO_val2014_000000000009.jpg"
    assert second.image.path == tmp_path.resolve() / "train2014" / "COCO_train2014_000000391895.jpg"


def test_registered_with_its_task_file_keys():
    registered = file_formats()["visdial_json"]
    assert registered.keys == ("dialogs", "image_file") and registered.optional == ("dense_annotations",)


@pytest.mark.parametrize("which", ["dialogs", "dense_annotations"])
def test_missing_file_names_it_and_the_data_folder(tmp_path, which):
    write_visdial(tmp_path)
    (tmp_path / VAL[which]).unlink()
    with pytest.raises(UserError) as excinfo:
        load_visdial_json(tmp_path, VAL, "visdial/validation")
    text = message(excinfo)
    assert f"{VAL[which]} not found" in text and str(tmp_path) in text and "--data" in text


def test_invalid_json_names_file_and_line(tmp_path):
    write_visdial(tmp_path)
    (tmp_path / VAL["dialogs"]).write_text('{"data":\n {,}}')
    with pytest.raises(UserError) as excinfo:
        load_visdial_json(tmp_path, VAL, "visdial/validation")
    text = message(excinfo)
    assert "visdial_1.0_val.json" in text and "invalid JSON" in text and "line 2" in text


def test_not_a_dialogs_file(tmp_path):
    write_visdial(tmp_path)
    (tmp_path / VAL["dialogs"]).write_text(json.dumps({"questions": []}))
    with pytest.raises(UserError, match=r"visdial_1\.0_val\.json: missing top-level object 'data'"):
        load_visdial_json(tmp_path, VAL, "visdial/validation")


def test_test_split_is_refused(tmp_path):
    write_visdial(tmp_path)
    rewrite(tmp_path / VAL["dialogs"], lambda d: d.update(split="test2018"))
    with pytest.raises(UserError, match="test2018 split, which has no answers"):
        load_visdial_json(tmp_path, VAL, "visdial/validation")


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["data"].pop("answers"), r"'data' has no key 'answers'"),
        (lambda d: d["data"]["dialogs"][1].pop("caption"), r"dialogs\[1\]: missing key 'caption'"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][1].pop("gt_index"), r"image_id 185565 .*round 2: missing key 'gt_index'"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][0].pop("answer"), r"image_id 185565 .*round 1: missing key 'answer'"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][1].update(gt_index=7), r"round 2: gt_index 7 is not an index"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][1].update(gt_index=1), r"round 2: gt_index 1 points at option 'two'"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][1].update(question=9), r"round 2: question 9 is not an index"),
        (lambda d: d["data"]["dialogs"][0]["dialog"][1]["answer_options"].append(99), r"answer_options\[4\] 99 is not"),
        (lambda d: d["data"]["dialogs"][1].update(image_id=185565), r"duplicate image_id 185565"),
        (lambda d: d["data"]["dialogs"][1].update(dialog=[]), r"image_id 284024 .*'dialog' has no rounds"),
    ],
)
def test_dialogs_schema_errors_name_the_dialog_round_and_key(tmp_path, change, expected):
    write_visdial(tmp_path)
    rewrite(tmp_path / VAL["dialogs"], change)
    with pytest.raises(UserError, match=expected) as excinfo:
        load_visdial_json(tmp_path, VAL, "visdial/validation")
    assert "visdial_1.0_val.json" in message(excinfo)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.pop(1), r"no dense annotation for image_id 284024"),
        (lambda d: d.append({"image_id": 7, "round_id": 1, "gt_relevance": [0, 0, 0, 1]}), r"image_id 7 has no dialog"),
        (lambda d: d[0].update(round_id=5), r"image_id 185565: round_id 5 is not a round of its dialog \(1\.\.3\)"),
        (lambda d: d[0].update(gt_relevance=[1.0]), r"image_id 185565: gt_relevance has 1 values for 4 answer options"),
        (lambda d: d[0].update(gt_relevance=["high", 0, 0, 0]), r"image_id 185565 \(\[0\]\): 'gt_relevance' must be"),
        (lambda d: d[1].pop("round_id"), r"\[1\]: missing key 'round_id'"),
        (lambda d: d.append(dict(d[0])), r"duplicate dense annotation for image_id 185565"),
    ],
)
def test_dense_annotation_errors_name_the_file_and_image(tmp_path, change, expected):
    write_visdial(tmp_path)
    rewrite(tmp_path / VAL["dense_annotations"], change)
    with pytest.raises(UserError, match=expected) as excinfo:
        load_visdial_json(tmp_path, VAL, "visdial/validation")
    assert "visdial_1.0_val_dense_annotations.json" in message(excinfo)


def test_dense_annotations_must_be_a_list(tmp_path):
    write_visdial(tmp_path)
    (tmp_path / VAL["dense_annotations"]).write_text(json.dumps({"image_id": 1}))
    with pytest.raises(UserError, match="expected a list of dense annotations"):
        load_visdial_json(tmp_path, VAL, "visdial/validation")


def test_missing_image_names_the_first_pattern_and_counts(tmp_path):
    write_visdial(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000009.jpg").unlink()
    with pytest.raises(UserError) as excinfo:
        load_visdial_json(tmp_path, TRAIN, "visdial/train")
    text = message(excinfo)
    assert "COCO_train2014_000000000009.jpg" in text and "1 of 2 images missing" in text and "image_file" in text


def test_image_file_with_an_unknown_key(tmp_path):
    write_visdial(tmp_path)
    files = dict(VAL, image_file="VisualDialog_val2018_{img:012d}.jpg")
    with pytest.raises(UserError) as excinfo:
        load_visdial_json(tmp_path, files, "visdial/validation")
    text = message(excinfo)
    assert "'img'" in text and "image_file" in text and "image_id 185565" in text
