"""TextCaps' TextCaps_0.1_{train,val}.json with TextVQA's images and Rosetta OCR files, built in tmp_path;
and the task's Hugging Face source (lmms-lab/TextCaps columns) from a save_to_disk folder."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.textcaps_json import load_textcaps_json
from idefics_eval.tasks import load_task

FILES = {"file": "TextCaps_0.1_val.json", "images": "train_images", "ocr": "TextVQA_Rosetta_OCR_v0.2_val.json"}
SODA = ["A bottle of Coca Cola on a table. ", "a coke bottle", "The red label says Coca Cola.",
        "Coca Cola bottle next to a glass", "A bottle of coke."]
SIGN = ["A stop sign on a street corner.", "a red sign that says STOP", "The sign reads stop.",
        "STOP sign by the road", "A street sign with the word stop."]


def record(image_id: str, caption_id: int, caption: str, references: list[str], **extra) -> dict:
    return {"image_id": image_id, "image_classes": ["Bottle"], "flickr_original_url": "", "flickr_300k_url": "",
            "image_width": 1024, "image_height": 768, "set_name": "val", "image_name": image_id,
            "image_path": f"train/{image_id}.jpg", "caption_id": caption_id, "caption_str": caption,
            "caption_tokens": caption.lower().split(), "reference_strs": references,
            "reference_tokens": [r.lower().split() for r in references], **extra}


def write_textcaps(root: Path, images: bool = True, ocr: bool = True) -> dict:
    """Two images, five caption records each (interleaved, as a file may list them), and their OCR."""
    data = []
    for k in range(5):
        data.append(record("0027cd0f7b4b4b1c", 10 + k, SODA[k], SODA))
        data.append(record("00a1b2c3d4e5f607", 20 + k, SIGN[k], SIGN))
    textcaps = {"dataset_type": "val", "dataset_name": "textcaps", "dataset_version": "0.1", "data": data}
    root.mkdir(parents=True, exist_ok=True)
    (root / FILES["file"]).write_text(json.dumps(textcaps))
    if ocr:
        entries = [{"image_id": "00a1b2c3d4e5f607", "ocr_tokens": ["stop", " "], "ocr_info": []},
                   {"image_id": "ffffffffffffffff", "ocr_tokens": ["other"], "ocr_info": []},
                   {"image_id": "0027cd0f7b4b4b1c", "ocr_tokens": ["coca", "cola"], "ocr_info": []}]
        (root / FILES["ocr"]).write_text(json.dumps({"dataset_name": "textvqa", "data": entries}))
    if images:
        (root / "train_images").mkdir()
        for image_id in ("0027cd0f7b4b4b1c", "00a1b2c3d4e5f607"):
            Image.new("RGB", (5, 3), (200, 0, 0)).save(root / "train_images" / f"{image_id}.jpg")
    return textcaps


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_one_example_per_image_with_its_references_ocr_and_image(tmp_path):
    write_textcaps(tmp_path)
    loaded = load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    assert loaded.name == "textcaps/validation" and loaded.source == str(tmp_path.resolve())
    soda, sign = loaded.examples
    assert (soda.id, soda.image_id, sign.id) == ("0027cd0f7b4b4b1c", "0027cd0f7b4b4b1c", "00a1b2c3d4e5f607")
    assert soda.answers == tuple(caption.strip() for caption in SODA) and sign.answers == tuple(SIGN)
    assert soda.fields == {"ocr": "coca cola"} and sign.fields == {"ocr": "stop"}
    assert soda.image == FileImage(tmp_path.resolve() / "train_images" / "0027cd0f7b4b4b1c.jpg")
    assert soda.image.load().size == (5, 3)
    assert soda.label is None and soda.candidates == ()


def test_records_listing_only_the_other_references_still_give_every_caption(tmp_path):
    """Each record's caption plus its reference list, once each, whichever way a copy lists them."""
    write_textcaps(tmp_path)
    rewrite(tmp_path / FILES["file"], lambda d: d.update(
        data=[record("0027cd0f7b4b4b1c", k, SODA[k], [c for c in SODA if c != SODA[k]]) for k in range(5)]))
    (soda,) = load_textcaps_json(tmp_path, FILES, "textcaps/validation").examples
    assert sorted(soda.answers) == sorted(c.strip() for c in SODA)


def test_records_without_image_path_use_the_image_id(tmp_path):
    write_textcaps(tmp_path)
    rewrite(tmp_path / FILES["file"], lambda d: [r.pop("image_path") for r in d["data"]])
    loaded = load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    assert loaded.examples[1].image.path.name == "00a1b2c3d4e5f607.jpg"


def test_ocr_is_optional_and_falls_back_to_the_records_own_tokens(tmp_path):
    write_textcaps(tmp_path, ocr=False)
    loaded = load_textcaps_json(tmp_path, FILES, "textcaps/validation")  # the task names the file; it is absent
    assert all(e.fields == {} for e in loaded.examples)
    without = {k: v for k, v in FILES.items() if k != "ocr"}
    rewrite(tmp_path / FILES["file"], lambda d: d["data"][0].update(ocr_tokens=["coke"]))
    soda, sign = load_textcaps_json(tmp_path, without, "textcaps/validation").examples
    assert soda.fields == {"ocr": "coke"} and sign.fields == {}


