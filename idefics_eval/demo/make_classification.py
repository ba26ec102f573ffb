"""Generate the bundled `--demo` data of the ranked classification tasks, synthetic, each in its official
layout (the one `tasks/<task>.yaml` reads):

    imagenet/imagenet_class_index.json          {"417": ["n02782093", "balloon"], ...}
    imagenet/train/<wnid>/<wnid>_<n>.JPEG        4 images per class
    imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG  1-2 images per class
    renderedsst2/{train,test}/{negative,positive}/<n>.png

ImageNet: 10 real ImageNet-1k classes with their official indices and WordNet ids, chosen because a
64x64 drawing can show them (balloon, basketball, golf ball, tennis ball, traffic light, Granny
Smith apple, strawberry, orange, lemon, banana); each image is a seeded drawing of its class on a
plain background, varied in place, size and colours. The class-index file lists those 10 classes
only (the reader keeps their official indices, so the task's 1,000 candidates still apply).
Rendered SST2: short movie reviews written for this demo in SST's tokenised style ("it 's a
warm , funny film ."), half positive and half negative, rendered black on white with PIL's
built-in bitmap font, as OpenAI rendered the SST-2 sentences. None of it comes from ImageNet or SST-2.

Everything derives from `SEED`, so the output is reproducible:

    python -m idefics_eval.demo.make_classification [--out DIR]

writes `imagenet/` and `renderedsst2/` under `idefics_eval/demo/data/` by default. Commit the
script and its output together.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .make_data import SIZE

SEED = 20240611
DEFAULT_OUT = Path(__file__).resolve().parent / "data"

# index -> (WordNet id, name in imagenet_class_index.json); indices and ids are ImageNet-1k's.
IMAGENET_CLASSES = {
    417: ("n02782093", "balloon"),
    430: ("n02802426", "basketball"),
    574: ("n03445777", "golf_ball"),
    852: ("n04409515", "tennis_ball"),
    920: ("n06874185", "traffic_light"),
    948: ("n07742313", "Granny_Smith"),
    949: ("n07745940", "strawberry"),
    950: ("n07747607", "orange"),
    951: ("n07749582", "lemon"),
    954: ("n07753592", "banana"),
}
TRAIN_PER_CLASS = 4
VAL_IMAGES = 14  # every class once, the first four classes (in a seeded order) twice
BACKGROUNDS = [(235, 235, 225), (200, 220, 240), (225, 210, 230), (210, 235, 210), (245, 225, 200), (190, 190, 190)]

SST2_CLASSES = ("negative", "positive")  # label order of the released data (0 negative, 1 positive)
SST2_SPLITS = {"train": 20, "test": 8}  # images per class
# Short reviews in SST's tokenised style, written for this demo; the first 20 of each list are train.
REVIEWS = {
    "positive": [
        "a warm , funny film .", "it 's a charming delight .", "smart , sweet and moving .",
        "the cast is terrific .", "a gorgeous , witty ride .", "one of the year 's best .",
        "funny from start to end .", "a joy to watch .", "beautifully shot and acted .",
        "a small gem of a movie .", "it wins you over .", "clever and heartfelt .",
        "a thrilling adventure .", "the best comedy in years .", "rich , tender and wise .",
        "i loved every minute .", "a triumph .", "fresh and lively fun .",
        "a moving , honest drama .", "great music , great cast .",
        "a lovely , funny story .", "bold and beautiful .", "an instant classic .",
        "sharp writing , big laughs .", "a real crowd pleaser .", "warm and generous .",
        "a stunning debut .", "see it twice .",
    ],
    "negative": [
        "a dull , lifeless mess .", "it 's a tired bore .", "the plot makes no sense .",
        "flat jokes , weak cast .", "too long by an hour .", "a waste of talent .",
        "nothing here works .", "painfully slow .", "the acting is wooden .",
        "a clumsy , cheap sequel .", "i was bored stiff .", "messy and pointless .",
        "a forgettable drama .", "it never takes off .", "loud , dumb and ugly .",
        "the script is awful .", "a chore to sit through .", "bland and predictable .",
        "an empty , silly film .", "skip this one .",
        "a tedious slog .", "stale and lazy .", "the ending is a joke .",
        "badly written , badly shot .", "a limp comedy .", "dreary and dull .",
        "what a mess .", "it falls apart fast .",
    ],
}


@dataclass(frozen=True)
class Drawing:
    index: int  # ImageNet class index
    seed: str  # what the picture's variation derives from


def _rng(key: str) -> random.Random:
    return random.Random(f"{SEED}:{key}")


def draw_object(drawing: Drawing) -> Image.Image:
    """A 64x64 drawing of one ImageNet class, varied by `drawing.seed`."""
    rng = _rng(f"draw:{drawing.seed}")
    image = Image.new("RGB", (SIZE, SIZE), rng.choice(BACKGROUNDS))
    pen = ImageDraw.Draw(image)
    cx, cy = 32 + rng.randint(-6, 6), 32 + rng.randint(-6, 6)
    r = rng.randint(11, 16)
    name = IMAGENET_CLASSES[drawing.index][1]
    circle = (cx - r, cy - r, cx + r, cy + r)
    if name == "balloon":
        color = rng.choice([(220, 30, 30), (30, 80, 220), (240, 200, 30), (200, 40, 160)])
        pen.line([(cx, cy + r + 4), (cx + rng.randint(-4, 4), 63)], fill=(60, 60, 60), width=1)
        pen.ellipse((cx - r + 3, cy - r - 3, cx + r - 3, cy + r + 4), fill=color)
        pen.polygon([(cx, cy + r + 3), (cx - 3, cy + r + 7), (cx + 3, cy + r + 7)], fill=color)
    elif name == "basketball":
        pen.ellipse(circle, fill=(230, 110, 30), outline=(40, 20, 10))
        pen.line([(cx, cy - r), (cx, cy + r)], fill=(40, 20, 10), width=1)
        pen.line([(cx - r, cy), (cx + r, cy)], fill=(40, 20, 10), width=1)
        pen.arc((cx - r - r // 2, cy - r, cx + r // 2, cy + r), -60, 60, fill=(40, 20, 10))
        pen.arc((cx - r // 2, cy - r, cx + r + r // 2, cy + r), 120, 240, fill=(40, 20, 10))
    elif name == "golf_ball":
        pen.rectangle((0, 44, 63, 63), fill=(60, 150, 60))
        r = rng.randint(7, 10)
        cy = min(cy, 44 - r + 3)
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 250, 250), outline=(170, 170, 170))
        for dx, dy in ((-3, -3), (2, -4), (-4, 2), (3, 1), (0, 4), (-1, 0)):
            pen.point((cx + dx, cy + dy), fill=(170, 170, 170))
    elif name == "tennis_ball":
        pen.ellipse(circle, fill=(200, 230, 40))
        pen.arc((cx - r - r // 2, cy - r, cx + r // 3, cy + r), -70, 70, fill=(255, 255, 255), width=2)
        pen.arc((cx - r // 3, cy - r, cx + r + r // 2, cy + r), 110, 250, fill=(255, 255, 255), width=2)
    elif name == "traffic_light":
        w, h = 8 + rng.randint(0, 3), 24 + rng.randint(0, 4)
        pen.rectangle((cx - w, cy - h, cx + w, cy + h), fill=(40, 40, 40))
        pen.line([(cx, cy + h), (cx, 63)], fill=(90, 90, 90), width=3)
        for k, color in enumerate([(230, 30, 30), (240, 200, 30), (40, 200, 60)]):
            y = cy - h + 8 + k * (2 * h - 16) // 2
            pen.ellipse((cx - w + 3, y - (w - 3), cx + w - 3, y + (w - 3)), fill=color)
    elif name == "Granny_Smith":
        pen.ellipse(circle, fill=(120, 200, 60))
        pen.line([(cx, cy - r + 2), (cx + 2, cy - r - 5)], fill=(100, 60, 20), width=2)
        pen.ellipse((cx + 3, cy - r - 6, cx + 10, cy - r - 2), fill=(50, 140, 40))
    elif name == "strawberry":
        pen.polygon([(cx - r, cy - r // 2), (cx + r, cy - r // 2), (cx, cy + r + 2)], fill=(210, 30, 40))
        pen.ellipse((cx - r, cy - r, cx + r, cy), fill=(210, 30, 40))
        for dx in (-r + 3, -3, 3, r - 3):
            pen.polygon([(cx, cy - r + 2), (cx + dx, cy - r - 4), (cx + dx // 2, cy - r + 4)], fill=(40, 150, 40))
        for dx, dy in ((-5, -2), (4, -3), (0, 3), (-3, 7), (3, 8), (6, 2), (-7, 3)):
            pen.point((cx + dx, cy + dy), fill=(250, 230, 120))
    elif name == "orange":
        pen.ellipse(circle, fill=(250, 150, 20))
        pen.ellipse((cx - 2, cy - r + 2, cx + 2, cy - r + 5), fill=(90, 120, 30))
        for dx, dy in ((-6, -4), (5, -6), (-3, 5), (6, 4), (0, 0)):
            pen.point((cx + dx, cy + dy), fill=(230, 120, 10))
    elif name == "lemon":
        pen.ellipse((cx - r - 3, cy - r + 4, cx + r + 3, cy + r - 4), fill=(250, 230, 40))
        pen.polygon([(cx + r + 1, cy - 3), (cx + r + 7, cy), (cx + r + 1, cy + 3)], fill=(250, 230, 40))
        pen.polygon([(cx - r - 1, cy - 3), (cx - r - 6, cy), (cx - r - 1, cy + 3)], fill=(250, 230, 40))
    else:  # banana: a thick yellow crescent with brown tips
        box = (cx - r - 6, cy - r - 10, cx + r + 6, cy + r + 2)
        pen.arc(box, 20, 160, fill=(245, 215, 50), width=7)
        for angle in (20, 160):
            x = (box[0] + box[2]) / 2 + (box[2] - box[0]) / 2 * math.cos(math.radians(angle)) - 3.5 * math.cos(math.radians(angle))
            y = (box[1] + box[3]) / 2 + (box[3] - box[1]) / 2 * math.sin(math.radians(angle)) - 3.5 * math.sin(math.radians(angle))
            pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(100, 70, 20))
    return image


def build_imagenet() -> tuple[dict, dict[str, Drawing]]:
    """(class-index JSON, drawings by path relative to the data folder)."""
    rng = _rng("imagenet")
    indices = sorted(IMAGENET_CLASSES)
    order = indices[:]
    rng.shuffle(order)
    val_classes = indices + order[: VAL_IMAGES - len(indices)]
    val_numbers = sorted(rng.sample(range(1, 50_001), VAL_IMAGES))
    rng.shuffle(val_classes)
    drawings: dict[str, Drawing] = {}
    for index in indices:
        wnid = IMAGENET_CLASSES[index][0]
        for number in sorted(rng.sample(range(1, 13_001), TRAIN_PER_CLASS)):
            drawings[f"train/{wnid}/{wnid}_{number}.JPEG"] = Drawing(index, f"train:{wnid}_{number}")
    for number, index in zip(val_numbers, val_classes):
        wnid = IMAGENET_CLASSES[index][0]
        drawings[f"val/{wnid}/ILSVRC2012_val_{number:08d}.JPEG"] = Drawing(index, f"val:{number}")
    class_index = {str(i): [wnid, name] for i, (wnid, name) in sorted(IMAGENET_CLASSES.items())}
    return class_index, drawings


def _font():
    """PIL's built-in bitmap font (not the FreeType default of newer Pillow): the same pixels everywhere."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader else ImageFont.load_default()


