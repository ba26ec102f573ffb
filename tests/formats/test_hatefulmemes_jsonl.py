"""The Hateful Memes release layout, built in tmp_path: JSON Lines files and PNG memes under img/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import file_formats
from idefics_eval.formats.hatefulmemes_jsonl import load_hatefulmemes_jsonl

FILES = {"annotations": "dev_seen.jsonl"}
RECORDS = [
    {"id": 42953, "img": "img/42953.png", "label": 0, "text": "its their character not their color that matters"},
    {"id": 1235, "img": "img/01235.png", "label": 1, "text": "a mean caption"},
    {"id": 8291, "img": "img/08291.png", "label": 0, "text": "white people is this a shooting range"},
]


def write_memes(root: Path, records: list[dict] = RECORDS, images: bool = True) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "dev_seen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if images:
        for index, record in enumerate(records):
            Image.new("RGB", (5, 3), (index * 80, 10, 10)).save(root / "img" / f"{record['id']:05d}.png")


def load(root: Path):
    return load_hatefulmemes_jsonl(root, FILES, "hatefulmemes/validation")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_loads_text_labels_class_names_and_ids(tmp_path):
    write_memes(tmp_path)
    loaded = load(tmp_path)
    assert loaded.name == "hatefulmemes/validation" and loaded.source == str(tmp_path.resolve())
    assert [e.id for e in loaded.examples] == ["42953", "1235", "8291"]  # file order
    second = loaded.examples[1]
    assert second.image_id == "01235"  # the image's name keeps the leading zero the id lacks
    assert second.fields == {"text": "a mean caption"}
    assert (second.label, second.answers) == (1, ("yes",))
    assert (loaded.examples[0].label, loaded.examples[0].answers) == (0, ("no",))
    assert second.candidates == () and second.metadata == {}
    assert second.image == FileImage(tmp_path.resolve() / "img" / "01235.png")
    assert second.image.load().getpixel((0, 0)) == (80, 10, 10)


def test_registered_with_its_task_file_key():
    registered = file_formats()["hatefulmemes_jsonl"]
    assert (registered.keys, registered.markers) == (("annotations",), ("annotations",))


def test_blank_lines_are_skipped(tmp_path):
    write_memes(tmp_path)
    path = tmp_path / "dev_seen.jsonl"
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    assert len(load(tmp_path)) == 3


def test_missing_file_names_it_and_the_data_folder(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "dev_seen.jsonl not found" in text and str(tmp_path) in text and "--data" in text


def test_invalid_json_line_names_file_and_line(tmp_path):
    write_memes(tmp_path)
    with open(tmp_path / "dev_seen.jsonl", "a") as handle:
        handle.write('{"id": 5, "img": \n')
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "dev_seen.jsonl: line 4" in text and "invalid JSON" in text


@pytest.mark.parametrize("key", ["img", "text"])
def test_missing_key_names_file_line_id_and_key(tmp_path, key):
    records = [dict(r) for r in RECORDS]
    del records[2][key]
    write_memes(tmp_path, records)
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "line 3 (id 8291)" in text and f"missing key {key!r}" in text


def test_unlabelled_test_file_is_refused_with_the_reason(tmp_path):
    write_memes(tmp_path, [{k: v for k, v in r.items() if k != "label"} for r in RECORDS])
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "line 1 (id 42953)" in text and "'label'" in text and "test_seen" in text


@pytest.mark.parametrize("label, expected", [(2, r"must be 0 \(not hateful\) or 1"), ("1", "must be int"), (True, "must be int")])
def test_bad_label(tmp_path, label, expected):
    records = [dict(r) for r in RECORDS]
    records[1]["label"] = label
    write_memes(tmp_path, records)
    with pytest.raises(UserError, match=expected) as excinfo:
        load(tmp_path)
    assert "id 1235" in message(excinfo)


def test_record_that_is_not_an_object(tmp_path):
    write_memes(tmp_path)
    with open(tmp_path / "dev_seen.jsonl", "a") as handle:
        handle.write("[1, 2]\n")
    with pytest.raises(UserError, match=r"line 4: expected an object, found list"):
        load(tmp_path)


def test_duplicate_ids(tmp_path):
    records = [dict(r) for r in RECORDS]
    records[2]["id"] = 42953
    write_memes(tmp_path, records)
    with pytest.raises(UserError, match=r"duplicate id 42953 \(lines 1 and 3\)"):
        load(tmp_path)


def test_missing_image_names_it_and_counts(tmp_path):
    write_memes(tmp_path)
    (tmp_path / "img" / "08291.png").unlink()
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "08291.png" in text and "1 of 3 images missing" in text


def test_empty_file(tmp_path):
    write_memes(tmp_path, [])
    with pytest.raises(UserError, match="no memes in the file"):
        load(tmp_path)


def test_fingerprint_follows_labels(tmp_path):
    write_memes(tmp_path)
    before = load(tmp_path).fingerprint
    records = [dict(r) for r in RECORDS]
    records[0]["label"] = 1
    write_memes(tmp_path, records)
    assert load(tmp_path).fingerprint != before
