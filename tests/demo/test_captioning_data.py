"""The committed `--demo` data of COCO, Flickr30k and NoCaps: official layouts, captions that describe
their pictures, loading through the task files, and files that are exactly what
`python -m idefics_eval.demo.make_captioning` writes."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_captioning as gen
from idefics_eval.demo import make_data
from idefics_eval.formats import load_split
from idefics_eval.tasks import load_task

DATA = gen.DEFAULT_OUT
FILES = {"coco": "dataset_coco.json", "flickr30k": "dataset_flickr30k.json", "nocaps": "nocaps_val_4500_captions.json"}
TASKS = tuple(FILES)


def load(task: str) -> dict:
    return json.loads((DATA / task / FILES[task]).read_text())


def image_paths(task: str) -> dict[str, str]:
    """Image path relative to the task's data folder -> the scene key used by the generator."""
    data = load(task)
    if task == "nocaps":
        return {f"val/{r['file_name']}": r["file_name"] for r in data["images"]}
    return {f"images/{r.get('filepath', '')}/{r['filename']}".replace("//", "/"): r for r in data["images"]}


def scenes(task: str) -> dict[str, make_data.Scene]:
    build = {"coco": gen.build_coco, "flickr30k": gen.build_flickr30k, "nocaps": gen.build_nocaps}[task]
    folder = "val" if task == "nocaps" else "images"
    return {f"{folder}/{relative}": scene for relative, scene in build()[1].items()}


def captions_by_image(task: str) -> dict[str, list[str]]:
    data = load(task)
    if task == "nocaps":
        by_id = {r["id"]: f"val/{r['file_name']}" for r in data["images"]}
        found: dict[str, list[str]] = {}
        for a in data["annotations"]:
            found.setdefault(by_id[a["image_id"]], []).append(a["caption"])
        return found
    return {path: [s["raw"] for s in r["sentences"]] for path, r in image_paths(task).items()}


@pytest.mark.parametrize("task", TASKS)
def test_files_on_disk_are_exactly_the_ones_the_json_lists(task):
    on_disk = {str(p.relative_to(DATA / task)) for p in (DATA / task).rglob("*") if p.is_file()}
    assert on_disk == set(image_paths(task)) | {FILES[task]}
    assert sum((DATA / task / p).stat().st_size for p in on_disk) < 300_000


@pytest.mark.parametrize("task", ["coco", "flickr30k"])
def test_karpathy_files_are_well_formed(task):
    data = load(task)
    assert data["dataset"] == task
    records = data["images"]
    counts = Counter(r["split"] for r in records)
    assert counts == (gen.COCO_SPLITS if task == "coco" else gen.FLICKR_SPLITS)
    assert [r["imgid"] for r in records] == list(range(len(records)))
    sentids = [s["sentid"] for r in records for s in r["sentences"]]
    assert sentids == list(range(len(sentids)))
    for r in records:
        keys = {"sentids", "filename", "imgid", "split", "sentences"} | ({"filepath", "cocoid"} if task == "coco" else set())
        assert set(r) == keys
        assert len(r["sentences"]) == 5 and len({s["raw"] for s in r["sentences"]}) == 5
        assert r["sentids"] == [s["sentid"] for s in r["sentences"]]
        for s in r["sentences"]:
            assert set(s) == {"tokens", "raw", "imgid", "sentid"} and s["imgid"] == r["imgid"]
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower())
        if task == "coco":
            folder = "train2014" if r["split"] == "train" else "val2014"
            assert (r["filepath"], r["filename"]) == (folder, f"COCO_{folder}_{r['cocoid']:012d}.jpg")
        else:
            assert re.fullmatch(r"\d{10}\.jpg", r["filename"])
    ids = [r.get("cocoid", r["filename"]) for r in records]
    assert len(set(ids)) == len(ids)
    if task == "coco":  # not the VQA v2 demo's pictures
        assert not set(ids) & {i for ids in make_data.image_ids().values() for i in ids}


def test_nocaps_file_is_well_formed_with_all_three_domains():
    data = load("nocaps")
    assert set(data) == {"licenses", "info", "images", "annotations"}
    assert [r["id"] for r in data["images"]] == list(range(15))
    assert Counter(r["domain"] for r in data["images"]) == gen.NOCAPS_DOMAINS
    for r in data["images"]:
        assert r["file_name"] == f"{r['open_images_id']}.jpg" and re.fullmatch(r"[0-9a-f]{16}", r["open_images_id"])
    assert [a["id"] for a in data["annotations"]] == list(range(len(data["annotations"])))
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert set(per_image.values()) == {10}


