"""Generate the bundled `--demo` data of the FairFace tasks: tiny and synthetic, in the layout of the
official release that `tasks/fairface_<attribute>.yaml` (source `fairface_csv`) reads:

    fairface_label_train.csv, fairface_label_val.csv   file,age,gender,race,service_test
    train/1.jpg ... train/28.jpg, val/1.jpg ... val/14.jpg

The same files are written for each of the three tasks (fairface_gender/, fairface_race/,
fairface_age/: `--demo` finds a task's data under its own name), so the three tasks rank the same faces.

There are no real people here. Every "face" is a cartoon drawn with PIL on a 64x64 grey background:
a head with two dot eyes and a line mouth above grey shoulders. The labels are written into the
drawing as arbitrary codes that depict nothing about any real group: the head's shape codes gender
(square: Male, round: Female), its colour codes race (an unnatural palette: teal, olive, lavender,
navy, lime, sky blue, magenta; never a skin tone), and a row of 1 to 9 dots under the shoulders codes
the age group (1: 0-2, ..., 9: more than 70). A model can therefore learn each label from the picture
with shots, and the per-group breakdown of the fairface_accuracy metric has every group to show.
The splits are balanced like FairFace: every race x gender pair twice in train (28 faces) and once in
val (14), age groups spread over all nine.

Everything derives from `SEED`, so the output is byte-for-byte reproducible:

    python -m idefics_eval.demo.make_fairface [--out DIR]

writes `DIR/fairface_gender/`, `DIR/fairface_race/` and `DIR/fairface_age/` (default:
`idefics_eval/demo/data/`). Commit the script and its output together.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SEED = 20240716
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
TASKS = ("fairface_gender", "fairface_race", "fairface_age")
SIZE = 64
GENDERS = ("Male", "Female")
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
SPLITS = {"train": 2, "val": 1}  # faces per race x gender pair
FILES = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}

BACKGROUND = (205, 205, 205)
SHOULDERS = (120, 120, 120)
HEAD_COLOURS = {  # arbitrary codes, deliberately not skin tones
    "White": (0, 128, 128),  # teal
    "Black": (128, 128, 0),  # olive
    "Latino_Hispanic": (180, 160, 230),  # lavender
    "East Asian": (30, 40, 120),  # navy
    "Southeast Asian": (150, 220, 60),  # lime
    "Indian": (120, 190, 240),  # sky blue
    "Middle Eastern": (200, 60, 160),  # magenta
}


@dataclass(frozen=True)
class Face:
    file: str  # e.g. "val/3.jpg"
    gender: str
    race: str
    age: str
    service_test: bool


def faces(split: str) -> list[Face]:
    """The faces of a split, in file order: each race x gender pair SPLITS[split] times, shuffled,
    the age groups dealt round-robin from a shuffled start."""
    rng = random.Random(f"{SEED}:{split}")
    pairs = [(race, gender) for race in RACES for gender in GENDERS] * SPLITS[split]
    rng.shuffle(pairs)
    ages = list(AGES)
    rng.shuffle(ages)
    return [
        Face(f"{split}/{number}.jpg", gender, race, ages[(number - 1) % len(ages)], rng.random() < 0.5)
        for number, (race, gender) in enumerate(pairs, start=1)
    ]


def draw(face: Face) -> Image.Image:
    """The cartoon of a face: head shape = gender, head colour = race, dots = age group."""
    rng = random.Random(f"{SEED}:draw:{face.file}")
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    pen = ImageDraw.Draw(image)
    dx = rng.randint(-3, 3)  # a little variety in pose, the same codes
    pen.polygon([(14 + dx, 52), (20 + dx, 40), (44 + dx, 40), (50 + dx, 52)], fill=SHOULDERS)
    head = (20 + dx, 10, 44 + dx, 38)
    colour = HEAD_COLOURS[face.race]
    if face.gender == "Male":
        pen.rectangle(head, fill=colour)
    else:
        pen.ellipse(head, fill=colour)
    for x in (27 + dx, 37 + dx):
        pen.ellipse((x - 3, 19, x + 3, 25), fill=(255, 255, 255))
        pen.ellipse((x - 1, 21, x + 1, 23), fill=(0, 0, 0))
    pen.line((27 + dx, 31, 37 + dx, 31), fill=(0, 0, 0), width=2)
    dots = AGES.index(face.age) + 1
    left = (SIZE - (6 * dots - 2)) // 2
    for i in range(dots):
        pen.rectangle((left + 6 * i, 56, left + 6 * i + 3, 59), fill=(0, 0, 0))
    return image


def csv_bytes(split: str) -> bytes:
    """The split's label CSV, as the release writes it (header file,age,gender,race,service_test)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "age", "gender", "race", "service_test"])
    for face in faces(split):
        writer.writerow([face.file, face.age, face.gender, face.race, str(face.service_test)])
    return buffer.getvalue().encode("utf-8")


def write(out: Path) -> None:
    """Write the release layout into `out/<task>/` for each FairFace task."""
    for task in TASKS:
        folder = out / task
        for split, file_name in FILES.items():
            (folder / split).mkdir(parents=True, exist_ok=True)
            (folder / file_name).write_bytes(csv_bytes(split))
            for face in faces(split):
                draw(face).save(folder / face.file, format="JPEG", quality=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote synthetic FairFace demo data under {', '.join(str(out / task) for task in TASKS)}")


if __name__ == "__main__":
    main()
