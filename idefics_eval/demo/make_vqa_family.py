"""Generate the bundled `--demo` data of the VQA family: tiny, synthetic OK-VQA, TextVQA and VizWiz.

Each task gets a support split (train, 48 questions) and a query split (validation, 16 questions) in
the exact files, JSON keys and image layout its task file (`tasks/<task>.yaml`, source `vqa_json`)
reads, so `idefics-eval run --task <task> --demo` exercises the real loading path offline. Every
image is a generated 64x64 JPEG built on `make_data`'s scenes (a plain background with coloured
circles, squares and triangles); none of it comes from the real datasets.

* OK-VQA (`okvqa/`): the okvqa.allenai.org layout over COCO-named images. Questions need outside
  knowledge about what the scene shows ("What fruit is the same color as the background?", "At a
  traffic light, what does the color of the circle tell drivers to do?"). As in OK-VQA, 5 annotators
  answer and each answer is listed twice (answer ids 1-10), with the `raw_answer` and the processed
  (lowercased, article-free, singular) `answer`; `question_type` is OK-VQA's category code
  ("five" = cooking and food, ...); a few images have two questions.
* TextVQA (`textvqa/`): the VQA-format files OpenFlamingo distributes, with 16-hex-digit image ids
  and the images of both splits in `train_images/`. Each image shows a sign with a word and a plate
  with a number, drawn with PIL's bitmap font; the questions ask about that text ("what does the sign
  say?", "what number is shown at the bottom?").
* VizWiz (`vizwiz/`): the VQA-format files OpenFlamingo distributes: string image ids that are the
  file names (`VizWiz_train_00000000.jpg`), one question per image, answers without answer ids,
  `question_type` holding the answer type, and a quarter of the photos blurred or dark, whose
  annotators mostly answer "unanswerable".

As in OpenFlamingo's TextVQA and VizWiz files, `multiple_choice_answer` is the first annotator's
answer, not the most frequent one. In every question the true answer is the strictly most frequent
answer string (for OK-VQA: processed `answer`), with surface variants that answer normalisation must
undo and a few wrong answers.

Everything derives from `SEED`, so the output is byte-for-byte reproducible:

    python -m idefics_eval.demo.make_vqa_family [--out DIR] [--task okvqa ...]

writes `DIR/okvqa/`, `DIR/textvqa/` and `DIR/vizwiz/` (default: `idefics_eval/demo/data/`). Commit the
script and its output together.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from .make_data import COLORS, SIZE, Scene, draw, make_scene

SEED = 20240607
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
TASKS = ("okvqa", "textvqa", "vizwiz")
SUPPORT, QUERY = 48, 16  # questions per split

COLOR_CONFUSIONS = {
    "red": ("orange", "pink"), "orange": ("red", "yellow"), "yellow": ("orange", "gold"),
    "green": ("blue", "teal"), "blue": ("purple", "navy"), "purple": ("blue", "pink"),
    "white": ("gray", "silver"), "black": ("gray", "dark blue"),
}


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode("utf-8")


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


def _scene_seed(text: str) -> int:
    """An int image id for `make_scene` from a string id (TextVQA, VizWiz), stable across runs."""
    return random.Random(f"{SEED}:scene-seed:{text}").randrange(10**9)


@dataclass(frozen=True)
class Asked:
    """One question and what annotators answer: the truth, forms of it, and wrong answers."""

    question: str
    kind: str  # OK-VQA category code, or the VizWiz answer type
    truth: str
    same: tuple[str, ...]  # other surface forms of the truth
    wrong: tuple[str, ...]


def _answer_texts(
    asked: Asked, rng: random.Random, n: int = 10, unanimous: float = 0.2, max_same: int = 3, max_wrong: int = 2
) -> list[str]:
    """`n` annotators' answers in which `asked.truth` is the strictly most frequent string."""
    if rng.random() < unanimous:
        return [asked.truth] * n
    n_same = rng.randint(1, max_same) if asked.same and max_same else 0
    n_wrong = rng.randint(0, max_wrong) if asked.wrong else 0
    assert n - n_same - n_wrong > max(n_same, n_wrong), "the truth must stay the most frequent answer"
    texts = [asked.truth] * (n - n_same - n_wrong)
    texts += [rng.choice(asked.same) for _ in range(n_same)] + [rng.choice(asked.wrong) for _ in range(n_wrong)]
    rng.shuffle(texts)
    return texts


