"""Generate the bundled `--demo` sample data: a tiny, synthetic VQAv2 in the official VQA v2 layout.

The data lets `idefics-eval --demo` (and the tests) run the whole VQAv2 pipeline offline: the files
have the exact names, JSON keys and image layout of the visualqa.org release that `tasks/vqav2.yaml`
reads, but every image is a generated 64x64 scene (a plain background with 1-4 coloured circles,
squares and triangles on the left/right/top/bottom) and every question is asked from a template
about that scene. None of it comes from VQA v2 or COCO.

Each question has 10 simulated human answers that look like real annotations: mostly the correct
answer, with surface variants that answer normalisation must undo ("Red", "red.", "two", "the
circle", "Yes!"), a few wrong answers, and some questions where all 10 agree. The correct answer
is always the strictly most frequent string, so `multiple_choice_answer` is the truth.

Everything is derived from `SEED` and the image id, so the output is byte-for-byte reproducible:

    python -m idefics_eval.demo.make_data [--out DIR]

writes into `idefics_eval/demo/data/vqav2/` by default. Commit the script and its output together.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SEED = 20240521
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "vqav2"
SIZE = 64
HALF = 8  # half the side of a shape's bounding box, in pixels

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "purple": (140, 50, 170),
    "orange": (250, 140, 20),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"left": (14, 32), "right": (50, 32), "top": (32, 14), "bottom": (32, 50)}  # shape centres

# split -> (data_subtype, number of images); file names follow tasks/vqav2.yaml.
SPLITS = {"train": ("train2014", 48), "validation": ("val2014", 16)}
QUESTIONS_PER_IMAGE = 2
# Answer types per 16 questions, close to VQA v2's mix (38% yes/no, 12% number, 50% other) with a
# few more counting questions; each split is a shuffled whole number of these blocks.
ANSWER_TYPE_BLOCK = ["yes/no"] * 6 + ["number"] * 3 + ["other"] * 7
INFO = {
    "description": "Synthetic demo data in the VQA v2 format (generated shapes, not VQA v2 or COCO)",
    "url": "https://visualqa.org",
    "version": "2.0",
    "year": 2024,
    "contributor": "idefics-eval (idefics_eval/demo/make_data.py)",
    "date_created": "2024-05-21 00:00:00",
}
LICENSE = {"name": "Apache License 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
COLOR_CONFUSIONS = {
    "red": ("orange", "pink"),
    "orange": ("red", "yellow"),
    "yellow": ("orange", "gold"),
    "green": ("blue", "teal"),
    "blue": ("purple", "navy"),
    "purple": ("blue", "pink"),
    "white": ("gray", "silver"),
    "black": ("gray", "dark blue"),
}
SHAPE_CONFUSIONS = {
    "circle": ("round", "oval", "ball"),
    "square": ("rectangle", "box", "diamond"),
    "triangle": ("pyramid", "arrow", "square"),
}


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    color: str  # one of COLORS
    position: str  # one of POSITIONS


@dataclass(frozen=True)
class Scene:
    image_id: int
    background: str
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class Question:
    question: str
    question_type: str
    answer_type: str  # "yes/no", "number" or "other"
    answer: str  # the correct answer, in normalised form


def image_ids() -> dict[str, list[int]]:
    """COCO-like image ids per split, disjoint between splits."""
    rng = random.Random(f"{SEED}:image_ids")
    drawn = rng.sample(range(100_000, 600_000), sum(n for _, n in SPLITS.values()))
    ids, start = {}, 0
    for split, (_, count) in SPLITS.items():
        ids[split] = sorted(drawn[start : start + count])
        start += count
    return ids


def make_scene(image_id: int) -> Scene:
    """The scene drawn in image `image_id`: a background and 1-4 shapes in distinct positions."""
    rng = random.Random(f"{SEED}:scene:{image_id}")
    background = rng.choice(list(COLORS))
    positions = rng.sample(list(POSITIONS), rng.randint(1, 4))
    shape_colors = [c for c in COLORS if c != background]
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(shape_colors), p) for p in sorted(positions, key=list(POSITIONS).index))
    return Scene(image_id, background, shapes)


def draw(scene: Scene, background_rgb: tuple[int, int, int] | None = None, offset: tuple[int, int] = (0, 0),
         half: int = HALF) -> Image.Image:
    """Render a scene as a 64x64 RGB image with PIL.ImageDraw (the canary's world also draws on
    other backgrounds, moves shapes by `offset` pixels and draws them `half` pixels from centre to side)."""
    image = Image.new("RGB", (SIZE, SIZE), background_rgb or COLORS[scene.background])
    pen = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x, y = POSITIONS[shape.position]
        x, y = x + offset[0], y + offset[1]
        fill = COLORS[shape.color]
        box = (x - half, y - half, x + half, y + half)
        if shape.kind == "circle":
            pen.ellipse(box, fill=fill)
        elif shape.kind == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(x, y - half), (x - half, y + half - 1), (x + half, y + half - 1)], fill=fill)
    return image


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _candidates(scene: Scene, rng: random.Random) -> dict[str, list[Question]]:
    """Every template that has an unambiguous answer for this scene, grouped by answer type."""
    at = {s.position: s for s in scene.shapes}
    kinds = Counter(s.kind for s in scene.shapes)
    unique = {s.kind: s for s in scene.shapes if kinds[s.kind] == 1}
    shape = rng.choice(scene.shapes)
    pos = rng.choice(list(at))
    any_pos = rng.choice(list(POSITIONS))
    kind = rng.choice(SHAPES)
    # Half the "is there" questions ask about a shape that is there, half about a random one.
    color, asked = (shape.color, shape.kind) if rng.random() < 0.5 else (rng.choice(list(COLORS)), kind)
    other = [
        Question("What color is the background?", "what color is the", "other", scene.background),
        Question(f"What color is the shape on the {pos}?", "what color is the", "other", at[pos].color),
        Question(f"What shape is on the {pos}?", "what shape is", "other", at[pos].kind),
    ]
    if shape.kind in unique:
        other.append(Question(f"What color is the {shape.kind}?", "what color is the", "other", shape.color))
    yes_no_questions = [
        Question(
            f"Is there a {color} {asked}?", "is there a", "yes/no",
            _yes_no(any(s.color == color and s.kind == asked for s in scene.shapes)),
        ),
        Question(f"Is there a shape on the {any_pos}?", "is there a", "yes/no", _yes_no(any_pos in at)),
    ]
    if shape.kind in unique:
        color2 = rng.choice([shape.color, rng.choice(list(COLORS))])
        yes_no_questions.append(Question(f"Is the {shape.kind} {color2}?", "is the", "yes/no", _yes_no(shape.color == color2)))
    number = [
        Question("How many shapes are there?", "how many", "number", str(len(scene.shapes))),
        Question(f"How many {kind}s are there?", "how many", "number", str(kinds[kind])),
    ]
    return {"yes/no": yes_no_questions, "number": number, "other": other}


def make_questions(scene: Scene, answer_types: list[str]) -> list[Question]:
    """One distinct question about the scene per requested answer type."""
    rng = random.Random(f"{SEED}:questions:{scene.image_id}")
    candidates = _candidates(scene, rng)
    questions: list[Question] = []
    for answer_type in answer_types:
        question = rng.choice([q for q in candidates[answer_type] if q not in questions])
        questions.append(question)
    return questions


def _variants(question: Question) -> tuple[list[str], list[str]]:
    """(answers that normalise to the truth, plausible wrong answers) for a question."""
    a = question.answer
    if question.answer_type == "yes/no":
        return [a.capitalize(), f"{a}.", f"{a.capitalize()}!"], ["no" if a == "yes" else "yes", "yeah" if a == "yes" else "nope"]
    if question.answer_type == "number":
        n = int(a)
        same = [NUMBER_WORDS[n], NUMBER_WORDS[n].capitalize(), f"{a}."] + (["none"] if n == 0 else [])
        return same, [str(n + 1)] + ([str(n - 1)] if n > 0 else [])
    if a in COLORS:
        return [a.capitalize(), f"{a}.", f"{a.capitalize()}."], [*COLOR_CONFUSIONS[a], f"dark {a}", f"light {a}"]
    return [f"a {a}", f"the {a}", a.capitalize(), f"{a}."], list(SHAPE_CONFUSIONS[a])


def human_answers(question: Question, rng: random.Random) -> list[dict]:
    """10 simulated annotator answers; the truth is always the strictly most frequent string."""
    if rng.random() < 0.25:  # unanimous
        texts = [question.answer] * 10
        confidences = ["yes"] * 10
    else:
        same, wrong = _variants(question)
        n_same, n_wrong = rng.randint(1, 3), rng.choice([0, 0, 1, 1, 2])  # truth keeps >= 5 of 10
        texts = [question.answer] * (10 - n_same - n_wrong)
        texts += [rng.choice(same) for _ in range(n_same)] + [rng.choice(wrong) for _ in range(n_wrong)]
        confidences = rng.choices(["yes", "maybe", "no"], weights=[85, 12, 3], k=10 - n_wrong)
        confidences += rng.choices(["yes", "maybe", "no"], weights=[20, 50, 30], k=n_wrong)
        order = list(range(10))
        rng.shuffle(order)
        texts, confidences = [texts[i] for i in order], [confidences[i] for i in order]
    return [{"answer": t, "answer_confidence": c, "answer_id": i} for i, (t, c) in enumerate(zip(texts, confidences), 1)]


def build_split(split: str) -> tuple[dict, dict, dict[int, Scene]]:
    """(questions JSON, annotations JSON, scenes by image id) for "train" or "validation"."""
    subtype, _ = SPLITS[split]
    questions, annotations, scenes = [], [], {}
    ids = image_ids()[split]
    answer_types = ANSWER_TYPE_BLOCK * (len(ids) * QUESTIONS_PER_IMAGE // len(ANSWER_TYPE_BLOCK))
    random.Random(f"{SEED}:answer_types:{split}").shuffle(answer_types)
    for i, image_id in enumerate(ids):
        scene = scenes[image_id] = make_scene(image_id)
        rng = random.Random(f"{SEED}:answers:{image_id}")
        wanted = answer_types[i * QUESTIONS_PER_IMAGE : (i + 1) * QUESTIONS_PER_IMAGE]
        for k, question in enumerate(make_questions(scene, wanted)):
            question_id = image_id * 1000 + k
            answers = human_answers(question, rng)
            most_frequent = Counter(a["answer"] for a in answers).most_common(1)[0][0]
            questions.append({"image_id": image_id, "question": question.question, "question_id": question_id})
            annotations.append({
                "question_type": question.question_type,
                "multiple_choice_answer": most_frequent,
                "answers": answers,
                "image_id": image_id,
                "answer_type": question.answer_type,
                "question_id": question_id,
            })
    questions_json = {
        "info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": LICENSE,
        "data_subtype": subtype, "questions": questions,
    }
    annotations_json = {"info": INFO, "license": LICENSE, "data_subtype": subtype, "data_type": "mscoco", "annotations": annotations}
    return questions_json, annotations_json, scenes


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode("utf-8")


def write(out: Path) -> None:
    """Write both splits under `out` in the official VQA v2 file layout."""
    for split, (subtype, _) in SPLITS.items():
        questions, annotations, scenes = build_split(split)
        (out / subtype).mkdir(parents=True, exist_ok=True)
        (out / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_bytes(_json_bytes(questions))
        (out / f"v2_mscoco_{subtype}_annotations.json").write_bytes(_json_bytes(annotations))
        for image_id, scene in scenes.items():
            draw(scene).save(out / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote synthetic VQA v2 demo data to {out}")


if __name__ == "__main__":
    main()
