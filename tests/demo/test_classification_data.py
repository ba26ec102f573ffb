"""The committed `--demo` data of ImageNet and Rendered SST2: official layouts, labels that agree with
the task's candidates, loading through the task files, and files that are exactly what
`python -m idefics_eval.demo.make_classification` writes."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from idefics_eval.demo import make_classification as gen
from idefics_eval.formats import load_split
from idefics_eval.tasks import load_task

DATA = gen.DEFAULT_OUT
IMAGENET = DATA / "imagenet"
SST2 = DATA / "renderedsst2"


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_imagenet_layout_and_class_index():
    index = json.loads((IMAGENET / "imagenet_class_index.json").read_text())
    assert index == {str(i): [wnid, name] for i, (wnid, name) in gen.IMAGENET_CLASSES.items()}
    wnids = {wnid for wnid, _ in index.values()}
    train = [f for f in files(IMAGENET) if f.startswith("train/")]
    val = [f for f in files(IMAGENET) if f.startswith("val/")]
    assert len(train) + len(val) + 1 == len(files(IMAGENET))
    assert Counter(f.split("/")[1] for f in train) == {w: gen.TRAIN_PER_CLASS for w in wnids}
    assert len(val) == gen.VAL_IMAGES and {f.split("/")[1] for f in val} == wnids
    assert all(re.fullmatch(rf"train/{f.split('/')[1]}/{f.split('/')[1]}_\d+\.JPEG", f) for f in train)
    assert all(re.fullmatch(r"val/n\d{8}/ILSVRC2012_val_\d{8}\.JPEG", f) for f in val)
    assert len({f.rsplit("/", 1)[1] for f in val}) == len(val)
    assert sum((IMAGENET / f).stat().st_size for f in files(IMAGENET)) < 300_000


def test_imagenet_classes_are_the_candidates_at_their_official_indices():
    classes = load_task("imagenet").candidates.classes
    assert len(classes) == 1000
    assert (classes[0], classes[7], classes[21], classes[948], classes[999]) == (
        "tench", "rooster", "kite (bird of prey)", "Granny Smith apple", "toilet paper",
    )
    for index, (_, name) in gen.IMAGENET_CLASSES.items():  # the demo's class-index names read as CLIP's
        assert name.replace("_", " ").lower() in classes[index].lower()


@pytest.mark.parametrize(("split", "count"), [("train", 40), ("validation", 14)])
def test_imagenet_task_loads_the_demo_splits(split, count):
    spec = load_task("imagenet")
    loaded = load_split(spec, split, str(IMAGENET))
    assert len(loaded) == count
    for example in loaded.examples:
        assert example.label in gen.IMAGENET_CLASSES
        assert example.metadata["wnid"] == gen.IMAGENET_CLASSES[example.label][0]
        assert example.answers == (gen.IMAGENET_CLASSES[example.label][1].replace("_", " "),)


def test_imagenet_images_are_64x64_drawings():
    for relative in files(IMAGENET):
        if relative.endswith(".json"):
            continue
        with Image.open(IMAGENET / relative) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
            pixels = np.asarray(image)
        background = pixels[1, 1].astype(int)
        assert (np.abs(pixels.astype(int) - background).sum(-1) > 60).mean() > 0.04, relative  # an object is drawn


def test_renderedsst2_layout_and_reviews():
    texts = gen.build_renderedsst2()
    assert files(SST2) == sorted(texts)
    counts = Counter(f.rsplit("/", 1)[0] for f in texts)
    assert counts == {f"{s}/{c}": n for s, n in gen.SST2_SPLITS.items() for c in gen.SST2_CLASSES}
    for relative, text in texts.items():
        label = relative.split("/")[1]
        assert text in gen.REVIEWS[label]
    train = {t for f, t in texts.items() if f.startswith("train/")}
    test = {t for f, t in texts.items() if f.startswith("test/")}
    assert len(train) == 40 and len(test) == 16 and not train & test
    numbers = [int(f.rsplit("/", 1)[1][:-4]) for f in texts]
    assert sorted(numbers) == list(range(len(numbers)))
    assert sum((SST2 / f).stat().st_size for f in files(SST2)) < 300_000


def test_renderedsst2_images_show_their_review():
    for relative, text in gen.build_renderedsst2().items():
        with Image.open(SST2 / relative) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
            pixels = np.asarray(image.convert("L"))
        assert (pixels < 128).mean() > 0.02, relative  # there is dark text on white
        assert np.array_equal(pixels, np.asarray(gen.render_review(text).convert("L"))), relative


@pytest.mark.parametrize(("split", "count"), [("train", 40), ("test", 16)])
def test_renderedsst2_task_loads_the_demo_splits(split, count):
    spec = load_task("renderedsst2")
    loaded = load_split(spec, split, str(SST2))
    assert len(loaded) == count
    assert Counter(e.label for e in loaded.examples) == {0: count // 2, 1: count // 2}
    for example in loaded.examples:  # label -> the candidate named like the example's folder
        assert spec.candidates.classes[example.label] == example.id.split("/")[0] == example.answers[0]


def test_regenerating_reproduces_the_committed_files(tmp_path):
    gen.main(["--out", str(tmp_path)])
    for task, root in (("imagenet", IMAGENET), ("renderedsst2", SST2)):
        assert files(tmp_path / task) == files(root)
        for relative in files(root):
            new, old = tmp_path / task / relative, root / relative
            if relative.endswith(".json"):
                assert new.read_bytes() == old.read_bytes()
            else:  # JPEG bytes may differ between libjpeg builds; PNG pixels may not differ at all
                tolerance = 2 if relative.endswith(".JPEG") else 0
                difference = np.abs(np.asarray(Image.open(new), dtype=int) - np.asarray(Image.open(old), dtype=int))
                assert difference.max() <= tolerance, relative
