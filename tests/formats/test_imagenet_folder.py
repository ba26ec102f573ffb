"""The ImageNet class-folder tree with imagenet_class_index.json, built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.imagenet_folder import load_imagenet_folder
from idefics_eval.tasks import load_task

VAL = {"images": "val", "class_index": "imagenet_class_index.json"}
INDEX = {"0": ["n01440764", "tench"], "2": ["n01484850", "great_white_shark"], "948": ["n07742313", "Granny_Smith"]}
VAL_FILES = {
    "n01440764": ["ILSVRC2012_val_00000293.JPEG", "ILSVRC2012_val_00002138.JPEG"],
    "n01484850": ["ILSVRC2012_val_00000001.JPEG"],
    "n07742313": ["ILSVRC2012_val_00000994.JPEG"],
}


def write_imagenet(root: Path, files: dict[str, list[str]] = VAL_FILES, index: dict = INDEX, split: str = "val") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "imagenet_class_index.json").write_text(json.dumps(index))
    for wnid, names in files.items():
        (root / split / wnid).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (3, 3), (0, 200, 0)).save(root / split / wnid / name, format="JPEG")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_labels_answers_ids_in_official_file_order(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "val" / "n01440764" / ".DS_Store").write_text("")  # hidden and non-image files are skipped
    (tmp_path / "val" / "n01440764" / "LOC_synset_mapping.txt").write_text("")
    loaded = load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
    assert [e.id for e in loaded.examples] == [
        "ILSVRC2012_val_00000001", "ILSVRC2012_val_00000293", "ILSVRC2012_val_00000994", "ILSVRC2012_val_00002138",
    ]  # sorted by file name across the class folders: the official validation order
    assert [e.label for e in loaded.examples] == [2, 0, 948, 0]
    assert [e.answers for e in loaded.examples] == [("great white shark",), ("tench",), ("Granny Smith",), ("tench",)]
    first = loaded.examples[0]
    assert first.image_id == first.id and first.fields == {} and first.metadata == {"wnid": "n01484850"}
    assert first.image == FileImage(tmp_path.resolve() / "val" / "n01484850" / "ILSVRC2012_val_00000001.JPEG")
    assert first.image.load().size == (3, 3)


def test_train_layout_and_the_task_file(tmp_path):
    write_imagenet(tmp_path)
    write_imagenet(tmp_path, {"n07742313": ["n07742313_10.JPEG", "n07742313_9.JPEG"]}, split="train")
    spec = load_task("imagenet")
    train = load_split(spec, "train", str(tmp_path))
    assert [(e.id, e.label) for e in train.examples] == [("n07742313_10", 948), ("n07742313_9", 948)]
    assert spec.candidates.classes[948] == "Granny Smith apple"  # the label indexes the task's candidates
    assert len(load_split(spec, "validation", str(tmp_path))) == 4


@pytest.mark.parametrize("which", ["imagenet_class_index.json", "val"])
def test_missing_class_index_or_image_folder(tmp_path, which):
    write_imagenet(tmp_path)
    target = tmp_path / which
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(UserError) as excinfo:
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
    text = message(excinfo)
    assert which in text and str(tmp_path) in text and "--data" in text


@pytest.mark.parametrize(
    ("index", "pattern"),
    [
        ([["n01440764", "tench"]], r"imagenet_class_index\.json: expected a JSON object"),
        ({}, r"the class index is empty"),
        ({"tench": ["n01440764", "tench"]}, r"entry 'tench': keys must be class indices"),
        ({"0": "n01440764"}, r"entry '0': expected \[wordnet_id, class_name\]"),
        ({"0": ["n01440764"]}, r"entry '0': expected \[wordnet_id, class_name\]"),
        ({"0": ["n01440764", "tench"], "1": ["n01440764", "goldfish"]}, r"entry '1': WordNet id n01440764 is listed twice"),
    ],
)
def test_wrong_class_index_schema_names_the_file_and_entry(tmp_path, index, pattern):
    write_imagenet(tmp_path, index=index)
    with pytest.raises(UserError, match=pattern) as excinfo:
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
    assert "imagenet_class_index.json" in message(excinfo)


def test_invalid_json(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "imagenet_class_index.json").write_text('{"0": ["n01440764",\n ]}')
    with pytest.raises(UserError, match=r"imagenet_class_index\.json: invalid JSON at line 2"):
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")


def test_class_folder_not_in_the_index_is_named(tmp_path):
    write_imagenet(tmp_path, {**VAL_FILES, "n09999999": ["ILSVRC2012_val_00000005.JPEG"]})
    with pytest.raises(UserError) as excinfo:
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
    text = message(excinfo)
    assert "n09999999" in text and "not in imagenet_class_index.json" in text


def test_flat_validation_folder_is_refused_with_the_expected_layout(tmp_path):
    write_imagenet(tmp_path)
    Image.new("RGB", (3, 3)).save(tmp_path / "val" / "ILSVRC2012_val_00000007.JPEG", format="JPEG")
    with pytest.raises(UserError, match=r"ILSVRC2012_val_00000007\.JPEG is not a class folder.*one folder per class"):
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")


def test_empty_split_and_an_image_in_two_classes(tmp_path):
    write_imagenet(tmp_path, {"n01440764": []})
    with pytest.raises(UserError, match=r"no images in its class folders"):
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
    write_imagenet(tmp_path, {"n01484850": ["ILSVRC2012_val_00000293.JPEG"], "n01440764": ["ILSVRC2012_val_00000293.JPEG"]})
    with pytest.raises(UserError, match=r"image ILSVRC2012_val_00000293 is in two class folders \(n01440764 and n01484850\)"):
        load_imagenet_folder(tmp_path, VAL, "imagenet/validation")
