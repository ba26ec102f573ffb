"""Generate the bundled `--demo` data of the captioning tasks: COCO, Flickr30k and NoCaps, synthetic,
each in its official file layout (the one `tasks/<task>.yaml` reads):

    coco/dataset_coco.json             Karpathy's file; images/train2014/COCO_train2014_*.jpg and
                                       images/val2014/COCO_val2014_*.jpg (train, restval, val, test)
    flickr30k/dataset_flickr30k.json   Karpathy's file; images/<photo id>.jpg (train, val, test)
    nocaps/nocaps_val_4500_captions.json   the NoCaps validation file; val/<open images id>.jpg

Every image is a 64x64 scene drawn by `make_data` (a plain background with 1-4 coloured circles,
squares and triangles on the left/right/top/bottom), and every reference caption describes that
scene in words a person might use ("A red circle and a blue square on a green background.", "two
shapes against green", "There is an orange ball at the top."): 5 per image for COCO and Flickr30k,
10 for NoCaps, as in the real files. NoCaps tests captioning of objects the support set (COCO)
never shows, so its in-domain images hold only the COCO shapes, near-domain ones one novel shape
(a star, a ring or a cross) among them, and out-domain ones only novel shapes.
None of it comes from COCO, Flickr30k or NoCaps.

Everything derives from `SEED` and the image id, so the output is byte-for-byte reproducible:

    python -m idefics_eval.demo.make_captioning [--out DIR]

writes `coco/`, `flickr30k/` and `nocaps/` under `idefics_eval/demo/data/` by default. Commit the
script and its output together.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw

from . import make_data
from .make_data import COLORS, HALF, POSITIONS, Scene, Shape

SEED = 20240607
DEFAULT_OUT = Path(__file__).resolve().parent / "data"

# Karpathy split -> number of images in the demo file (support: train (+ restval), query: test).
COCO_SPLITS = {"train": 32, "restval": 8, "val": 4, "test": 14}
FLICKR_SPLITS = {"train": 40, "val": 4, "test": 14}
NOCAPS_DOMAINS = {"in-domain": 5, "near-domain": 5, "out-domain": 5}
COCO_CAPTIONS = FLICKR_CAPTIONS = 5
NOCAPS_CAPTIONS = 10

KNOWN = ("circle", "square", "triangle")  # the shapes make_data draws, seen in the COCO support set
NOVEL = ("star", "ring", "cross")  # NoCaps' novel objects
NOUNS = {  # shape -> (singular, plural) names a person might use
    "circle": [("circle", "circles"), ("dot", "dots"), ("ball", "balls"), ("round shape", "round shapes")],
    "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
    "triangle": [("triangle", "triangles"), ("wedge", "wedges")],
    "star": [("star", "stars"), ("star shape", "star shapes")],
    "ring": [("ring", "rings"), ("donut", "donuts"), ("hoop", "hoops")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
}
COLOR_WORDS = {"red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"],
               "purple": ["purple", "violet"], "orange": ["orange"], "white": ["white"], "black": ["black"]}
PLACES = {
    "left": ["on the left", "on the left side", "at the left"],
    "right": ["on the right", "on the right side", "at the right"],
    "top": ["at the top", "near the top", "at the very top"],
    "bottom": ["at the bottom", "near the bottom", "along the bottom"],
}
NUMBERS = ("zero", "one", "two", "three", "four")
INFO = {
    "description": "Synthetic demo data (generated shapes, not COCO, Flickr30k or NoCaps images or captions)",
    "contributor": "idefics-eval (idefics_eval/demo/make_captioning.py)",
    "date_created": "2024-06-07",
}


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class _Words:
    """Seeded word choices for one caption."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def noun(self, kind: str, plural: bool = False) -> str:
        return self.rng.choice(NOUNS[kind])[1 if plural else 0]

    def color(self, color: str) -> str:
        return self.rng.choice(COLOR_WORDS[color])

    def thing(self, shape: Shape) -> str:
        return f"{self.color(shape.color)} {self.noun(shape.kind)}"

    def place(self, position: str) -> str:
        return self.rng.choice(PLACES[position])