def render_review(text: str) -> Image.Image:
    """A review written black on white, wrapped to the 64-pixel width."""
    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    font = _font()
    for row, line in enumerate(textwrap.wrap(text, width=10, break_long_words=True)):
        pen.text((1, 1 + 12 * row), line, fill=(0, 0, 0), font=font)
    return image


def build_renderedsst2() -> dict[str, str]:
    """Review text by image path relative to the data folder, numbered across the split as one release."""
    reviews: dict[str, str] = {}
    start = 0
    for split, per_class in SST2_SPLITS.items():
        items = []
        for label in SST2_CLASSES:
            chosen = REVIEWS[label][:20] if split == "train" else REVIEWS[label][20:]
            items += [(label, text) for text in chosen[:per_class]]
        _rng(f"sst2:{split}").shuffle(items)
        for number, (label, text) in enumerate(items, start):
            reviews[f"{split}/{label}/{number:05d}.png"] = text
        start += len(items)
    return reviews


def write(out: Path) -> None:
    """Write imagenet/ and renderedsst2/ under `out` in their official layouts."""
    class_index, drawings = build_imagenet()
    (out / "imagenet").mkdir(parents=True, exist_ok=True)
    (out / "imagenet" / "imagenet_class_index.json").write_bytes((json.dumps(class_index) + "\n").encode())
    for relative, drawing in drawings.items():
        path = out / "imagenet" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_object(drawing).save(path, format="JPEG", quality=90)
    for relative, text in build_renderedsst2().items():
        path = out / "renderedsst2" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        render_review(text).convert("L").save(path, format="PNG", optimize=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote synthetic ImageNet and Rendered SST2 demo data under {out}")


if __name__ == "__main__":
    main()