def test_ocr_file_without_an_image_names_the_file_and_the_image(tmp_path):
    write_textcaps(tmp_path)
    rewrite(tmp_path / FILES["ocr"], lambda d: d["data"].pop(0))
    with pytest.raises(UserError) as excinfo:
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    text = message(excinfo)
    assert FILES["ocr"] in text and "no OCR entry for image 00a1b2c3d4e5f607" in text
    write_textcaps(tmp_path / "again")
    rewrite(tmp_path / "again" / FILES["ocr"], lambda d: d["data"][2].update(ocr_tokens="coca cola"))
    with pytest.raises(UserError, match=r"image 0027cd0f7b4b4b1c \(data\[2\]\)\.ocr_tokens: expected a list"):
        load_textcaps_json(tmp_path / "again", FILES, "textcaps/validation")


def test_the_task_reads_the_layout_through_load_split(tmp_path):
    write_textcaps(tmp_path)
    spec = load_task("textcaps")
    assert (spec.request, spec.metric, spec.prompt, spec.shot_answer) == ("generate", "cider", "captioning", "random_reference")
    assert (spec.support_split, spec.query_split) == ("train", "validation")
    assert [e.id for e in load_split(spec, "validation", str(tmp_path)).examples] == ["0027cd0f7b4b4b1c", "00a1b2c3d4e5f607"]


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    assert "TextCaps_0.1_val.json not found" in message(excinfo) and str(tmp_path) in message(excinfo)


def test_test_file_without_captions_loads_without_answers(tmp_path):
    """The test file's captions are the server's: a run writes predictions (plan.py refuses the file
    to a task without a `submission`, tests/test_submission.py)."""
    write_textcaps(tmp_path)
    rewrite(tmp_path / FILES["file"], lambda d: [(r.pop("caption_str"), r.pop("reference_strs")) for r in d["data"]])
    loaded = load_textcaps_json(tmp_path, FILES, "textcaps/test")
    assert loaded.examples and all(e.answers == () for e in loaded.examples)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: d.pop("data"), r"missing top-level key 'data'"),
        (lambda d: d.update(data={}), r"'data' must be a list"),
        (lambda d: d.update(data=[]), r"'data' is empty"),
        (lambda d: d["data"][3].pop("image_id"), r"data\[3\]: missing key 'image_id'"),
        (lambda d: d["data"][3].update(image_id=None), r"data\[3\]\.image_id: expected an int or string id"),
        (lambda d: d["data"][3].update(caption_str=5), r"image 00a1b2c3d4e5f607 \(data\[3\]\)\.caption_str: expected a string"),
        (lambda d: d["data"][2].update(caption_str="  "), r"image 0027cd0f7b4b4b1c \(data\[2\]\)\.caption_str: empty caption"),
        (lambda d: d["data"][0].update(reference_strs="a caption"), r"\(data\[0\]\)\.reference_strs: expected a non-empty list"),
        (lambda d: d["data"][1].update(reference_strs=["ok", 3]), r"\(data\[1\]\)\.reference_strs\[1\]: expected a string"),
        (lambda d: d["data"][2].update(image_path="train/other.jpg"),
         r"image 0027cd0f7b4b4b1c \(data\[2\]\): image_path names 'other\.jpg', but data\[0\] of the same image names"),
        (lambda d: d["data"][0].update(image_path=7), r"\(data\[0\]\)\.image_path: expected a string"),
    ],
)
def test_wrong_schema_names_file_record_and_key(tmp_path, change, pattern):
    write_textcaps(tmp_path)
    rewrite(tmp_path / FILES["file"], change)
    with pytest.raises(UserError) as excinfo:
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    assert FILES["file"] in message(excinfo)
    with pytest.raises(UserError, match=pattern):
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")


def test_missing_image_folder_and_missing_image(tmp_path):
    write_textcaps(tmp_path, images=False)
    with pytest.raises(UserError, match=r"image folder 'train_images' not found.*sources\.textcaps_json"):
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    (tmp_path / "train_images").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "train_images" / "0027cd0f7b4b4b1c.jpg")
    with pytest.raises(UserError) as excinfo:
        load_textcaps_json(tmp_path, FILES, "textcaps/validation")
    text = message(excinfo)
    assert "image not found" in text and "00a1b2c3d4e5f607.jpg" in text and "1 of 2" in text


def test_the_huggingface_source_reads_a_saved_copy_of_lmms_lab_textcaps(tmp_path, monkeypatch):
    """lmms-lab/TextCaps: one row per image, the references in caption_str; splits train / val."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    def rows(ids):
        return datasets.Dataset.from_dict(
            {"image_id": ids, "image": [Image.new("RGB", (4, 4), (0, 200, 0)) for _ in ids],
             "caption_str": [SIGN for _ in ids], "image_classes": [["Sign"] for _ in ids]},
            features=datasets.Features({"image_id": datasets.Value("string"), "image": datasets.Image(),
                                        "caption_str": datasets.List(datasets.Value("string")),
                                        "image_classes": datasets.List(datasets.Value("string"))}))

    folder = tmp_path / "textcaps-hf"
    datasets.DatasetDict({"train": rows(["t1", "t2"]), "val": rows(["v1"])}).save_to_disk(str(folder))
    spec = load_task("textcaps")
    (example,) = load_split(spec, "validation", str(folder)).examples
    assert (example.id, example.answers) == ("v1", tuple(SIGN))
    assert example.image.load().getpixel((1, 1)) == (0, 200, 0)
    assert [e.id for e in load_split(spec, "train", str(folder)).examples] == ["t1", "t2"]
