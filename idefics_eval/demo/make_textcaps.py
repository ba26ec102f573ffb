"""Generate the bundled `--demo` data of TextCaps: tiny and synthetic, in the official file layout that
`tasks/textcaps.yaml` (source `textcaps_json`) reads:

    textcaps/TextCaps_0.1_train.json, TextCaps_0.1_val.json    one record per caption, five per image
    textcaps/TextVQA_Rosetta_OCR_v0.2_train.json, ..._val.json  the images' OCR tokens and boxes
    textcaps/train_images/<image_id>.jpg                        the images of both splits, as TextVQA's

Every image is a 64x64 JPEG with text drawn in it by PIL's built-in bitmap font (the same pixels
wherever Pillow runs): a sign with a word ("STOP", "CAFE"), a bottle whose label names a drink
("COLA"), a book whose cover shows a title ("MOON") or a shirt with a number ("23"), on a plain
background. The five reference captions of an image each mention its text, in the ways TextCaps
annotators write ("A red sign that says STOP.", "a bottle labeled cola", "Number 23 is printed on a
blue shirt."), so a captioner that reads the text scores higher CIDEr. The OCR files list each image's
text as Rosetta would (lower-cased tokens with normalised boxes). None of it comes from TextCaps,
TextVQA or Open Images.

Everything derives from `SEED` and the image id, so the output is byte-for-byte reproducible:

    python -m idefics_eval.demo.make_textcaps [--out DIR]

writes `DIR/textcaps/` (default: `idefics_eval/demo/data/`). Commit the script and its output together.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .make_data import COLORS, SIZE

SEED = 20240715
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
SPLITS = {"train": 24, "validation": 12}  # images per split; each has CAPTIONS captions
FILE_SPLIT = {"train": "train", "validation": "val"}  # the split's name in the files
CAPTIONS = 5
KINDS = ("sign", "bottle", "book", "shirt")
WORDS = {
    "sign": ("STOP", "EXIT", "OPEN", "SALE", "CAFE", "TAXI", "HOTEL", "PARK", "BANK"),
    "bottle": ("COLA", "LEMON", "WATER", "MILK", "JUICE", "SODA"),
    "book": ("MOON", "RIVER", "STARS", "GHOST", "DUNE", "EMMA"),
}
IMAGE_CLASSES = {"sign": ["Street sign", "Sign"], "bottle": ["Bottle", "Drink"], "book": ["Book"], "shirt": ["Jersey", "Clothing"]}
DARK, LIGHT = ("black", "blue", "purple", "red", "green"), ("white", "yellow", "orange")


@dataclass(frozen=True)
class TextImage:
    image_id: str  # 16 hex digits, as TextVQA's Open Images ids
    kind: str  # one of KINDS
    text: str  # what is written: a word in capitals, or the shirt's number
    background: str
    color: str  # the object's colour (sign, bottle, book cover, shirt)
    ink: str  # the text's colour


def _font() -> ImageFont.ImageFont:
    """PIL's built-in bitmap font: the same pixels wherever Pillow runs (no FreeType hinting)."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def image_ids() -> dict[str, list[str]]:
    """16-hex-digit image ids per split, disjoint."""
    rng = random.Random(f"{SEED}:image_ids")
    drawn: list[str] = []
    while len(drawn) < sum(SPLITS.values()):
        image_id = f"{rng.getrandbits(64):016x}"
        if image_id not in drawn:
            drawn.append(image_id)
    ids, start = {}, 0
    for split, count in SPLITS.items():
        ids[split] = drawn[start : start + count]
        start += count
    return ids


def make_image(image_id: str, index: int) -> TextImage:
    """The picture of `image_id`; `index` (its position in the demo, train then val) cycles through the
    kinds, and through each kind's words, so that the words vary."""
    rng = random.Random(f"{SEED}:image:{image_id}")
    kind = KINDS[index % len(KINDS)]
    turn = index // len(KINDS)
    text = str(rng.randint(1, 99)) if kind == "shirt" else WORDS[kind][turn % len(WORDS[kind])]
    background = rng.choice(list(COLORS))
    color = rng.choice([c for c in COLORS if c != background])
    ink = rng.choice([c for c in (LIGHT if color in DARK else DARK) if c != color])
    if kind == "bottle":
        ink = "black"  # printed on a white label
    return TextImage(image_id, kind, text, background, color, ink)


def text_box(picture: TextImage) -> tuple[int, int, int, int]:
    """Where the text is drawn: (left, top, right, bottom) of its pixels."""
    left, top, right, bottom = _font().getbbox(picture.text)
    width, height = right - left, bottom - top
    centre_y = {"sign": 20, "bottle": 40, "book": 24, "shirt": 38}[picture.kind]
    x, y = (SIZE - width) // 2, centre_y - height // 2
    return x, y, x + width, y + height


