"""The committed `--demo` data of TextCaps and the FairFace tasks: official layouts, text drawn in the
TextCaps images and named by every caption, the FairFace codes drawn in each face, loading through
the task files, and files that are exactly what their generators write."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_fairface, make_textcaps
from idefics_eval.formats import load_split
from idefics_eval.tasks import load_task

DATA = make_textcaps.DEFAULT_OUT
TEXTCAPS = DATA / "textcaps"
FAIRFACE_TASKS = make_fairface.TASKS


def files_under(folder) -> list:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def same_files(committed, regenerated) -> None:
    assert files_under(committed) == files_under(regenerated)
    for relative in files_under(committed):
        if relative.suffix in (".json", ".csv"):
            assert (regenerated / relative).read_bytes() == (committed / relative).read_bytes(), relative
        else:  # JPEG bytes may differ between libjpeg builds; the pixels may not
            new = np.asarray(Image.open(regenerated / relative), dtype=int)
            old = np.asarray(Image.open(committed / relative), dtype=int)
            assert np.abs(new - old).max() <= 2, relative


def test_regenerating_reproduces_the_committed_files(tmp_path):
    make_textcaps.main(["--out", str(tmp_path)])
    make_fairface.main(["--out", str(tmp_path)])
    same_files(TEXTCAPS, tmp_path / "textcaps")
    for task in FAIRFACE_TASKS:
        same_files(DATA / task, tmp_path / task)


def test_textcaps_files_are_the_official_layout_and_small():
    expected = {"TextCaps_0.1_train.json", "TextCaps_0.1_val.json", "TextVQA_Rosetta_OCR_v0.2_train.json",
                "TextVQA_Rosetta_OCR_v0.2_val.json"}
    on_disk = {str(p) for p in files_under(TEXTCAPS)}
    assert expected <= on_disk
    assert sum((TEXTCAPS / p).stat().st_size for p in on_disk) < 300_000
    images = set()
    for set_name, count in (("train", 24), ("val", 12)):
        data = json.loads((TEXTCAPS / f"TextCaps_0.1_{set_name}.json").read_text())
        assert (data["dataset_name"], data["dataset_type"], data["dataset_version"]) == ("textcaps", set_name, "0.1")
        records = data["data"]
        assert len(records) == 5 * count and len({r["image_id"] for r in records}) == count
        for r in records:
            assert r["caption_str"] in r["reference_strs"] and len(r["reference_strs"]) == 5
            assert r["image_path"] == f"{set_name}/{r['image_id']}.jpg" and r["set_name"] == set_name
            images.add(f"train_images/{r['image_id']}.jpg")
        ocr = json.loads((TEXTCAPS / f"TextVQA_Rosetta_OCR_v0.2_{set_name}.json").read_text())["data"]
        assert [o["image_id"] for o in ocr] == list(dict.fromkeys(r["image_id"] for r in records))
    assert on_disk == expected | images


def test_textcaps_images_show_the_text_every_caption_and_the_ocr_name():
    for split in ("train", "validation"):
        textcaps, rosetta, pictures = make_textcaps.build(split)
        ocr = {o["image_id"]: o["ocr_tokens"] for o in rosetta["data"]}
        for name, picture in pictures.items():
            references = next(r["reference_strs"] for r in textcaps["data"] if r["image_id"] == picture.image_id)
            assert all(picture.text.lower() in caption.lower() for caption in references), references
            assert ocr[picture.image_id] == [picture.text.lower()]
            with Image.open(TEXTCAPS / "train_images" / name) as image:
                assert (image.format, image.size) == ("JPEG", (64, 64))
                left, top, right, bottom = make_textcaps.text_box(picture)
                ink = np.asarray(make_textcaps.COLORS[picture.ink], dtype=float)
                under = np.asarray(make_textcaps.COLORS["white" if picture.kind == "bottle" else picture.color], dtype=float)
                box = np.asarray(image.convert("RGB"), dtype=float)[top:bottom, left:right].reshape(-1, 3)
            # text box pixels nearer the ink's colour than the colour under the text: the text is drawn there
            inked = np.abs(box - ink).sum(axis=1) < np.abs(box - under).sum(axis=1)
            assert 4 <= inked.sum() < len(box) / 2, (name, picture)


def test_fairface_folders_are_identical_release_layouts():
    first = DATA / FAIRFACE_TASKS[0]
    for task in FAIRFACE_TASKS:
        folder = DATA / task
        assert files_under(folder) == files_under(first)
        for relative in files_under(folder):
            assert (folder / relative).read_bytes() == (first / relative).read_bytes()
        assert sum((folder / p).stat().st_size for p in files_under(folder)) < 120_000
    for split, count in (("train", 28), ("val", 14)):
        with open(first / f"fairface_label_{split}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["file", "age", "gender", "race", "service_test"]
        assert [r["file"] for r in rows] == [f"{split}/{i}.jpg" for i in range(1, count + 1)]
        assert Counter((r["race"], r["gender"]) for r in rows) == {
            (race, gender): count // 14 for race in make_fairface.RACES for gender in make_fairface.GENDERS}
        assert {r["age"] for r in rows} == set(make_fairface.AGES)
        assert {r["service_test"] for r in rows} <= {"True", "False"}


def test_fairface_faces_carry_their_codes():
    for face in make_fairface.faces("val"):
        with Image.open(DATA / "fairface_race" / face.file) as image:
            assert (image.format, image.size) == ("JPEG", (64, 64))
            pixels = np.asarray(image.convert("RGB"), dtype=float)
        head = pixels[14, 24:41].mean(axis=0)  # a row across the head, above the eyes
        nearest = min(make_fairface.HEAD_COLOURS, key=lambda race: ((np.asarray(make_fairface.HEAD_COLOURS[race]) - head) ** 2).sum())
        assert nearest == face.race
        dots = pixels[57, :, :].mean(axis=1) < 60  # the age row: dark squares on grey
        runs = int(dots[0]) + int(np.sum(dots[1:] & ~dots[:-1]))
        assert runs == make_fairface.AGES.index(face.age) + 1
        # the head's top-left corner: filled by a square head (Male), background beside a round one (Female)
        background = np.asarray(make_fairface.BACKGROUND, dtype=float)
        left = int(np.argmax(np.abs(pixels[24] - background).sum(axis=1) > 60))
        corner_is_background = np.abs(pixels[11, left + 1] - background).sum() < 60
        assert corner_is_background == (face.gender == "Female"), face


@pytest.mark.parametrize(("task", "split", "count"), [
    ("textcaps", "train", 24), ("textcaps", "validation", 12),
    ("fairface_gender", "train", 28), ("fairface_race", "validation", 14), ("fairface_age", "validation", 14),
])
def test_the_task_files_load_the_demo_splits(task, split, count):
    loaded = load_split(load_task(task), split, str(DATA / task))
    assert len(loaded) == count
    if task == "textcaps":
        assert all(len(e.answers) == 5 and e.fields["ocr"] for e in loaded.examples)
    else:
        assert all(set(e.metadata) == {"gender", "race", "age", "service_test"} for e in loaded.examples)
        assert len({e.label for e in loaded.examples}) == {"fairface_gender": 2, "fairface_race": 7, "fairface_age": 9}[task]
