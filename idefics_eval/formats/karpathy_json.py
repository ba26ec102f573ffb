"""The Karpathy split files of COCO and Flickr30k (`dataset_coco.json`, `dataset_flickr30k.json`).

One file holds every image of the dataset, each tagged with its Karpathy split:

    {"images": [{"filepath": "val2014",                       # COCO only: the image's sub-folder
                 "filename": "COCO_val2014_000000391895.jpg",
                 "imgid": 0, "cocoid": 391895,                   # cocoid: COCO only
                 "split": "test",                                # train | val | test | restval
                 "sentids": [770337, ...],
                 "sentences": [{"raw": "A man with a red helmet on a small moped on a dirt road. ",
                                "tokens": [...], "imgid": 0, "sentid": 770337}, ...]}, ...],
     "dataset": "coco"}

Task-file keys of one split: `file` (the JSON file), `images` (the image folder: COCO images lie at
`images/<filepath>/<filename>`, Flickr30k ones at `images/<filename>`), and `split`: the Karpathy
split(s) to take, comma-separated (e.g. "train,restval" for COCO's 113k training images, "test").

One `Example` per image: `answers` are its raw reference captions (stripped of surrounding white
space), the id is the COCO id where there is one, else the image file's stem (Flickr30k's photo
id); `metadata["karpathy_split"]` keeps the image's own split name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import (
    IMAGES_HINT, check_files_exist, data_file, data_root, identifier, image_folder, read_object, records, require,
    typed,
)

FORMAT = "karpathy_json"
KARPATHY_SPLITS = ("train", "restval", "val", "test")


def load_karpathy_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    wanted = _splits(files["split"], Path(files["file"]))
    path = data_file(root, files["file"], FORMAT)
    images = records(read_object(path, "images"), "images", path)
    folder = image_folder(root, files["images"], FORMAT)

    examples: list[Example] = []
    relative: list[str] = []
    seen: dict[str, int] = {}
    found_splits: set[str] = set()
    for index, record in enumerate(images):
        where = f"{path}: images[{index}]"
        require(record, where, ("filename", "split", "sentences"))
        split = typed(record["split"], str, f"{where}.split")
        found_splits.add(split)
        if split not in wanted:
            continue
        filename = typed(record["filename"], str, f"{where}.filename")
        if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
            raise UserError(f"{where}: filename {filename!r} is not a plain file name")
        where = f"{path}: image {filename} (images[{index}])"
        if "cocoid" in record:
            example_id = identifier(record["cocoid"], f"{where}.cocoid", nonempty=True)
        else:
            example_id = Path(filename).stem
        if example_id in seen:
            raise UserError(
                f"{path}: duplicate image id {example_id} (images[{seen[example_id]}] and images[{index}]); "
                "each image must appear once"
            )
        seen[example_id] = index
        subfolder = typed(record.get("filepath", ""), str, f"{where}.filepath")
        if "/" in subfolder.strip("/") or ".." in subfolder:
            raise UserError(f"{where}: filepath {subfolder!r} is not a plain folder name")
        file_name = f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename
        relative.append(file_name)
        examples.append(
            Example(
                id=example_id,
                image_id=example_id,
                image=FileImage(folder / file_name),
                fields={},
                answers=_captions(record["sentences"], where),
                metadata={"karpathy_split": split},
            )
        )
    if not examples:
        raise UserError(
            f"{path}: no image has split {files['split']!r} (the file has: {', '.join(sorted(found_splits)) or 'no images'}); "
            "fix the task's sources.karpathy_json `split` key"
        )
    check_files_exist((folder / name for name in relative), f"images of split {files['split']!r}", IMAGES_HINT)
    return ExampleSet(name=name, source=str(root), examples=examples)


def _splits(value: str, path: Path) -> frozenset[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [part for part in names if part not in KARPATHY_SPLITS]
    if not names or unknown:
        raise UserError(
            f"sources.{FORMAT} split {value!r} for {path.name}: "
            f"{'unknown Karpathy split ' + repr(unknown[0]) if unknown else 'no split named'}; "
            f"use {', '.join(KARPATHY_SPLITS)} or several joined by commas (e.g. \"train,restval\")"
        )
    return frozenset(names)


def _captions(sentences: object, where: str) -> tuple[str, ...]:
    if not isinstance(sentences, list) or not sentences:
        raise UserError(f"{where}: 'sentences' must be a non-empty list of {{'raw': ...}} records")
    captions = []
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
            raise UserError(f"{where}: sentences[{i}] must be an object with a string 'raw' caption")
        caption = sentence["raw"].strip()
        if not caption:
            raise UserError(f"{where}: sentences[{i}] has an empty 'raw' caption")
        captions.append(caption)
    return tuple(captions)


register(FileFormat(FORMAT, keys=("file", "images", "split"), markers=("file",), load=load_karpathy_json))