def _templates(scene: Scene) -> list:
    """Caption writers for a scene; each takes a `_Words` and returns one caption."""
    shapes, bg = list(scene.shapes), scene.background
    count = len(shapes)
    first = shapes[0]
    kinds = sorted({s.kind for s in shapes})

    def listing(w: _Words) -> str:
        return _capital(f"{_join([_article(w.thing(s)) for s in shapes])} on {_article(w.color(bg))} background.")

    def placed(w: _Words) -> str:
        parts = [f"{_article(w.thing(s))} {w.place(s.position)}" for s in shapes[:2]]
        return _capital(_join(parts) + ".")

    def counted(w: _Words) -> str:
        things = "shape" if count == 1 else "shapes"
        if len(kinds) == 1:
            things = w.noun(kinds[0], plural=count > 1)
        backdrop = w.rng.choice(["background", "backdrop"])
        return _capital(f"{NUMBERS[count]} {things} against {_article(w.color(bg))} {backdrop}.")

    def casual(w: _Words) -> str:
        if count == 1:
            return f"{w.thing(first)} on {w.color(bg)}"
        return f"{w.thing(shapes[0])} next to {_article(w.thing(shapes[1]))}"

    def there_is(w: _Words) -> str:
        return f"There is {_article(w.thing(first))} {w.place(first.position)} of the picture."

    def picture(w: _Words) -> str:
        return _capital(f"{_article(w.color(bg))} picture with {_join([_article(w.thing(s)) for s in shapes])}")

    def simple(w: _Words) -> str:
        colors = _join(sorted({w.color(s.color) for s in shapes}))
        noun = "shape" if count == 1 else "shapes"
        return _capital(f"a simple drawing of {NUMBERS[count]} {noun} in {colors} on {w.color(bg)}.")

    def plain(w: _Words) -> str:
        return _capital(f"{_article(w.thing(first))} sits {w.place(first.position)} of a plain {w.color(bg)} image.")

    def lowercase(w: _Words) -> str:
        return f"{_join([w.thing(s) for s in shapes])} on {_article(w.color(bg))} background"

    def with_bg(w: _Words) -> str:
        return _capital(f"{w.color(bg)} background with {NUMBERS[count]} {'shape' if count == 1 else 'shapes'} on it.")

    def some(w: _Words) -> str:
        others = "" if count == 1 else f" and {NUMBERS[count - 1]} other {'shape' if count == 2 else 'shapes'}"
        return _capital(f"{_article(w.thing(first))}{others} on {w.color(bg)}.")

    def clip_art(w: _Words) -> str:
        return _capital(f"clip art of {_join([_article(w.thing(s)) for s in shapes])}.")

    return [listing, placed, counted, casual, there_is, picture, simple, plain, lowercase, with_bg, some, clip_art]


def captions(scene: Scene, n: int) -> list[str]:
    """`n` distinct reference captions of a scene, in a seeded order (the first is not privileged)."""
    rng = random.Random(f"{SEED}:captions:{scene.image_id}")
    writers = _templates(scene)
    rng.shuffle(writers)
    found: list[str] = []
    for writer in writers * 3:
        caption = writer(_Words(rng))
        if caption not in found:
            found.append(caption)
        if len(found) == n:
            return found
    raise AssertionError(f"scene {scene.image_id}: only {len(found)} distinct captions")


def nocaps_scene(image_id: int, domain: str) -> Scene:
    """A make_data scene whose shapes are made novel: none (in-domain), one (near-domain) or all (out-domain)."""
    base = make_data.make_scene(image_id)
    rng = random.Random(f"{SEED}:nocaps:{image_id}")
    shapes = list(base.shapes)
    if domain == "out-domain":
        shapes = [Shape(rng.choice(NOVEL), s.color, s.position) for s in shapes]
    elif domain == "near-domain":
        if len(shapes) == 1:  # near-domain images show known and novel objects together
            free = [p for p in POSITIONS if p != shapes[0].position]
            color = rng.choice([c for c in COLORS if c != base.background])
            shapes.append(Shape(rng.choice(KNOWN), color, rng.choice(free)))
            shapes.sort(key=lambda s: list(POSITIONS).index(s.position))
        k = rng.randrange(len(shapes))
        shapes[k] = Shape(rng.choice(NOVEL), shapes[k].color, shapes[k].position)
    return Scene(image_id, base.background, tuple(shapes))


def draw(scene: Scene) -> Image.Image:
    """make_data's drawing, plus the novel shapes (star, ring, cross) in the same 16x16 boxes."""
    known = tuple(s for s in scene.shapes if s.kind in KNOWN)
    image = make_data.draw(Scene(scene.image_id, scene.background, known))
    pen = ImageDraw.Draw(image)
    for shape in scene.shapes:
        if shape.kind in KNOWN:
            continue
        x, y = POSITIONS[shape.position]
        fill = COLORS[shape.color]
        if shape.kind == "ring":
            pen.ellipse((x - HALF, y - HALF, x + HALF, y + HALF), outline=fill, width=3)
        elif shape.kind == "cross":
            pen.rectangle((x - 2, y - HALF, x + 2, y + HALF), fill=fill)
            pen.rectangle((x - HALF, y - 2, x + HALF, y + 2), fill=fill)
        else:  # a five-pointed star
            points = []
            for i in range(10):
                radius = HALF if i % 2 == 0 else HALF * 0.45
                angle = -math.pi / 2 + i * math.pi / 5
                points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
            pen.polygon(points, fill=fill)
    return image


