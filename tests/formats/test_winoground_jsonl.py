"""The Winoground release layout, built in tmp_path: examples.jsonl and images/<name>.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import file_formats
from idefics_eval.formats.winoground_jsonl import load_winoground_jsonl

FILES = {"examples": "examples.jsonl", "images": "images"}
RECORDS = [
    {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "an old person kisses a young person",
     "caption_1": "a young person kisses an old person", "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
     "collapsed_tag": "Object"},
    {"id": 1, "image_0": "ex_1_img_0", "image_1": "ex_1_img_1", "caption_0": "the taller person hugs the shorter person",
     "caption_1": "the shorter person hugs the taller person", "tag": "Relation", "secondary_tag": "Symbolic",
     "num_main_preds": 2, "collapsed_tag": "Relation"},
]


def write_winoground(root: Path, records: list[dict] = RECORDS) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for record in records:
        for k in (0, 1):
            Image.new("RGB", (2, 2), (k * 255, 0, 0)).save(root / "images" / f"{record[f'image_{k}']}.png")


def load(root: Path):
    return load_winoground_jsonl(root, FILES, "winoground/test")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_loads_both_images_captions_and_tags(tmp_path):
    write_winoground(tmp_path)
    loaded = load(tmp_path)
    assert [e.id for e in loaded.examples] == ["0", "1"]
    second = loaded.examples[1]
    assert second.image_id == "ex_1_img_0"
    assert second.image == FileImage(tmp_path.resolve() / "images" / "ex_1_img_0.png")
    assert second.extra_images == (FileImage(tmp_path.resolve() / "images" / "ex_1_img_1.png"),)
    assert second.fields == {
        "caption_0": "the taller person hugs the shorter person",
        "caption_1": "the shorter person hugs the taller person",
    }
    assert second.metadata == {"tag": "Relation", "secondary_tag": "Symbolic", "num_main_preds": 2, "collapsed_tag": "Relation"}
    assert second.answers == () and second.candidates == () and second.label is None
    assert second.extra_images[0].load().getpixel((0, 0)) == (255, 0, 0)
    assert [image_id for image_id, _ in loaded.unique_images()] == ["ex_0_img_0", "ex_1_img_0"]


def test_fingerprint_sees_the_second_image(tmp_path):
    write_winoground(tmp_path)
    before = load(tmp_path).fingerprint
    records = [dict(r) for r in RECORDS]
    records[1]["image_1"] = "ex_0_img_1"
    write_winoground(tmp_path, records)
    assert load(tmp_path).fingerprint != before


def test_tags_are_optional(tmp_path):
    write_winoground(tmp_path, [{k: v for k, v in r.items() if "tag" not in k} for r in RECORDS])
    assert load(tmp_path).examples[0].metadata == {"num_main_preds": 1}


def test_registered_with_its_task_file_keys():
    registered = file_formats()["winoground_jsonl"]
    assert (registered.keys, registered.markers) == (("examples", "images"), ("examples",))


def test_missing_file_names_it_and_the_data_folder(tmp_path):
    write_winoground(tmp_path)
    (tmp_path / "examples.jsonl").unlink()
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "examples.jsonl not found" in text and str(tmp_path) in text and "--data" in text


def test_missing_image_folder(tmp_path):
    write_winoground(tmp_path)
    with pytest.raises(UserError, match=r"image folder 'pictures' not found"):
        load_winoground_jsonl(tmp_path, dict(FILES, images="pictures"), "winoground/test")


def test_invalid_json_line(tmp_path):
    write_winoground(tmp_path)
    with open(tmp_path / "examples.jsonl", "a") as handle:
        handle.write("{'id': 2}\n")
    with pytest.raises(UserError, match=r"examples\.jsonl: line 3: invalid JSON"):
        load(tmp_path)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.pop("caption_1"), r"line 2 \(id 1\): missing key 'caption_1'"),
        (lambda r: r.pop("image_0"), r"line 2 \(id 1\): missing key 'image_0'"),
        (lambda r: r.pop("id"), r"line 2: missing key 'id'"),
        (lambda r: r.update(id=0), r"duplicate id 0 \(lines 1 and 2\)"),
        (lambda r: r.update(caption_0=["x"]), r"line 2 \(id 1\): 'caption_0' must be str"),
        (lambda r: r.update(num_main_preds="2"), r"line 2 \(id 1\): 'num_main_preds' must be int"),
        (lambda r: r.update(id=1.5), r"line 2: 'id' must be int or str"),
    ],
)
def test_schema_errors_name_the_file_line_and_key(tmp_path, change, expected):
    records = [dict(r) for r in RECORDS]
    change(records[1])
    write_winoground(tmp_path, [records[0]])
    (tmp_path / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(UserError, match=expected) as excinfo:
        load(tmp_path)
    assert "examples.jsonl" in message(excinfo)


def test_missing_image_names_it_and_counts(tmp_path):
    write_winoground(tmp_path)
    (tmp_path / "images" / "ex_1_img_1.png").unlink()
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "ex_1_img_1.png" in text and "1 of 4 images missing" in text


def test_empty_file(tmp_path):
    write_winoground(tmp_path, [])
    with pytest.raises(UserError, match="no examples in the file"):
        load(tmp_path)
