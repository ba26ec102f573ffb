"""An image folder per class (Rendered SST2's release layout), built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.class_folder import load_class_folder
from idefics_eval.tasks import load_task

TEST = {"images": "test", "classes": "negative,positive"}


def write_folders(root: Path, files: dict[str, list[str]], split: str = "test") -> None:
    for label, names in files.items():
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("L", (4, 2), 255).save(root / split / label / name, format="PNG")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_labels_follow_the_class_order_and_ids_name_class_and_file(tmp_path):
    write_folders(tmp_path, {"positive": ["10.png", "9.png"], "negative": ["3.png"]})
    (tmp_path / "test" / "positive" / ".hidden.png").write_bytes(b"")
    (tmp_path / "test" / "positive" / "notes.txt").write_text("skipped")
    loaded = load_class_folder(tmp_path, TEST, "renderedsst2/test")
    assert [(e.id, e.label, e.answers) for e in loaded.examples] == [
        ("negative/3", 0, ("negative",)),
        ("positive/9", 1, ("positive",)),  # natural order: 9 before 10
        ("positive/10", 1, ("positive",)),
    ]
    example = loaded.examples[1]
    assert example.image_id == example.id and example.fields == {} and example.metadata == {}
    assert example.image == FileImage(tmp_path.resolve() / "test" / "positive" / "9.png")
    assert example.image.load().mode == "RGB"
    reversed_order = load_class_folder(tmp_path, {**TEST, "classes": "positive, negative"}, "x")
    assert [(e.id, e.label) for e in reversed_order.examples][0] == ("positive/9", 0)


def test_the_task_file_reads_both_splits(tmp_path):
    write_folders(tmp_path, {"positive": ["1.png"], "negative": ["2.png", "3.png"]}, split="train")
    write_folders(tmp_path, {"positive": ["4.png"], "negative": ["5.png"]}, split="test")
    spec = load_task("renderedsst2")
    train = load_split(spec, "train", str(tmp_path))
    assert [(e.id, e.label) for e in train.examples] == [("negative/2", 0), ("negative/3", 0), ("positive/1", 1)]
    assert [spec.candidates.classes[e.label] for e in train.examples] == ["negative", "negative", "positive"]
    assert len(load_split(spec, "test", str(tmp_path))) == 2


def test_missing_image_folder(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_class_folder(tmp_path, TEST, "renderedsst2/test")
    text = message(excinfo)
    assert "image folder 'test' not found" in text and str(tmp_path) in text and "sources.class_folder" in text


def test_folder_that_is_not_a_class_is_named(tmp_path):
    write_folders(tmp_path, {"positive": ["1.png"], "negative": ["2.png"], "neutral": ["3.png"]})
    with pytest.raises(UserError) as excinfo:
        load_class_folder(tmp_path, TEST, "renderedsst2/test")
    text = message(excinfo)
    assert "neutral" in text and "not one of the task's classes (negative, positive)" in text


def test_class_without_folder_is_named(tmp_path):
    write_folders(tmp_path, {"positive": ["1.png"]})
    with pytest.raises(UserError, match=r"no folder for class 'negative' \(found: positive\)"):
        load_class_folder(tmp_path, TEST, "renderedsst2/test")


def test_no_images(tmp_path):
    write_folders(tmp_path, {"positive": [], "negative": []})
    with pytest.raises(UserError, match=r"no images in the class folders negative, positive"):
        load_class_folder(tmp_path, TEST, "renderedsst2/test")


def test_two_files_with_one_stem(tmp_path):
    write_folders(tmp_path, {"positive": ["1.png", "1.jpg"], "negative": ["2.png"]})
    with pytest.raises(UserError, match=r"positive: two images named 1\.\*"):
        load_class_folder(tmp_path, TEST, "renderedsst2/test")


@pytest.mark.parametrize(
    ("classes", "pattern"),
    [
        ("positive", r"give two or more class names"),
        ("negative,,positive", r"give two or more class names"),
        ("negative,negative", r"a class is named twice"),
        ("negative,../positive", r"'\.\./positive' is not a folder name"),
    ],
)
def test_bad_class_list_in_the_task(tmp_path, classes, pattern):
    write_folders(tmp_path, {"positive": ["1.png"], "negative": ["2.png"]})
    with pytest.raises(UserError, match=pattern) as excinfo:
        load_class_folder(tmp_path, {**TEST, "classes": classes}, "renderedsst2/test")
    assert "sources.class_folder classes" in message(excinfo)