def _tokens(caption: str) -> list[str]:
    """Karpathy's tokens: lower-case words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


def _ids(namespace: str, count: int, low: int, high: int, exclude: set[int] = frozenset()) -> list[int]:
    rng = random.Random(f"{SEED}:{namespace}")
    ids: list[int] = []
    while len(ids) < count:
        drawn = rng.randrange(low, high)
        if drawn not in exclude and drawn not in ids:
            ids.append(drawn)
    return ids


def _karpathy(dataset: str, splits: dict[str, int], per_image: int) -> tuple[dict, dict[str, Scene]]:
    """(Karpathy JSON, scenes by relative image path) for "coco" or "flickr30k"."""
    total = sum(splits.values())
    if dataset == "coco":
        vqa_ids = {i for ids in make_data.image_ids().values() for i in ids}  # keep clear of the VQA demo images
        ids = _ids("coco_ids", total, 100_000, 582_000, vqa_ids)
    else:
        ids = _ids("flickr_ids", total, 1_000_000_000, 9_999_999_999)
    split_of = [split for split, n in splits.items() for _ in range(n)]
    order = list(range(total))
    random.Random(f"{SEED}:{dataset}:order").shuffle(order)  # the real files interleave the splits
    images, scenes, sentid = [], {}, 0
    for imgid, k in enumerate(order):
        image_id, split = ids[k], split_of[k]
        scene = make_data.make_scene(image_id)
        sentences = []
        for caption in captions(scene, per_image):
            sentences.append({"tokens": _tokens(caption), "raw": caption, "imgid": imgid, "sentid": sentid})
            sentid += 1
        record = {"sentids": [s["sentid"] for s in sentences]}
        if dataset == "coco":
            folder = "train2014" if split == "train" else "val2014"
            filename = f"COCO_{folder}_{image_id:012d}.jpg"
            record = {"filepath": folder, **record, "filename": filename}
            scenes[f"{folder}/{filename}"] = scene
        else:
            filename = f"{image_id}.jpg"
            scenes[filename] = scene
            record["filename"] = filename
        record.update({"imgid": imgid, "split": split, "sentences": sentences})
        if dataset == "coco":
            record["cocoid"] = image_id
        images.append(record)
    return {"images": images, "dataset": dataset}, scenes


def build_coco() -> tuple[dict, dict[str, Scene]]:
    return _karpathy("coco", COCO_SPLITS, COCO_CAPTIONS)


def build_flickr30k() -> tuple[dict, dict[str, Scene]]:
    return _karpathy("flickr30k", FLICKR_SPLITS, FLICKR_CAPTIONS)


def build_nocaps() -> tuple[dict, dict[str, Scene]]:
    """(NoCaps validation JSON, scenes by image file name); image ids count from 0 as in the real file."""
    rng = random.Random(f"{SEED}:nocaps:ids")
    domains = [d for d, n in NOCAPS_DOMAINS.items() for _ in range(n)]
    rng.shuffle(domains)
    scene_ids = _ids("nocaps_scenes", len(domains), 1_000_000, 2_000_000)
    images, annotations, scenes = [], [], {}
    for image_id, (domain, scene_id) in enumerate(zip(domains, scene_ids)):
        open_images_id = f"{rng.getrandbits(64):016x}"
        file_name = f"{open_images_id}.jpg"
        scene = nocaps_scene(scene_id, domain)
        scenes[file_name] = scene
        images.append({
            "id": image_id, "open_images_id": open_images_id, "height": make_data.SIZE, "width": make_data.SIZE,
            "file_name": file_name, "license": 0, "date_captured": "2018-11-06 11:04:33", "domain": domain,
        })
        for caption in captions(scene, NOCAPS_CAPTIONS):
            annotations.append({"image_id": image_id, "id": len(annotations), "caption": caption})
    licenses = [{"id": 0, "name": "Apache License 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}]
    return {"licenses": licenses, "info": INFO, "images": images, "annotations": annotations}, scenes


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode("utf-8")


def _save(scenes: dict[str, Scene], folder: Path) -> None:
    for relative, scene in scenes.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(scene).save(path, quality=90)


def write(out: Path) -> None:
    """Write coco/, flickr30k/ and nocaps/ under `out` in their official layouts."""
    for task, build, file_name, images in (
        ("coco", build_coco, "dataset_coco.json", "images"),
        ("flickr30k", build_flickr30k, "dataset_flickr30k.json", "images"),
        ("nocaps", build_nocaps, "nocaps_val_4500_captions.json", "val"),
    ):
        data, scenes = build()
        (out / task).mkdir(parents=True, exist_ok=True)
        (out / task / file_name).write_bytes(_json_bytes(data))
        _save(scenes, out / task / images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote synthetic COCO, Flickr30k and NoCaps demo data under {out}")


if __name__ == "__main__":
    main()