def test_nocaps_domains_hold_known_and_novel_shapes():
    data, by_file = gen.build_nocaps()
    for record in data["images"]:
        kinds = {s.kind for s in by_file[record["file_name"]].shapes}
        novel = kinds & set(gen.NOVEL)
        expected = {"in-domain": not novel, "near-domain": novel and kinds - novel, "out-domain": kinds == novel}
        assert expected[record["domain"]], record


NOUN_KIND = sorted(((noun, kind) for kind, names in gen.NOUNS.items() for pair in names for noun in pair), key=lambda x: -len(x[0]))
COLOR_OF = {word: color for color, words in gen.COLOR_WORDS.items() for word in words}


def mentioned(caption: str) -> tuple[set[str], set[str]]:
    """(colours, shape kinds) a caption names, longest phrases first ("round shape" before "shape")."""
    text = caption.lower()
    kinds = set()
    for noun, kind in NOUN_KIND:
        if re.search(rf"\b{noun}\b", text):
            kinds.add(kind)
            text = re.sub(rf"\b{noun}\b", " ", text)
    colors = {COLOR_OF[w] for w in re.findall(r"[a-z]+", text) if w in COLOR_OF}
    return colors, kinds


@pytest.mark.parametrize("task", TASKS)
def test_captions_describe_their_scene(task):
    by_path = scenes(task)
    for path, captions in captions_by_image(task).items():
        scene = by_path[path]
        colors = {scene.background} | {s.color for s in scene.shapes}
        kinds = {s.kind for s in scene.shapes}
        assert len(set(captions)) == len(captions) == (10 if task == "nocaps" else 5)
        for caption in captions:
            said_colors, said_kinds = mentioned(caption)
            assert said_colors and said_colors <= colors, (caption, scene)
            assert said_kinds <= kinds, (caption, scene)
            for number, following in re.findall(r"\b(one|two|three|four) (\w+)", caption.lower()):
                if following != "other":
                    assert gen.NUMBERS.index(number) == len(scene.shapes), (caption, scene)
        assert any(said for said in (mentioned(c)[1] for c in captions)), path


@pytest.mark.parametrize("task", TASKS)
def test_images_are_64x64_jpegs_that_show_their_scene(task):
    names = list(make_data.COLORS)
    palette = np.array([make_data.COLORS[n] for n in names], dtype=float)

    def color_at(pixels, x, y):
        patch = pixels[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
        return names[int(np.argmin(((palette - patch) ** 2).sum(1)))]

    for path, scene in scenes(task).items():
        with Image.open(DATA / task / path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
            pixels = np.asarray(image, dtype=float)
        assert color_at(pixels, 1, 1) == scene.background
        at = {s.position: s for s in scene.shapes}
        for position, (x, y) in make_data.POSITIONS.items():
            shape = at.get(position)
            expected = shape.color if shape and shape.kind != "ring" else scene.background  # a ring is hollow
            assert color_at(pixels, x, y) == expected, (path, position)
            if shape and shape.kind == "ring":
                assert color_at(pixels, x - make_data.HALF + 1, y) == shape.color


@pytest.mark.parametrize(
    ("task", "split", "count"),
    [("coco", "train", 40), ("coco", "test", 14), ("flickr30k", "train", 40), ("flickr30k", "test", 14), ("nocaps", "validation", 15)],
)
def test_the_task_files_load_the_demo_splits(task, split, count):
    spec = load_task(task)
    loaded = load_split(spec, split, str(DATA / task))
    assert len(loaded) == count
    assert all(len(e.answers) == (10 if task == "nocaps" else 5) for e in loaded.examples)
    if task == "nocaps":
        assert Counter(e.metadata["domain"] for e in loaded.examples) == gen.NOCAPS_DOMAINS
        support = load_task(spec.support_task)
        assert len(load_split(support, spec.support_split, str(DATA / spec.support_task))) == 40
    else:
        karpathy = {"train": {"train", "restval"}, "test": {"test"}}[split]
        assert {e.metadata["karpathy_split"] for e in loaded.examples} <= karpathy


def test_regenerating_reproduces_the_committed_files(tmp_path):
    gen.main(["--out", str(tmp_path)])
    for task in TASKS:
        committed = sorted(p.relative_to(DATA / task) for p in (DATA / task).rglob("*") if p.is_file())
        assert committed == sorted(p.relative_to(tmp_path / task) for p in (tmp_path / task).rglob("*") if p.is_file())
        for relative in committed:
            if relative.suffix == ".json":
                assert (tmp_path / task / relative).read_bytes() == (DATA / task / relative).read_bytes(), relative
            else:  # JPEG bytes may differ between libjpeg builds; the pixels may not
                new = np.asarray(Image.open(tmp_path / task / relative), dtype=int)
                old = np.asarray(Image.open(DATA / task / relative), dtype=int)
                assert np.abs(new - old).max() <= 2, relative