# ---------------------------------------------------------------- OK-VQA ----------------------------

OKVQA_SPLITS = {"train": ("train2014", 40), "validation": ("val2014", 14)}  # (data subtype, images)
OKVQA_CATEGORIES = {
    "one": "Vehicles and Transportation", "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing", "four": "Sports and Recreation", "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture", "seven": "People and Everyday life",
    "eight": "Plants and Animals", "nine": "Science and Technology", "ten": "Weather and Climate", "other": "Other",
}
FRUIT = {
    "red": ("apple", ("Apples", "red apple", "an apple"), ("cherry", "strawberry")),
    "yellow": ("banana", ("Bananas", "a banana", "banana."), ("lemon", "pineapple")),
    "orange": ("orange", ("Oranges", "an orange", "Orange"), ("tangerine", "peach")),
    "green": ("lime", ("Limes", "a lime", "Lime"), ("pear", "green apple")),
    "purple": ("grape", ("Grapes", "grapes.", "a grape"), ("plum", "fig")),
    "blue": ("blueberry", ("Blueberries", "blueberries", "a blueberry"), ("plum", "grape")),
}
VEGETABLE = {
    "orange": ("carrot", ("Carrots", "a carrot", "carrots."), ("pumpkin", "sweet potato")),
    "green": ("broccoli", ("Broccoli", "broccoli."), ("lettuce", "peas")),
    "purple": ("eggplant", ("Eggplants", "an eggplant", "Eggplant"), ("beet", "cabbage")),
    "red": ("tomato", ("Tomatoes", "a tomato", "Tomato"), ("pepper", "radish")),
}
TRAFFIC = {
    "red": ("stop", ("Stop", "stop.", "Stop!"), ("wait", "brake")),
    "green": ("go", ("Go", "go.", "Go!"), ("drive", "proceed")),
    "yellow": ("slow down", ("Slow down", "slow down.", "Slow down!"), ("caution", "prepare to stop")),
}
SIDES = {"circle": ("0", ("0.",), ("none", "1", "infinite")), "square": ("4", ("4.",), ("four", "6")),
         "triangle": ("3", ("3.",), ("three", "4"))}
OKVQA_STEMS = {
    "apples": "apple", "bananas": "banana", "oranges": "orange", "limes": "lime", "grapes": "grape",
    "blueberries": "blueberry", "carrots": "carrot", "eggplants": "eggplant", "tomatoes": "tomato",
    "pyramids": "pyramid",
}


def okvqa_process(raw: str) -> str:
    """OK-VQA's processed `answer`: lowercase, no trailing punctuation or leading article, singular."""
    words = raw.lower().rstrip(".!").split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(OKVQA_STEMS.get(word, word) for word in words)


def _okvqa_candidates(scene: Scene, rng: random.Random) -> list[Asked]:
    """Every outside-knowledge question with an unambiguous answer for this scene."""
    kinds = Counter(s.kind for s in scene.shapes)
    targets = [("the background", scene.background)]
    targets += [(f"the shape on the {s.position}", s.color) for s in scene.shapes]
    targets += [(f"the {s.kind}", s.color) for s in scene.shapes if kinds[s.kind] == 1]
    rng.shuffle(targets)
    asked = []
    for table, pattern, code in [
        (FRUIT, "What fruit is the same color as {target}?", "five"),
        (VEGETABLE, "Which vegetable is usually the color of {target}?", "five"),
        (TRAFFIC, "At a traffic light, what does the color of {target} tell drivers to do?", "one"),
    ]:
        for target, color in targets:
            if color in table:
                truth, same, wrong = table[color]
                asked.append(Asked(pattern.format(target=target), code, truth, same, wrong))
                break
    shape = rng.choice(scene.shapes)
    truth, same, wrong = SIDES[shape.kind]
    asked.append(Asked(f"How many sides does the shape on the {shape.position} have?", "nine", truth, same, wrong))
    for s in scene.shapes:
        if s.kind == "triangle":
            asked.append(Asked(
                f"Which ancient Egyptian monuments are shaped like the shape on the {s.position}?", "six",
                "pyramid", ("Pyramids", "the pyramids", "a pyramid"), ("sphinx", "tomb"),
            ))
            break
    return asked


