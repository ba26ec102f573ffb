"""The official VQA v2 JSON layout, built in tmp_path: two tiny splits' worth of questions, answers, images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats.vqa_json import load_vqa_json
from idefics_eval.tasks import VqaJsonSplit

SPLIT = VqaJsonSplit(
    questions="questions.json", annotations="annotations.json", images="val2014", image_file="COCO_val2014_{image_id:012d}.jpg"
)
COLORS = {42: (200, 10, 10), 7: (10, 200, 10)}


def _answers(words: list[str], ids: list[int] | None) -> list[dict]:
    records = [{"answer": word, "answer_confidence": "yes"} for word in words]
    for record, answer_id in zip(records, ids or []):
        record["answer_id"] = answer_id
    return records


def write_vqa(root: Path, split: VqaJsonSplit = SPLIT, images: bool = True) -> dict:
    """Three questions over two COCO-named images; answers stored out of answer_id order."""
    questions = {
        "info": {},
        "questions": [
            {"image_id": 42, "question": "What color is it?", "question_id": 42000},
            {"image_id": 42, "question": "Is it red?", "question_id": 42001},
            {"image_id": 7, "question": "How many?", "question_id": 7000},
        ],
    }
    annotations = {
        "annotations": [
            # file order differs from the questions' order, and answers are shuffled by answer_id
            {
                "question_id": 7000, "image_id": 7, "answers": _answers(["2", "two", "3"], [2, 3, 1]),
                "multiple_choice_answer": "2", "answer_type": "number", "question_type": "how many",
            },
            {
                "question_id": 42000, "image_id": 42, "answers": _answers(["red", "maroon"], [2, 1]),
                "multiple_choice_answer": "red", "answer_type": "other", "question_type": "what color is the",
            },
            {
                "question_id": 42001, "image_id": 42, "answers": _answers(["yes", "yes"], [1, 2]),
                "multiple_choice_answer": "yes", "answer_type": "yes/no", "question_type": "is it",
            },
        ]
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / split.questions).write_text(json.dumps(questions))
    (root / split.annotations).write_text(json.dumps(annotations))
    (root / split.images).mkdir(exist_ok=True)
    if images:
        for image_id, color in COLORS.items():
            # lossless grayscale+alpha content under the .jpg name, so the test sees the conversion to RGB
            path = root / split.images / f"COCO_val2014_{image_id:012d}.jpg"
            Image.new("RGB", (6, 4), color).convert("LA").save(path, format="PNG")
    return {"questions": questions, "annotations": annotations}


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_loads_fields_ids_answers_and_metadata(tmp_path):
    write_vqa(tmp_path)
    loaded = load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    assert loaded.name == "vqav2/validation"
    assert [e.id for e in loaded.examples] == ["42000", "42001", "7000"]  # questions-file order
    first = loaded.examples[0]
    assert first.image_id == "42"
    assert first.fields == {"question": "What color is it?"}
    assert first.answers == ("maroon", "red")  # sorted by answer_id, not file order
    assert loaded.examples[2].answers == ("3", "2", "two")
    assert first.metadata == {"answer_type": "other", "question_type": "what color is the", "multiple_choice_answer": "red"}
    assert first.image == FileImage(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert [image_id for image_id, _ in loaded.unique_images()] == ["42", "7"]


def test_relative_root_gives_absolute_image_paths(tmp_path, monkeypatch):
    write_vqa(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    loaded = load_vqa_json(Path("data"), SPLIT, "vqav2/validation")
    assert loaded.source == str(tmp_path.resolve() / "data")
    assert loaded.examples[0].image.key == str(tmp_path.resolve() / "data" / "val2014" / "COCO_val2014_000000000042.jpg")


def test_images_are_not_decoded_at_load_and_decode_to_rgb(tmp_path, monkeypatch):
    write_vqa(tmp_path)

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened while loading annotations")

    monkeypatch.setattr(Image, "open", no_open)
    loaded = load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    monkeypatch.undo()
    image = loaded.examples[2].image.load()
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (6, 4)
    expected = Image.new("RGB", (1, 1), COLORS[7]).convert("L").getpixel((0, 0))
    assert image.getpixel((0, 0)) == (expected, expected, expected)


def test_vizwiz_style_string_image_ids_without_answer_ids(tmp_path):
    split = VqaJsonSplit(questions="val_q.json", annotations="val_a.json", images="val", image_file="{image_id}.jpg")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (3, 3), (0, 0, 255)).save(tmp_path / "val" / "VizWiz_val_00000001.jpg")
    (tmp_path / "val_q.json").write_text(json.dumps({"questions": [
        {"image_id": "VizWiz_val_00000001", "question": "What is this?", "question_id": "vz1"},
    ]}))
    (tmp_path / "val_a.json").write_text(json.dumps({"annotations": [
        {"question_id": "vz1", "image_id": "VizWiz_val_00000001", "answer_type": "unanswerable",
         "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}, {"answer": "blue", "answer_confidence": "maybe"},
                     {"answer": "a box", "answer_confidence": "no"}]},
    ]}))
    loaded = load_vqa_json(tmp_path, split, "vizwiz/validation")
    (example,) = loaded.examples
    assert (example.id, example.image_id) == ("vz1", "VizWiz_val_00000001")
    assert example.answers == ("unanswerable", "blue", "a box")  # file order
    assert example.metadata == {"answer_type": "unanswerable"}
    assert example.image.load().getpixel((1, 1))[2] > 200


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("which", ["questions", "annotations"])
def test_missing_file_names_it_and_the_data_folder(tmp_path, which):
    write_vqa(tmp_path)
    (tmp_path / getattr(SPLIT, which)).unlink()
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert f"{which}.json not found" in text and str(tmp_path) in text and "--data" in text


def test_invalid_json_names_file_and_line(tmp_path):
    write_vqa(tmp_path)
    (tmp_path / "annotations.json").write_text('{"annotations": [\n  {"question_id": 1,,}]}')
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "annotations.json" in text and "invalid JSON" in text and "line 2" in text


def test_wrong_top_level_key(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "questions.json", lambda d: d.update(qs=d.pop("questions")))
    with pytest.raises(UserError, match=r"questions\.json: missing top-level key 'questions'"):
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")


def test_question_missing_key_names_file_index_and_key(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "questions.json", lambda d: d["questions"][1].pop("question"))
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "questions.json" in text and "questions[1]" in text and "'question'" in text


def test_annotation_missing_answers_names_file_index_and_key(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "annotations.json", lambda d: d["annotations"][2].pop("answers"))
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "annotations.json" in text and "annotations[2]" in text and "'answers'" in text


def test_answer_without_text_names_question_id(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "annotations.json", lambda d: d["annotations"][0]["answers"][1].pop("answer"))
    with pytest.raises(UserError, match=r"question_id 7000.*answers\[1\]"):
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")


def test_duplicate_question_ids(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "questions.json", lambda d: d["questions"][2].update(question_id=42000))
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "duplicate question_id 42000" in text and "questions.json" in text


def test_question_without_annotation_names_it(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "annotations.json", lambda d: d["annotations"].pop(2))
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "no annotation for question_id 42001" in text and "1 of 3" in text


def test_image_file_with_unknown_key_names_the_key(tmp_path):
    write_vqa(tmp_path)
    split = VqaJsonSplit(SPLIT.questions, SPLIT.annotations, SPLIT.images, "COCO_{img_id:012d}.jpg")
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, split, "vqav2/validation")
    text = message(excinfo)
    assert "'img_id'" in text and "image_file" in text and "question_id 42000" in text


def test_image_file_format_that_does_not_fit_string_ids(tmp_path):
    write_vqa(tmp_path)
    rewrite(tmp_path / "questions.json", lambda d: d["questions"][0].update(image_id="abc"))
    rewrite(tmp_path / "annotations.json", lambda d: d["annotations"][1].update(image_id="abc"))
    with pytest.raises(UserError, match=r"image_file .* cannot format .*'abc'"):
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")


def test_missing_images_name_the_first_and_count(tmp_path):
    write_vqa(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000007.jpg").unlink()
    with pytest.raises(UserError) as excinfo:
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")
    text = message(excinfo)
    assert "COCO_val2014_000000000007.jpg" in text and "1 of 2 images missing" in text


def test_missing_image_folder(tmp_path):
    write_vqa(tmp_path)
    for path in (tmp_path / "val2014").iterdir():
        path.unlink()
    (tmp_path / "val2014").rmdir()
    with pytest.raises(UserError, match=r"image folder 'val2014' not found"):
        load_vqa_json(tmp_path, SPLIT, "vqav2/validation")


def test_fingerprint_follows_content(tmp_path):
    write_vqa(tmp_path)
    before = load_vqa_json(tmp_path, SPLIT, "vqav2/validation").fingerprint
    assert load_vqa_json(tmp_path, SPLIT, "vqav2/validation").fingerprint == before
    rewrite(tmp_path / "annotations.json", lambda d: d["annotations"][0]["answers"][0].update(answer="4"))
    assert load_vqa_json(tmp_path, SPLIT, "vqav2/validation").fingerprint != before
