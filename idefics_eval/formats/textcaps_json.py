"""The official TextCaps files (`TextCaps_0.1_{train,val}.json`), their images, and optionally the OCR
tokens of TextVQA's Rosetta OCR files (`TextVQA_Rosetta_OCR_v0.2_{train,val}.json`).

TextCaps (textvqa.org/textcaps) lists one record per *caption*, five per image, each carrying the
image's reference captions:

    {"dataset_type": "val", "dataset_name": "textcaps", "dataset_version": "0.1",
     "data": [{"image_id": "0027cd0f7b4b4b1c", "image_classes": [...], "flickr_original_url": ...,
               "flickr_300k_url": ..., "image_width": 1024, "image_height": 768, "set_name": "val",
               "image_name": "0027cd0f7b4b4b1c", "image_path": "train/0027cd0f7b4b4b1c.jpg",
               "caption_id": 12, "caption_str": "A bottle of Coca Cola sits on a table.",
               "caption_tokens": [...], "reference_strs": ["...", ...], "reference_tokens": [...]}, ...]}

The images are TextVQA's (`train_val_images.zip`, which unpacks to `train_images/<image_id>.jpg` for
both train and val; `test_images.zip` unpacks to `test_images/`). The test file's records have no
captions: its examples have no answers (the evaluation server scores them; the task textcaps_test
runs it and `idefics-eval submission` writes the server's file).

Task-file keys of one split: `file` (the TextCaps JSON), `images` (the image folder), and the
optional `ocr` (a Rosetta OCR file: `{"data": [{"image_id", "ocr_tokens": [...], "ocr_info": [...]},
...]}`).

One `Example` per image, in first-seen order, with id and image_id the TextCaps `image_id`; the image
is `<images>/<file name of image_path>` (`<image_id>.jpg` when a record has no `image_path`).
`answers` are the image's reference captions, stripped: the first record's `reference_strs`, then
any `caption_str` (or reference) of the image's other records not already among them, so the five
captions come out once whichever way a file lists them. `fields["ocr"]`, the image's OCR tokens
joined by spaces, is a prompt field (`{ocr}`, as prompts/captioning_ocr.yaml uses) where they are
known: from the `ocr` file when the task names one and it is in the data folder, else from the
records' own `ocr_tokens` (some TextCaps copies carry them). The default captioning prompt does not
use it, so a data folder without the OCR file loads as well; a prompt that asks for `{ocr}` then
stops with a message naming the missing field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import (
    IMAGES_HINT, check_files_exist, data_file, data_root, identifier, image_folder, read_object, records, require,
    typed,
)

FORMAT = "textcaps_json"


def load_textcaps_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    path = data_file(root, files["file"], FORMAT)
    entries = records(read_object(path, "data"), "data", path)
    folder = image_folder(root, files["images"], FORMAT)

    file_names: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    own_ocr: dict[str, str] = {}
    first_record: dict[str, int] = {}
    for index, record in enumerate(entries):
        where = f"{path}: data[{index}]"
        require(record, where, ("image_id",))
        image_id = identifier(record["image_id"], f"{where}.image_id", nonempty=True)
        where = f"{path}: image {image_id} (data[{index}])"
        file_name = _file_name(record, image_id, where)
        if image_id in file_names and file_names[image_id] != file_name:
            raise UserError(
                f"{where}: image_path names {file_name!r}, but data[{first_record[image_id]}] of the same image "
                f"names {file_names[image_id]!r}"
            )
        first_record.setdefault(image_id, index)
        file_names[image_id] = file_name
        found = references.setdefault(image_id, [])
        if not found and "reference_strs" in record:
            found.extend(_captions(record["reference_strs"], f"{where}.reference_strs"))
        candidates = [_caption(record["caption_str"], f"{where}.caption_str")] if "caption_str" in record else []
        if "reference_strs" in record:
            candidates += _captions(record["reference_strs"], f"{where}.reference_strs")
        found.extend(caption for caption in dict.fromkeys(candidates) if caption not in found)
        if "ocr_tokens" in record and image_id not in own_ocr:
            own_ocr[image_id] = _tokens(record["ocr_tokens"], f"{where}.ocr_tokens")
    if not references:
        raise UserError(f"{path}: 'data' is empty; is this the right file?")

    ocr = own_ocr
    if files.get("ocr") and (root / files["ocr"]).is_file():
        ocr = _read_ocr(root / files["ocr"], root, set(references))

    examples = [
        Example(
            id=image_id,
            image_id=image_id,
            image=FileImage(folder / file_names[image_id]),
            fields={"ocr": ocr[image_id]} if image_id in ocr else {},
            answers=tuple(captions),
        )
        for image_id, captions in references.items()
    ]
    check_files_exist(
        (folder / file_names[e.image_id] for e in examples), f"images listed in {path.name}", IMAGES_HINT
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


def _file_name(record: dict, image_id: str, where: str) -> str:
    if "image_path" not in record:
        file_name = f"{image_id}.jpg"
    else:
        file_name = Path(typed(record["image_path"], str, f"{where}.image_path")).name
    if not file_name or file_name.startswith(".") or "\\" in file_name:
        raise UserError(f"{where}: image file name {file_name!r} is not a plain file name")
    return file_name


def _caption(value: Any, where: str) -> str:
    caption = typed(value, str, where).strip()
    if not caption:
        raise UserError(f"{where}: empty caption")
    return caption


def _captions(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: expected a non-empty list of caption strings, found {type(value).__name__} {value!r}")
    return [_caption(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _tokens(value: Any, where: str) -> str:
    if not isinstance(value, list) or not all(isinstance(token, str) for token in value):
        raise UserError(f"{where}: expected a list of OCR token strings, found {type(value).__name__} {value!r}")
    return " ".join(token.strip() for token in value if token.strip())


def _read_ocr(path: Path, root: Path, wanted: set[str]) -> dict[str, str]:
    """image id -> its OCR tokens joined by spaces, for the images in `wanted` (the file lists a whole split)."""
    entries = records(read_object(path, "data"), "data", path)
    found: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: data[{index}]"
        require(entry, where, ("image_id", "ocr_tokens"))
        image_id = identifier(entry["image_id"], f"{where}.image_id", nonempty=True)
        if image_id in wanted:
            found[image_id] = _tokens(entry["ocr_tokens"], f"{path}: image {image_id} (data[{index}]).ocr_tokens")
    missing = sorted(wanted - set(found))
    if missing:
        raise UserError(
            f"{path}: no OCR entry for image {missing[0]} ({len(missing)} of {len(wanted)} images missing); "
            "is it the OCR file of the same split (TextVQA_Rosetta_OCR_v0.2_train.json / _val.json)?"
        )
    return found


register(FileFormat(FORMAT, keys=("file", "images"), markers=("file",), load=load_textcaps_json, optional=("ocr",)))
