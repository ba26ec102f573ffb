"""NoCaps' nocaps_val_4500_captions.json, built in tmp_path with its images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.nocaps_json import load_nocaps_json
from idefics_eval.tasks import load_task

FILES = {"file": "nocaps_val_4500_captions.json", "images": "val"}


def write_nocaps(root: Path, images: bool = True) -> dict:
    """Three images, one per domain; the captions are listed out of image and annotation-id order."""
    records = [
        {"id": 0, "open_images_id": "0013ea2087020901", "height": 1024, "width": 732, "coco_url": "",
         "file_name": "0013ea2087020901.jpg", "license": 0, "date_captured": "2018-11-06 11:04:33", "domain": "in-domain"},
        {"id": 1, "open_images_id": "00223d6d0a9c8a12", "height": 683, "width": 1024, "coco_url": "",
         "file_name": "00223d6d0a9c8a12.jpg", "license": 0, "date_captured": "2018-11-06 11:04:33", "domain": "near-domain"},
        {"id": 2, "open_images_id": "0026f7fd1c0f0c7a", "height": 768, "width": 1024, "coco_url": "",
         "file_name": "0026f7fd1c0f0c7a.jpg", "license": 0, "date_captured": "2018-11-06 11:04:33", "domain": "out-domain"},
    ]
    annotations = [
        {"image_id": 1, "id": 11, "caption": "A lynx sitting in the snow."},
        {"image_id": 0, "id": 1, "caption": "A baby standing in front of a house. "},
        {"image_id": 0, "id": 0, "caption": "A little girl in a white shirt and sleeper."},
        {"image_id": 2, "id": 20, "caption": "A red accordion on a table."},
        {"image_id": 1, "id": 10, "caption": "A wild cat in the snow."},
    ]
    data = {"licenses": [], "info": {}, "images": records, "annotations": annotations}
    root.mkdir(parents=True, exist_ok=True)
    (root / FILES["file"]).write_text(json.dumps(data))
    if images:
        (root / "val").mkdir()
        for record in records:
            Image.new("RGB", (5, 3), (0, 0, 200)).save(root / "val" / record["file_name"])
    return data


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_loads_ids_captions_in_annotation_order_and_domains(tmp_path):
    write_nocaps(tmp_path)
    loaded = load_nocaps_json(tmp_path, FILES, "nocaps/validation")
    assert [e.id for e in loaded.examples] == ["0", "1", "2"]
    first, second, third = loaded.examples
    assert first.image_id == "0"
    assert first.answers == ("A little girl in a white shirt and sleeper.", "A baby standing in front of a house.")
    assert second.answers == ("A wild cat in the snow.", "A lynx sitting in the snow.")
    assert [e.metadata for e in loaded.examples] == [{"domain": "in-domain"}, {"domain": "near-domain"}, {"domain": "out-domain"}]
    assert third.image == FileImage(tmp_path.resolve() / "val" / "0026f7fd1c0f0c7a.jpg")
    assert third.fields == {} and third.label is None
    assert third.image.load().size == (5, 3)


def test_the_task_reads_the_layout_through_load_split(tmp_path):
    write_nocaps(tmp_path)
    spec = load_task("nocaps")
    assert (spec.support_task, spec.support_split, spec.query_split) == ("coco", "train", "validation")
    assert len(load_split(spec, "validation", str(tmp_path))) == 3


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_nocaps_json(tmp_path, FILES, "nocaps/validation")
    text = message(excinfo)
    assert "nocaps_val_4500_captions.json not found" in text and str(tmp_path) in text


def test_test_file_without_captions_loads_without_answers(tmp_path):
    """The test file's captions are the server's: a run writes predictions (plan.py refuses the file
    to a task without a `submission`, tests/test_submission.py)."""
    write_nocaps(tmp_path)
    rewrite(tmp_path / FILES["file"], lambda d: d.pop("annotations"))
    loaded = load_nocaps_json(tmp_path, FILES, "nocaps/test")
    assert loaded.examples and all(e.answers == () and e.metadata["domain"] for e in loaded.examples)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: d.pop("images"), r"missing top-level key 'images'"),
        (lambda d: d.update(annotations={}), r"'annotations' must be a list"),
        (lambda d: d["images"][1].pop("domain"), r"images\[1\]: missing key 'domain'"),
        (lambda d: d["images"][1].update(domain="near"), r"image id 1 \(images\[1\]\): domain 'near' is not one of in-domain, near-domain, out-domain"),
        (lambda d: d["images"][2].update(id=0), r"duplicate image id 0 \(images\[0\] and images\[2\]\)"),
        (lambda d: d["images"][2].update(file_name="a/b.jpg"), r"image id 2 \(images\[2\]\): file_name 'a/b\.jpg' is not a plain file name"),
        (lambda d: d["annotations"][3].pop("caption"), r"annotations\[3\]: missing key 'caption'"),
        (lambda d: d["annotations"][3].update(caption=7), r"annotations\[3\]\.caption: expected a string"),
        (lambda d: d["annotations"].pop(3), r"image id 2 \(images\[2\]\): no caption in 'annotations' refers to this image"),
        (lambda d: d["annotations"].append({"image_id": 9, "id": 90, "caption": "x"}), r"annotations refer to image_id 9, which 'images' does not list"),
        (lambda d: d.update(images=[]), r"'images' is empty"),
    ],
)
def test_wrong_schema_names_file_record_and_key(tmp_path, change, pattern):
    write_nocaps(tmp_path)
    rewrite(tmp_path / FILES["file"], change)
    with pytest.raises(UserError) as excinfo:
        load_nocaps_json(tmp_path, FILES, "nocaps/validation")
    assert FILES["file"] in message(excinfo)
    with pytest.raises(UserError, match=pattern):
        load_nocaps_json(tmp_path, FILES, "nocaps/validation")


def test_missing_image_folder_and_missing_image(tmp_path):
    write_nocaps(tmp_path, images=False)
    with pytest.raises(UserError, match=r"image folder 'val' not found.*sources\.nocaps_json"):
        load_nocaps_json(tmp_path, FILES, "nocaps/validation")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "val" / "0013ea2087020901.jpg")
    with pytest.raises(UserError) as excinfo:
        load_nocaps_json(tmp_path, FILES, "nocaps/validation")
    text = message(excinfo)
    assert "image not found" in text and "00223d6d0a9c8a12.jpg" in text and "2 of 3" in text
