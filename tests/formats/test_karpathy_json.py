"""Karpathy's dataset_coco.json / dataset_flickr30k.json, built in tmp_path with their images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.karpathy_json import load_karpathy_json
from idefics_eval.tasks import load_task

COCO_TRAIN = {"file": "dataset_coco.json", "images": "images", "split": "train,restval"}
COCO_TEST = {"file": "dataset_coco.json", "images": "images", "split": "test"}


def _sentences(imgid: int, first_sentid: int, raws: list[str]) -> list[dict]:
    return [
        {"tokens": raw.lower().strip(" .\n").split(), "raw": raw, "imgid": imgid, "sentid": first_sentid + i}
        for i, raw in enumerate(raws)
    ]


def coco_record(imgid: int, cocoid: int, split: str, raws: list[str]) -> dict:
    folder = "train2014" if split == "train" else "val2014"
    return {
        "filepath": folder, "sentids": [imgid * 10 + i for i in range(len(raws))],
        "filename": f"COCO_{folder}_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
        "sentences": _sentences(imgid, imgid * 10, raws), "cocoid": cocoid,
    }


def write_coco(root: Path, images: bool = True) -> dict:
    """Five images over the four Karpathy splits, in a mixed order as in the real file."""
    data = {
        "images": [
            coco_record(0, 391895, "test", ["A man with a red helmet on a small moped on a dirt road. ", "Man riding a motor bike."]),
            coco_record(1, 522418, "restval", ["A woman wearing a net on her head cutting a cake. "]),
            coco_record(2, 184613, "train", ["A child holding a flowered umbrella and petting a yak.", "a young man holds an umbrella\n"]),
            coco_record(3, 318219, "val", ["A young boy standing in front of a computer keyboard."]),
            coco_record(4, 554625, "test", ["a boy wearing headphones using one computer"]),
        ],
        "dataset": "coco",
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_coco.json").write_text(json.dumps(data))
    if images:
        for record in data["images"]:
            folder = root / "images" / record["filepath"]
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (record["imgid"] * 40, 0, 0)).save(folder / record["filename"])
    return data


def write_flickr(root: Path) -> None:
    records = [
        {"sentids": [0, 1], "imgid": 0, "sentences": _sentences(0, 0, ["Two young guys with shaggy hair look at their hands.", "Two friends enjoy time spent together."]),
         "split": "train", "filename": "1000092795.jpg"},
        {"sentids": [2], "imgid": 1, "sentences": _sentences(1, 2, ["A little girl climbing into a wooden playhouse."]),
         "split": "test", "filename": "1000268201.jpg"},
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": records, "dataset": "flickr30k"}))
    (root / "images").mkdir()
    for record in records:
        Image.new("RGB", (4, 4)).save(root / "images" / record["filename"])


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_coco_support_takes_train_and_restval_in_file_order(tmp_path):
    write_coco(tmp_path)
    loaded = load_karpathy_json(tmp_path, COCO_TRAIN, "coco/train")
    assert loaded.name == "coco/train" and loaded.source == str(tmp_path.resolve())
    assert [e.id for e in loaded.examples] == ["522418", "184613"]  # cocoid, file order
    restval, train = loaded.examples
    assert restval.image_id == "522418"
    assert restval.image == FileImage(tmp_path.resolve() / "images" / "val2014" / "COCO_val2014_000000522418.jpg")
    assert train.image == FileImage(tmp_path.resolve() / "images" / "train2014" / "COCO_train2014_000000184613.jpg")
    assert train.answers == ("A child holding a flowered umbrella and petting a yak.", "a young man holds an umbrella")
    assert restval.answers == ("A woman wearing a net on her head cutting a cake.",)  # raw, surrounding space stripped
    assert (train.metadata, restval.metadata) == ({"karpathy_split": "train"}, {"karpathy_split": "restval"})
    assert train.fields == {} and train.label is None and train.candidates == ()
    assert train.image.load().size == (4, 4)


def test_coco_test_split_and_split_names_with_spaces(tmp_path):
    write_coco(tmp_path)
    test = load_karpathy_json(tmp_path, COCO_TEST, "coco/test")
    assert [e.id for e in test.examples] == ["391895", "554625"]
    assert test.examples[0].answers == ("A man with a red helmet on a small moped on a dirt road.", "Man riding a motor bike.")
    both = load_karpathy_json(tmp_path, {**COCO_TEST, "split": " val , test "}, "coco/x")
    assert [e.id for e in both.examples] == ["391895", "318219", "554625"]


def test_flickr_ids_are_file_stems_and_images_lie_at_the_top(tmp_path):
    write_flickr(tmp_path)
    files = {"file": "dataset_flickr30k.json", "images": "images", "split": "train"}
    (example,) = load_karpathy_json(tmp_path, files, "flickr30k/train").examples
    assert (example.id, example.image_id) == ("1000092795", "1000092795")
    assert example.image == FileImage(tmp_path.resolve() / "images" / "1000092795.jpg")
    assert example.answers == ("Two young guys with shaggy hair look at their hands.", "Two friends enjoy time spent together.")


def test_task_files_read_the_layout_through_load_split(tmp_path):
    write_coco(tmp_path / "coco")
    spec = load_task("coco")
    assert len(load_split(spec, "train", str(tmp_path / "coco"))) == 2
    assert len(load_split(spec, "test", str(tmp_path / "coco"))) == 2
    write_flickr(tmp_path / "flickr")
    assert [e.id for e in load_split(load_task("flickr30k"), "test", str(tmp_path / "flickr")).examples] == ["1000268201"]


def test_missing_file_names_it_and_the_data_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError) as excinfo:
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")
    text = message(excinfo)
    assert "dataset_coco.json not found" in text and str(tmp_path) in text and "--data" in text


def test_invalid_json_names_file_and_line(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "dataset_coco.json").write_text('{"images": [\n {"split": "test",,}]}')
    with pytest.raises(UserError, match=r"dataset_coco\.json: invalid JSON at line 2"):
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: d.update(imgs=d.pop("images")), r"dataset_coco\.json: missing top-level key 'images'"),
        (lambda d: d.update(images={"a": 1}), r"dataset_coco\.json: 'images' must be a list"),
        (lambda d: d["images"].__setitem__(2, "x.jpg"), r"images\[2\]: expected an object"),
        (lambda d: d["images"][4].pop("sentences"), r"images\[4\]: missing key 'sentences'"),
        (lambda d: d["images"][4].pop("filename"), r"images\[4\]: missing key 'filename'"),
        (lambda d: d["images"][0].update(sentences=[]), r"image COCO_val2014_000000391895\.jpg \(images\[0\]\): 'sentences' must be a non-empty list"),
        (lambda d: d["images"][0]["sentences"][1].pop("raw"), r"COCO_val2014_000000391895\.jpg \(images\[0\]\): sentences\[1\] must be an object with a string 'raw'"),
        (lambda d: d["images"][0]["sentences"][0].update(raw="  "), r"images\[0\]\): sentences\[0\] has an empty 'raw' caption"),
        (lambda d: d["images"][4].update(cocoid=391895), r"duplicate image id 391895 \(images\[0\] and images\[4\]\)"),
        (lambda d: d["images"][4].update(cocoid=None), r"images\[4\]\)\.cocoid: expected an int or string id"),
        (lambda d: d["images"][4].update(filename="../x.jpg"), r"images\[4\]: filename '\.\./x\.jpg' is not a plain file name"),
        (lambda d: d["images"][4].update(split=3), r"images\[4\]\.split: expected a string"),
    ],
)
def test_wrong_schema_names_file_record_and_key(tmp_path, change, pattern):
    write_coco(tmp_path)
    rewrite(tmp_path / "dataset_coco.json", change)
    with pytest.raises(UserError) as excinfo:
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")
    assert "dataset_coco.json" in message(excinfo)
    with pytest.raises(UserError, match=pattern):
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")


def test_unknown_split_name_lists_the_karpathy_splits(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(UserError, match=r"unknown Karpathy split 'tset'.*train, restval, val, test"):
        load_karpathy_json(tmp_path, {**COCO_TEST, "split": "tset"}, "coco/test")
    with pytest.raises(UserError, match=r"no split named"):
        load_karpathy_json(tmp_path, {**COCO_TEST, "split": " , "}, "coco/test")


def test_split_without_images_lists_the_splits_the_file_has(tmp_path):
    write_flickr(tmp_path)
    files = {"file": "dataset_flickr30k.json", "images": "images", "split": "restval"}
    with pytest.raises(UserError, match=r"dataset_flickr30k\.json: no image has split 'restval' \(the file has: test, train\)"):
        load_karpathy_json(tmp_path, files, "flickr30k/train")


def test_missing_image_folder_and_missing_image(tmp_path):
    write_coco(tmp_path, images=False)
    with pytest.raises(UserError, match=r"image folder 'images' not found in the data folder .*sources\.karpathy_json"):
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")
    write_coco(tmp_path)
    (tmp_path / "images" / "val2014" / "COCO_val2014_000000554625.jpg").unlink()
    with pytest.raises(UserError) as excinfo:
        load_karpathy_json(tmp_path, COCO_TEST, "coco/test")
    text = message(excinfo)
    assert "image not found" in text and "COCO_val2014_000000554625.jpg" in text and "1 of 2" in text
    assert len(load_karpathy_json(tmp_path, COCO_TRAIN, "coco/train")) == 2  # other splits are unaffected


def test_task_file_key_mistakes_are_reported_by_load_split(tmp_path):
    import dataclasses

    write_coco(tmp_path)
    spec = load_task("coco")
    broken = dataclasses.replace(spec, sources={"karpathy_json": {"test": {"file": "dataset_coco.json", "images": "images"}}})
    with pytest.raises(UserError, match=r"sources\.karpathy_json\.test: missing required key 'split'"):
        load_split(broken, "test", str(tmp_path))