def draw(picture: TextImage) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), COLORS[picture.background])
    pen = ImageDraw.Draw(image)
    fill = COLORS[picture.color]
    if picture.kind == "sign":
        pen.rectangle((30, 30, 33, 62), fill=(110, 110, 110))  # the post
        pen.rectangle((6, 8, 57, 31), fill=fill)
    elif picture.kind == "bottle":
        pen.rectangle((27, 6, 36, 18), fill=fill)  # neck
        pen.rectangle((17, 18, 46, 61), fill=fill)
        pen.rectangle((15, 32, 48, 48), fill=COLORS["white"])  # label
    elif picture.kind == "book":
        pen.rectangle((12, 4, 51, 60), fill=fill)
        pen.rectangle((12, 4, 15, 60), fill=(60, 60, 60))  # spine
    else:  # a shirt: body and sleeves
        pen.polygon([(14, 12), (24, 8), (40, 8), (50, 12), (58, 24), (50, 28), (48, 22), (48, 60), (16, 60),
                     (16, 22), (14, 28), (6, 24)], fill=fill)
    x, y, _, _ = text_box(picture)
    left, top, _, _ = _font().getbbox(picture.text)
    pen.text((x - left, y - top), picture.text, fill=COLORS[picture.ink], font=_font())
    return image


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def captions(picture: TextImage) -> list[str]:
    """Five distinct captions, each mentioning the image's text, in a seeded order."""
    rng = random.Random(f"{SEED}:captions:{picture.image_id}")
    word, title = picture.text, picture.text.capitalize()
    color, bg, ink = picture.color, picture.background, picture.ink
    a_color = _article(color)
    A_color = _capital(a_color)
    written = {
        "sign": [
            f'{A_color} sign that says "{word}".',
            f"a sign with the word {word.lower()} written on it",
            f"The {color} sign reads {word} in {ink} letters.",
            f"A {word} sign against {_article(bg)} background.",
            f"{_article(color)} {word.lower()} sign on a gray post",
            f"a street sign that reads {title}",
            f"The word {word} is painted on a sign.",
        ],
        "bottle": [
            f"A bottle of {title} on {_article(bg)} background.",
            f"{_article(color)} bottle with a label that says {word}",
            f'A bottle labeled "{title}".',
            f"{title} bottle standing on its own",
            f"the word {word.lower()} is printed on the label of {_article(color)} bottle",
            f"{A_color} bottle of {word.lower()} with a white label.",
        ],
        "book": [
            f'{A_color} book titled "{title}".',
            f"the cover of a book called {title}",
            f"A book with the word {word} on its cover.",
            f"{_article(color)} book cover that says {word.lower()}",
            f"The title {title} is written on {a_color} book.",
            f"a book named {word} lying on {_article(bg)} surface",
        ],
        "shirt": [
            f"{A_color} jersey with the number {word} on it.",
            f"a sports shirt showing number {word}",
            f"Number {word} is printed on {a_color} shirt.",
            f"{_article(color)} shirt with a big {word} on the front",
            f"The jersey of player number {word}.",
            f"{a_color} t-shirt that has the number {word} written on it",
        ],
    }[picture.kind]
    chosen = rng.sample(written, CAPTIONS)
    return [_capital(c) if rng.random() < 0.7 else c for c in chosen]


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption.lower())


def build(split: str) -> tuple[dict, dict, dict[str, TextImage]]:
    """(TextCaps JSON, Rosetta OCR JSON, pictures by image file name) of a split."""
    set_name = FILE_SPLIT[split]
    records, ocr, pictures = [], [], {}
    caption_id = 0 if split == "train" else 10_000
    first = sum(count for name, count in SPLITS.items() if list(SPLITS).index(name) < list(SPLITS).index(split))
    for index, image_id in enumerate(image_ids()[split], start=first):
        picture = make_image(image_id, index)
        pictures[f"{image_id}.jpg"] = picture
        references = captions(picture)
        for caption in references:
            records.append({
                "image_id": image_id, "image_classes": IMAGE_CLASSES[picture.kind], "flickr_original_url": "",
                "flickr_300k_url": "", "image_width": SIZE, "image_height": SIZE, "set_name": set_name,
                "image_name": image_id, "image_path": f"{set_name}/{image_id}.jpg", "caption_id": caption_id,
                "caption_str": caption, "caption_tokens": _tokens(caption), "reference_strs": references,
                "reference_tokens": [_tokens(r) for r in references],
            })
            caption_id += 1
        left, top, right, bottom = text_box(picture)
        box = {"top_left_x": round(left / SIZE, 4), "top_left_y": round(top / SIZE, 4), "width": round((right - left) / SIZE, 4),
               "height": round((bottom - top) / SIZE, 4), "rotation": 0, "roll": 0, "pitch": 0, "yaw": 0}
        token = picture.text.lower()
        ocr.append({"image_id": image_id, "ocr_tokens": [token], "ocr_info": [{"word": token, "bounding_box": box}],
                    "set_name": set_name})
    textcaps = {"dataset_type": set_name, "dataset_name": "textcaps", "dataset_version": "0.1", "data": records}
    rosetta = {"dataset_type": set_name, "dataset_name": "textvqa", "dataset_version": "0.2", "data": ocr}
    return textcaps, rosetta, pictures


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode("utf-8")


def write(out: Path) -> None:
    """Write `out/textcaps/` in the official layout."""
    folder = out / "textcaps"
    (folder / "train_images").mkdir(parents=True, exist_ok=True)
    for split, set_name in FILE_SPLIT.items():
        textcaps, rosetta, pictures = build(split)
        (folder / f"TextCaps_0.1_{set_name}.json").write_bytes(_json_bytes(textcaps))
        (folder / f"TextVQA_Rosetta_OCR_v0.2_{set_name}.json").write_bytes(_json_bytes(rosetta))
        for name, picture in pictures.items():
            draw(picture).save(folder / "train_images" / name, format="JPEG", quality=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote synthetic TextCaps demo data under {out / 'textcaps'}")


if __name__ == "__main__":
    main()