def okvqa_image_ids() -> dict[str, list[int]]:
    rng = random.Random(f"{SEED}:okvqa:image_ids")
    drawn = rng.sample(range(1, 581_930), sum(n for _, n in OKVQA_SPLITS.values()))
    ids, start = {}, 0
    for split, (_, count) in OKVQA_SPLITS.items():
        ids[split] = sorted(drawn[start : start + count])
        start += count
    return ids


def build_okvqa(split: str) -> tuple[dict, dict, dict[str, Image.Image]]:
    subtype, _ = OKVQA_SPLITS[split]
    wanted = SUPPORT if split == "train" else QUERY
    ids = okvqa_image_ids()[split]
    questions, annotations, images = [], [], {}
    seconds = wanted - len(ids)  # this many images get a second question: the first that have two
    for image_id in ids:
        scene = make_scene(image_id)
        rng = random.Random(f"{SEED}:okvqa:{image_id}")
        candidates = _okvqa_candidates(scene, rng)
        count = 2 if seconds > 0 and len(candidates) > 1 else 1
        seconds -= count - 1
        for k, asked in enumerate(rng.sample(candidates, count)):
            question_id = image_id * 10 + k
            raws = _answer_texts(asked, rng, n=5, max_same=1, max_wrong=1)  # 5 annotators, each listed twice
            answers = []
            for n, raw in enumerate(raws):
                for copy in range(2):
                    answers.append({"answer_id": 2 * n + copy + 1, "raw_answer": raw, "answer_confidence": "yes",
                                    "answer": okvqa_process(raw)})
            questions.append({"image_id": image_id, "question": asked.question, "question_id": question_id})
            annotations.append({"image_id": image_id, "answer_type": "other", "question_type": asked.kind,
                                "question_id": question_id, "answers": answers})
        images[f"COCO_{subtype}_{image_id:012d}.jpg"] = draw(scene)
    assert len(questions) == wanted, (split, len(questions))
    info = {"description": "Synthetic demo data in the OK-VQA format (generated shapes, not OK-VQA or COCO)",
            "url": "https://okvqa.allenai.org", "version": "1.0", "year": 2024,
            "contributor": "idefics-eval (idefics_eval/demo/make_vqa_family.py)", "date_created": "2024-06-07"}
    license_ = {"name": "Apache License 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}
    questions_json = {"license": license_, "data_subtype": subtype, "task_type": "Open-Ended",
                      "questions": questions, "info": info, "data_type": "mscoco"}
    annotations_json = {"license": license_, "data_subtype": subtype, "annotations": annotations,
                        "info": info, "data_type": "mscoco", "question_types": OKVQA_CATEGORIES}
    return questions_json, annotations_json, images


def write_okvqa(out: Path) -> None:
    for split, (subtype, _) in OKVQA_SPLITS.items():
        questions, annotations, images = build_okvqa(split)
        (out / f"OpenEnded_mscoco_{subtype}_questions.json").write_bytes(_json_bytes(questions))
        (out / f"mscoco_{subtype}_annotations.json").write_bytes(_json_bytes(annotations))
        for name, image in images.items():
            _save(image, out / subtype / name)


# ---------------------------------------------------------------- TextVQA ---------------------------

TEXTVQA_SPLITS = {"train": ("train", 28, 0), "validation": ("val", 10, 34602)}  # (file prefix, images, first id)
WORDS = ("STOP", "OPEN", "EXIT", "SALE", "CAFE", "TAXI", "BANK", "HOTEL", "PIZZA", "BOOKS", "PARK", "MILK",
         "BAKERY", "POST", "GARAGE", "MUSEUM")
DARK, LIGHT = ("black", "blue", "purple", "red", "green"), ("white", "yellow", "orange")
SIGN = (4, 4, 59, 22)  # the sign's box; the number plate sits below it, centred


@dataclass(frozen=True)
class TextScene:
    image_id: str
    scene: Scene  # background and side shapes, drawn with make_data.draw
    sign: str  # the sign's colour
    ink: str  # the letters' colour
    word: str
    number: str


def _font() -> ImageFont.ImageFont:
    """PIL's built-in bitmap font: the same pixels wherever Pillow runs (no FreeType hinting)."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def make_text_scene(image_id: str) -> TextScene:
    rng = random.Random(f"{SEED}:textvqa:scene:{image_id}")
    base = make_scene(_scene_seed(image_id))
    scene = Scene(base.image_id, base.background, tuple(s for s in base.shapes if s.position in ("left", "right")))
    sign = rng.choice([c for c in COLORS if c != scene.background])
    ink = rng.choice(LIGHT if sign in DARK else DARK)
    number = str(rng.choice([rng.randint(1, 9), rng.randint(10, 99), rng.randint(100, 2024)]))
    return TextScene(image_id, scene, sign, ink, rng.choice(WORDS), number)


def _plate(text: TextScene) -> tuple[str, str]:
    """(plate colour, digit colour) of the number plate: white on black or black on white."""
    return ("black", "white") if text.scene.background in LIGHT else ("white", "black")


def draw_text_scene(text: TextScene) -> Image.Image:
    image = draw(text.scene)
    pen = ImageDraw.Draw(image)
    font = _font()
    pen.rectangle(SIGN, fill=COLORS[text.sign])
    left, top, right, bottom = font.getbbox(text.word)
    x = (SIGN[0] + SIGN[2] + 1 - (right - left)) // 2 - left
    y = (SIGN[1] + SIGN[3] + 1 - (bottom - top)) // 2 - top
    pen.text((x, y), text.word, fill=COLORS[text.ink], font=font)
    plate, digits = _plate(text)
    left, top, right, bottom = font.getbbox(text.number)
    width = right - left + 6
    box = ((SIZE - width) // 2, 44, (SIZE - width) // 2 + width - 1, 58)
    pen.rectangle(box, fill=COLORS[plate])
    pen.text((box[0] + 3 - left, 45 + (14 - (bottom - top)) // 2 - top), text.number, fill=COLORS[digits], font=font)
    return image


def _misread(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + rng.choice([c for c in "aeiorstn" if c != word[i]]) + word[i + 1 :]


def _textvqa_candidates(text: TextScene, rng: random.Random) -> list[list[Asked]]:
    """Groups of questions about the text; at most one question per group is asked of an image."""
    word = text.word.lower()
    no_text = "answering does not require reading text in the image"
    reading = (text.word, f"{word}.", f"{text.word.capitalize()}")
    misread = (_misread(word, rng), "unanswerable")
    return [
        [Asked("what does the sign say?", "none of the above", word, reading, misread),
         Asked("what word is written on the sign?", "none of the above", word, reading, misread + (no_text,))],
        [Asked("what number is shown at the bottom?", "none of the above", text.number,
               (f"{text.number}.", f"number {text.number}"), (text.number[::-1] if len(text.number) > 1 else "8", "unanswerable"))],
        [Asked("what color are the letters on the sign?", "none of the above", text.ink,
               (text.ink.capitalize(), f"{text.ink}."), COLOR_CONFUSIONS[text.ink] + (no_text,))],
        [Asked("what is the first letter on the sign?", "none of the above", word[0],
               (text.word[0], f"{word[0]}."), (word[1], "unanswerable")),
         Asked("how many letters are in the word on the sign?", "none of the above", str(len(word)),
               (f"{len(word)}.",), (str(len(word) + 1), str(len(word) - 1)))],
    ]


def textvqa_image_ids() -> dict[str, list[str]]:
    rng = random.Random(f"{SEED}:textvqa:image_ids")
    return {split: [f"{rng.getrandbits(64):016x}" for _ in range(count)] for split, (_, count, _) in TEXTVQA_SPLITS.items()}


def _vqa_format_files(task: str, prefix: str, questions: list, annotations: list) -> tuple[dict, dict]:
    """The top-level layout of OpenFlamingo's `*_vqa_format.json` files."""
    title = {"textvqa": "TextVQA", "vizwiz": "VizWiz"}[task]
    subtype = f"{title}-{'validation' if prefix == 'val' else prefix}"
    info = {"description": f"Synthetic demo data in OpenFlamingo's {title} VQA format (generated, not {title})",
            "url": "http://visualqa.org", "version": "2.0", "year": 2024,
            "contributor": "idefics-eval (idefics_eval/demo/make_vqa_family.py)", "date_created": "07-06-2024"}
    license_ = {"url": "https://www.apache.org/licenses/LICENSE-2.0", "name": "Apache License 2.0"}
    questions_json = {"questions": questions, "info": info, "task_type": "Open-Ended", "data_type": title,
                      "license": license_, "data_subtype": subtype}
    annotations_json = {"annotations": annotations, "info": info, "task_type": title, "license": license_,
                        "data_subtype": subtype}
    return questions_json, annotations_json


def build_textvqa(split: str) -> tuple[dict, dict, dict[str, Image.Image]]:
    prefix, count, first_id = TEXTVQA_SPLITS[split]
    wanted = SUPPORT if split == "train" else QUERY
    questions, annotations, images = [], [], {}
    question_id = first_id
    for i, image_id in enumerate(textvqa_image_ids()[split]):
        text = make_text_scene(image_id)
        rng = random.Random(f"{SEED}:textvqa:questions:{image_id}")
        groups = rng.sample(_textvqa_candidates(text, rng), 2 if i < wanted - count else 1)
        for asked in (rng.choice(group) for group in groups):
            texts = _answer_texts(asked, rng)
            answers = [{"answer": t, "answer_confidence": "yes", "answer_id": n} for n, t in enumerate(texts, 1)]
            questions.append({"question": asked.question, "image_id": image_id, "question_id": question_id})
            annotations.append({"question_id": question_id, "image_id": image_id, "question_type": asked.kind,
                                "answers": answers, "multiple_choice_answer": texts[0]})
            question_id += 1
        images[f"{image_id}.jpg"] = draw_text_scene(text)
    questions_json, annotations_json = _vqa_format_files("textvqa", prefix, questions, annotations)
    return questions_json, annotations_json, images


def write_textvqa(out: Path) -> None:
    for split, (prefix, _, _) in TEXTVQA_SPLITS.items():
        questions, annotations, images = build_textvqa(split)
        (out / f"{prefix}_questions_vqa_format.json").write_bytes(_json_bytes(questions))
        (out / f"{prefix}_annotations_vqa_format.json").write_bytes(_json_bytes(annotations))
        for name, image in images.items():
            _save(image, out / "train_images" / name)  # TextVQA keeps train and val images in train_images/


# ---------------------------------------------------------------- VizWiz ----------------------------

VIZWIZ_SPLITS = {"train": ("train", SUPPORT), "validation": ("val", QUERY)}  # (file prefix and folder, images)
DEGRADED_SHARE = 4  # one photo in DEGRADED_SHARE is blurred or dark
UNANSWERABLE_QUESTIONS = ("What is this?", "What color is this?", "Can you tell me what this is, please?",
                          "What does this say? Thank you.", "What is in front of me?")
GUESSES = ("blurry", "too dark", "nothing", "a blurry picture", "dark", "i can't tell")


@dataclass(frozen=True)
class Photo:
    image_id: str  # the file name, as VizWiz image ids are
    question_id: int
    scene: Scene
    degraded: str | None  # None, "blur" or "dark"


def vizwiz_photos(split: str) -> list[Photo]:
    """The photos of a split, in question-id order, with the quarter that is blurred or dark."""
    prefix, count = VIZWIZ_SPLITS[split]
    rng = random.Random(f"{SEED}:vizwiz:photos:{split}")
    degraded = set(rng.sample(range(count), count // DEGRADED_SHARE))
    photos = []
    for i in range(count):
        image_id = f"VizWiz_{prefix}_{i:08d}.jpg"
        base = make_scene(_scene_seed(image_id))
        scene = Scene(base.image_id, base.background, base.shapes[: rng.choice([1, 1, 2])])
        photos.append(Photo(image_id, i, scene, rng.choice(["blur", "dark"]) if i in degraded else None))
    return photos


def draw_photo(photo: Photo) -> Image.Image:
    image = draw(photo.scene)
    if photo.degraded == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=5))
    if photo.degraded == "dark":
        return ImageEnhance.Brightness(image).enhance(0.12)
    return image


def _vizwiz_candidates(photo: Photo, rng: random.Random) -> list[Asked]:
    scene = photo.scene
    if photo.degraded:
        return [Asked(q, "unanswerable", "unanswerable", (), GUESSES) for q in UNANSWERABLE_QUESTIONS]
    n = len(scene.shapes)
    asked = [
        Asked("What color is the background?", "other", scene.background,
              (scene.background.capitalize(), f"{scene.background}."), COLOR_CONFUSIONS[scene.background] + ("unanswerable",)),
        Asked("How many things are in this picture?", "number", str(n), (f"{n}.",), (str(n + 1), "unanswerable")),
    ]
    if n == 1:
        (shape,) = scene.shapes
        other_color = rng.choice([c for c in COLORS if c not in (shape.color, scene.background)])
        asked_color = rng.choice([shape.color, other_color])
        yes_no = "yes" if asked_color == shape.color else "no"
        asked += [
            Asked("What color is this?", "other", shape.color, (shape.color.capitalize(), f"It is {shape.color}."),
                  COLOR_CONFUSIONS[shape.color]),
            Asked("What is this? Thank you.", "other", shape.kind, (f"a {shape.kind}", shape.kind.capitalize()),
                  ("shape", "unanswerable")),
            Asked(f"Is this {asked_color}?", "yes/no", yes_no, (yes_no.capitalize(),), ("no" if yes_no == "yes" else "yes",)),
        ]
    return asked


def build_vizwiz(split: str) -> tuple[dict, dict, dict[str, Image.Image]]:
    prefix, _ = VIZWIZ_SPLITS[split]
    questions, annotations, images = [], [], {}
    for photo in vizwiz_photos(split):
        rng = random.Random(f"{SEED}:vizwiz:questions:{photo.image_id}")
        asked = rng.choice(_vizwiz_candidates(photo, rng))
        texts = _answer_texts(asked, rng, unanimous=0.1, max_wrong=4 if photo.degraded else 2)
        confidences = rng.choices(["yes", "maybe", "no"], weights=[75, 17, 8], k=10)
        answers = [{"answer": t, "answer_confidence": c} for t, c in zip(texts, confidences)]
        questions.append({"question": asked.question, "image_id": photo.image_id, "question_id": photo.question_id})
        annotations.append({"question_id": photo.question_id, "image_id": photo.image_id, "question_type": asked.kind,
                            "answers": answers, "multiple_choice_answer": texts[0]})
        images[photo.image_id] = draw_photo(photo)
    questions_json, annotations_json = _vqa_format_files("vizwiz", prefix, questions, annotations)
    return questions_json, annotations_json, images


def write_vizwiz(out: Path) -> None:
    for split, (prefix, _) in VIZWIZ_SPLITS.items():
        questions, annotations, images = build_vizwiz(split)
        (out / f"{prefix}_questions_vqa_format.json").write_bytes(_json_bytes(questions))
        (out / f"{prefix}_annotations_vqa_format.json").write_bytes(_json_bytes(annotations))
        for name, image in images.items():
            _save(image, out / prefix / name)


WRITERS: dict[str, Callable[[Path], None]] = {"okvqa": write_okvqa, "textvqa": write_textvqa, "vizwiz": write_vizwiz}


def write(out: Path, tasks: tuple[str, ...] = TASKS) -> None:
    """Write each task's two splits under `out/<task>/`."""
    for task in tasks:
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        WRITERS[task](folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"parent folder of the tasks' folders (default: {DEFAULT_OUT})")
    parser.add_argument("--task", action="append", choices=TASKS, help="generate only this task (repeatable; default: all)")
    args = parser.parse_args(argv)
    tasks = tuple(args.task) if args.task else TASKS
    write(args.out, tasks)
    print(f"wrote synthetic demo data for {', '.join(tasks)} to {args.out}")


if __name__ == "__main__":
    main()
