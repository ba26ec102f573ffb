"""Generate the bundled `--demo` data of the closed tasks: Hateful Memes, VisDial, ScienceQA, Winoground.

Each task's folder has the exact file names, JSON keys and image layout of its official release, as
`tasks/<task>.yaml` reads them, but every picture is a generated 64x64 scene of coloured circles,
squares and triangles (drawn by `make_data.draw`) and every text is made from that scene:

* hatefulmemes: memes with their text rendered on them (PIL's built-in bitmap font). A meme is
  "hateful" when its text is hostile to a kind of shape that the picture shows; the same hostile text
  over a picture without that shape is a benign confounder, so the label needs both text and image.
* visdial: 10-round dialogs about a scene, 100 short answer options per round, and for val the
  dense relevance of every option of one round (1 for the answer, less for its paraphrases).
* scienceqa: multiple-choice questions about the scenes (2-4 choices), a few text-only problems that
  the reader must skip, and pid_splits.json.
* winoground: caption pairs with the same words in another order ("a red circle left of a blue
  square" / "a blue circle left of a red square"), each with the picture it describes.

None of it comes from the real datasets. Everything derives from `SEED`, so the output is
byte-for-byte reproducible:

    python -m idefics_eval.demo.make_closed_data [--out DIR]

writes `DIR/<task>/` for the four tasks (default: `idefics_eval/demo/data/`). Commit the script and
its output together.
"""

from __future__ import annotations

import argparse
import json
import random
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .make_data import COLORS, POSITIONS, SHAPES, SIZE, Scene, Shape, draw, make_scene

SEED = 20240607
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
TASKS = ("hatefulmemes", "visdial", "scienceqa", "winoground")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(map(str, (SEED, *parts))))


def _json_bytes(data: Any, compact: bool = False) -> bytes:
    separators = (",", ":") if compact else None
    return (json.dumps(data, separators=separators) + "\n").encode("utf-8")


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)


def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


def _disjoint_ids(name: str, sizes: dict[str, int], low: int, high: int) -> dict[str, list[int]]:
    drawn = _rng(name, "ids").sample(range(low, high), sum(sizes.values()))
    ids, start = {}, 0
    for split, count in sizes.items():
        ids[split] = sorted(drawn[start : start + count])
        start += count
    return ids


def a(phrase: str) -> str:
    """The phrase with its indefinite article ("an orange circle", "a red square")."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _other_colors(*excluded: str) -> list[str]:
    return [c for c in COLORS if c not in excluded]


# --- Hateful Memes -------------------------------------------------------------------------------------

MEME_SPLITS = {"train": 40, "dev_seen": 12, "test_seen": 16}  # file stem -> memes
HOSTILE = ("no {k}s allowed in here", "{k}s ruin everything", "send the {k}s away", "we do not want {k}s")
FRIENDLY = ("{k}s make my day", "i love a good {k}", "look at this nice {k}", "best {k} ever")
MEME_KINDS = ["hateful", "hateful", "confounder", "friendly", "friendly"]  # 40% hateful, as dev/test_seen


def meme_scene(meme_id: int) -> Scene:
    """A background and one or two shapes at mid-height, clear of the text at the top and bottom."""
    rng = _rng("meme", meme_id)
    background = rng.choice(list(COLORS))
    positions = rng.sample(["left", "right"], rng.randint(1, 2))
    shapes = tuple(
        Shape(rng.choice(SHAPES), rng.choice(_other_colors(background)), p) for p in ("left", "right") if p in positions
    )
    return Scene(meme_id, background, shapes)


def meme_text(meme_id: int, kind: str, scene: Scene) -> tuple[str, int]:
    """(text, label) for a meme of `kind`: hateful, confounder (hostile text, shape not shown) or friendly."""
    rng = _rng("meme-text", meme_id)
    shown = sorted({s.kind for s in scene.shapes})
    if kind == "confounder":
        return rng.choice(HOSTILE).format(k=rng.choice([k for k in SHAPES if k not in shown])), 0
    target = rng.choice(shown)
    if kind == "hateful":
        return rng.choice(HOSTILE).format(k=target), 1
    return rng.choice(FRIENDLY).format(k=target), 0


def render_meme(scene: Scene, text: str) -> Image.Image:
    """The scene with its text in white (black shadow): two lines at the top, the rest at the bottom."""
    image = draw(scene)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default_imagefont()  # the bitmap font: the same pixels on every machine
    lines = textwrap.wrap(text, 10)
    assert len(lines) <= 4, text
    rows = [(line, 1 + 11 * i) for i, line in enumerate(lines[:2])]
    bottom = lines[2:]
    rows += [(line, SIZE - 11 * (len(bottom) - i) - 1) for i, line in enumerate(bottom)]
    for line, y in rows:
        width = pen.textlength(line, font=font)
        x = int((SIZE - width) // 2)
        pen.text((x + 1, y + 1), line, fill=(0, 0, 0), font=font)
        pen.text((x, y), line, fill=(255, 255, 255), font=font)
    return image


def write_hatefulmemes(out: Path) -> None:
    ids = _disjoint_ids("memes", MEME_SPLITS, 1000, 99999)
    for split, count in MEME_SPLITS.items():
        kinds = (MEME_KINDS * count)[:count]
        _rng("meme-kinds", split).shuffle(kinds)
        records = []
        for meme_id, kind in zip(ids[split], kinds):
            scene = meme_scene(meme_id)
            text, label = meme_text(meme_id, kind, scene)
            image = f"img/{meme_id:05d}.png"
            _save_png(render_meme(scene, text), out / image)
            records.append({"id": meme_id, "img": image, "label": label, "text": text})
        (out / f"{split}.jsonl").write_bytes(_jsonl_bytes(records))


# --- VisDial -------------------------------------------------------------------------------------------

DIALOG_SPLITS = {"train": 32, "val": 12}
ROUNDS = 10
OPTIONS = 100
TRAIN_IN_COCO_VAL = 8  # VisDial train dialogs are about COCO train2014 and val2014 images
YES = ("yes", "yes it is", "yes there is", "yes there are")
NO = ("no", "no it isn't", "no there isn't", "no there aren't")


def answer_pool() -> list[str]:
    """Every answer text of the demo (the `answers` list of both dialog files): at least 100 short strings."""
    pool = list(COLORS) + [f"it's {c}" for c in COLORS] + [f"light {c}" for c in COLORS] + [f"dark {c}" for c in COLORS]
    pool += [f"a {k}" for k in SHAPES] + list(SHAPES) + [a(f"{c} {k}") for c in COLORS for k in SHAPES]
    pool += [str(n) for n in range(6)] + list(NUMBER_WORDS)
    pool += [*YES, *NO, "i think so", "i don't think so", "maybe", "not sure"]
    pool += ["i can't tell", "there is nothing there", "no it's a drawing", "it looks like a drawing", "no people",
             "just shapes", "nothing else", "on the left", "on the right", "at the top", "at the bottom",
             "i can't see any", "it's hard to say", "it looks plain", "in the middle", "all of them"]
    assert len(pool) == len(set(pool)) and len(pool) >= OPTIONS
    return pool


def caption(scene: Scene) -> str:
    names = [a(f"{s.color} {s.kind}") for s in scene.shapes]
    shapes = " and ".join(names) if len(names) <= 2 else f"{len(names)} colorful shapes"
    return f"{shapes} on a {scene.background} background"


def dialog_questions(scene: Scene) -> list[tuple[str, str]]:
    """Ten (question, answer) rounds about the scene, in the style of VisDial (no question marks)."""
    at = {s.position: s for s in scene.shapes}
    kinds = Counter(s.kind for s in scene.shapes)
    pool = [
        ("what color is the background", scene.background),
        ("how many shapes are there", str(len(scene.shapes))),
        ("are there any people", "no"),
        ("is this a photo", "no it's a drawing"),
        ("is it daytime", "i can't tell"),
    ]
    pool += [(f"is there a {k}", "yes" if kinds[k] else "no") for k in SHAPES]
    for position in POSITIONS:
        if position in at:
            pool += [(f"what shape is on the {position}", f"a {at[position].kind}"),
                     (f"what color is the shape on the {position}", at[position].color)]
        else:
            pool.append((f"is there anything on the {position}", "no"))
    rng = _rng("dialog", scene.image_id)
    return rng.sample(pool, ROUNDS)


def _meaning(answer: str) -> str:
    """What an answer says, for relevance: paraphrases share a meaning."""
    for prefix in ("it's ", "a "):
        if answer.startswith(prefix) and answer[len(prefix):] in (*COLORS, *SHAPES):
            answer = answer[len(prefix):]
    if answer in NUMBER_WORDS:
        return str(NUMBER_WORDS.index(answer))
    return "yes" if answer in YES else "no" if answer in NO else answer


def relevance(option: str, answer: str) -> float:
    """Dense relevance of an option to the round's answer: 1 for it, 0.8 for a paraphrase, less for near misses."""
    if option == answer:
        return 1.0
    if _meaning(option) == _meaning(answer):
        return 0.8
    meaning = _meaning(answer)
    near = {"yes": ("i think so",), "no": ("i don't think so",)}.get(meaning, ())
    if option in near or option in (f"light {meaning}", f"dark {meaning}"):
        return 0.4
    if meaning in SHAPES and option.endswith(f" {meaning}"):
        return 0.2
    return 0.0


def build_dialogs(split: str, image_ids: list[int]) -> tuple[dict, list[dict]]:
    """(the dialogs JSON, the dense annotations) of one split; dense annotations only for val."""
    pool = answer_pool()
    answer_index = {a: i for i, a in enumerate(pool)}
    questions: dict[str, int] = {}
    dialogs, dense = [], []
    for image_id in image_ids:
        scene = make_scene(image_id)
        rng = _rng("options", image_id)
        rounds = []
        for question, answer in dialog_questions(scene):
            options = rng.sample([a for a in pool if a != answer], OPTIONS - 1)
            gt_index = rng.randrange(OPTIONS)
            options.insert(gt_index, answer)
            rounds.append({
                "question": questions.setdefault(question, len(questions)),
                "answer": answer_index[answer],
                "answer_options": [answer_index[o] for o in options],
                "gt_index": gt_index,
            })
        dialogs.append({"image_id": image_id, "caption": caption(scene), "dialog": rounds})
        if split == "val":
            round_id = _rng("dense-round", image_id).randint(1, ROUNDS)
            scored = rounds[round_id - 1]
            gt = pool[scored["answer"]]
            dense.append({
                "image_id": image_id,
                "round_id": round_id,
                "gt_relevance": [relevance(pool[o], gt) for o in scored["answer_options"]],
            })
    data = {"version": "1.0", "split": f"{split}2018", "data": {"questions": list(questions), "answers": pool, "dialogs": dialogs}}
    return data, dense


def in_coco_val(train_ids: list[int]) -> set[int]:
    """The train dialogs whose image is a COCO val2014 one (VisDial train uses COCO train2014 and val2014)."""
    return set(_rng("coco-val").sample(train_ids, TRAIN_IN_COCO_VAL))


def visdial_image_file(split: str, image_id: int, coco_val: bool) -> str:
    if split == "val":
        return f"VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg"
    subtype = "val2014" if coco_val else "train2014"
    return f"{subtype}/COCO_{subtype}_{image_id:012d}.jpg"


def write_visdial(out: Path) -> None:
    ids = _disjoint_ids("visdial", DIALOG_SPLITS, 600_000, 700_000)
    coco_val = in_coco_val(ids["train"])
    for split in DIALOG_SPLITS:
        data, dense = build_dialogs(split, ids[split])
        (out / f"visdial_1.0_{split}.json").write_bytes(_json_bytes(data, compact=True))
        if dense:
            (out / f"visdial_1.0_{split}_dense_annotations.json").write_bytes(_json_bytes(dense, compact=True))
        for image_id in ids[split]:
            _save_jpeg(draw(make_scene(image_id)), out / visdial_image_file(split, image_id, image_id in coco_val))


# --- ScienceQA -----------------------------------------------------------------------------------------

PROBLEM_SPLITS = {"train": (40, 4), "val": (12, 2), "test": (14, 2)}  # split -> (with an image, text-only)
HINTS = ("", "", "Look at the picture of colored shapes.", "Shapes in the picture can be circles, squares or triangles.")
LECTURE = "A shape is a figure with an outline. Circles have no corners, squares have four and triangles have three."


def problem_scene(pid: int) -> Scene:
    """The picture of an image problem (scene ids apart from the other tasks' image ids)."""
    return make_scene(700_000 + pid)


def _choice_problem(rng: random.Random, correct: str, wrong: list[str], count: int) -> tuple[list[str], int]:
    """`count` shuffled choices: the correct one and `count - 1` of the wrong ones; and the correct index."""
    choices = [correct, *rng.sample(wrong, count - 1)]
    rng.shuffle(choices)
    return choices, choices.index(correct)


def image_problem(pid: int, scene: Scene) -> dict[str, Any]:
    """A multiple-choice question about the scene, with ScienceQA's fields."""
    rng = _rng("problem", pid)
    at = {s.position: s for s in scene.shapes}
    kinds = Counter(s.kind for s in scene.shapes)
    position = rng.choice(list(at))
    shape = rng.choice(scene.shapes)
    color, kind = (shape.color, shape.kind) if rng.random() < 0.5 else (rng.choice(list(COLORS)), rng.choice(SHAPES))
    present = any(s.color == color and s.kind == kind for s in scene.shapes)
    count = len(scene.shapes)
    # (category, question, correct choice, wrong choices, number of choices, solution)
    templates = [
        ("Identify shapes", f"Which shape is on the {position} of the picture?", at[position].kind,
         [k for k in SHAPES if k != at[position].kind], 3, f"The shape on the {position} is {a(at[position].kind)}."),
        ("Identify colors", "What is the color of the background?", scene.background,
         _other_colors(scene.background), 4, f"The background is {scene.background}."),
        ("Count shapes", "How many shapes are in the picture?", str(count),
         [str(n) for n in range(1, 6) if n != count], 4, f"The picture shows {count} shape{'s' * (count > 1)}."),
        ("Identify colors", f"Is there {a(f'{color} {kind}')} in the picture?", "yes" if present else "no",
         ["no" if present else "yes"], 2, f"The picture has {a(f'{color} {kind}') if present else f'no {color} {kind}'}."),
    ]
    if kinds[shape.kind] == 1:
        templates.append(("Identify colors", f"Which color is the {shape.kind}?", shape.color,
                          _other_colors(shape.color, scene.background), 3, f"The {shape.kind} is {shape.color}."))
    category, question, correct, wrong, choices_count, solution = rng.choice(templates)
    choices, answer = _choice_problem(rng, correct, wrong, choices_count)
    return {
        "question": question, "choices": choices, "answer": answer, "hint": rng.choice(HINTS), "image": "image.png",
        "task": "closed choice", "grade": rng.choice(["grade1", "grade2"]), "subject": "natural science",
        "topic": "shapes", "category": category, "skill": category.lower(), "lecture": LECTURE, "solution": solution,
    }


def text_problem(pid: int) -> dict[str, Any]:
    """A text-only problem (no image): the reader must leave it out."""
    rng = _rng("text-problem", pid)
    color, kind = rng.choice(list(COLORS)), rng.choice(SHAPES)
    choices, answer = _choice_problem(rng, color, [kind], 2)
    return {
        "question": "Which word names a color?", "choices": choices, "answer": answer, "hint": "", "image": None,
        "task": "closed choice", "grade": "grade1", "subject": "language science", "topic": "vocabulary",
        "category": "Categories", "skill": "categories", "lecture": "Some words name colors and some name shapes.",
        "solution": f"{color.capitalize()} is a color.",
    }


def write_scienceqa(out: Path) -> None:
    sizes = {split: sum(counts) for split, counts in PROBLEM_SPLITS.items()}
    ids = _disjoint_ids("scienceqa", sizes, 1, 21209)
    problems: dict[int, dict[str, Any]] = {}
    splits: dict[str, list[str]] = {}
    for split, (with_image, _) in PROBLEM_SPLITS.items():
        pids = list(ids[split])
        _rng("text-only", split).shuffle(pids)
        for n, pid in enumerate(pids):
            if n < with_image:
                scene = problem_scene(pid)
                problems[pid] = image_problem(pid, scene) | {"split": split}
                _save_png(draw(scene), out / "images" / split / str(pid) / "image.png")
            else:
                problems[pid] = text_problem(pid) | {"split": split}
        splits[split] = [str(pid) for pid in ids[split]]
    splits["trainval"] = splits["train"] + splits["val"]
    for split in PROBLEM_SPLITS:
        splits[f"mini{split}"] = splits[split][:4]
    (out / "problems.json").write_bytes(_json_bytes({str(pid): problems[pid] for pid in sorted(problems)}))
    (out / "pid_splits.json").write_bytes(_json_bytes(splits))


# --- Winoground ----------------------------------------------------------------------------------------

PAIR_KINDS = ["colors"] * 5 + ["shapes"] * 4 + ["relation"] * 3


def winoground_pair(example_id: int, kind: str) -> tuple[tuple[str, str], tuple[Scene, Scene], dict[str, Any]]:
    """(captions, scenes, tags) of one example: caption k describes scene k, with the same words."""
    rng = _rng("winoground", example_id)
    first, second = rng.sample(list(COLORS), 2)
    background = rng.choice(_other_colors(first, second))
    k1, k2 = rng.sample(SHAPES, 2)

    def scene(index: int, *shapes: Shape) -> Scene:
        return Scene(example_id * 2 + index, background, shapes)

    if kind == "colors":
        captions = tuple(f"{a(f'{x} {k1}')} left of {a(f'{y} {k2}')}" for x, y in ((first, second), (second, first)))
        scenes = (scene(0, Shape(k1, first, "left"), Shape(k2, second, "right")),
                  scene(1, Shape(k1, second, "left"), Shape(k2, first, "right")))
        tags = {"tag": "Object", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}
    elif kind == "shapes":
        captions = (f"a {k1} above a {k2}", f"a {k2} above a {k1}")
        scenes = (scene(0, Shape(k1, first, "top"), Shape(k2, first, "bottom")),
                  scene(1, Shape(k2, first, "top"), Shape(k1, first, "bottom")))
        tags = {"tag": "Object", "secondary_tag": "Symbolic", "num_main_preds": 1, "collapsed_tag": "Object"}
    else:
        captions = (f"a {k1} is above and a {k2} is below", f"a {k1} is below and a {k2} is above")
        scenes = (scene(0, Shape(k1, first, "top"), Shape(k2, second, "bottom")),
                  scene(1, Shape(k1, first, "bottom"), Shape(k2, second, "top")))
        tags = {"tag": "Relation", "secondary_tag": "", "num_main_preds": 2, "collapsed_tag": "Relation"}
    assert sorted(captions[0].split()) == sorted(captions[1].split())
    return captions, scenes, tags


def write_winoground(out: Path) -> None:
    kinds = list(PAIR_KINDS)
    _rng("winoground-kinds").shuffle(kinds)
    records = []
    for example_id, kind in enumerate(kinds):
        captions, scenes, tags = winoground_pair(example_id, kind)
        names = [f"ex_{example_id}_img_{k}" for k in (0, 1)]
        for name, scene in zip(names, scenes):
            _save_png(draw(scene), out / "images" / f"{name}.png")
        records.append({"id": example_id, "image_0": names[0], "image_1": names[1],
                        "caption_0": captions[0], "caption_1": captions[1], **tags})
    (out / "examples.jsonl").write_bytes(_jsonl_bytes(records))


WRITERS: dict[str, Callable[[Path], None]] = {
    "hatefulmemes": write_hatefulmemes,
    "visdial": write_visdial,
    "scienceqa": write_scienceqa,
    "winoground": write_winoground,
}


def write(out: Path, tasks: tuple[str, ...] = TASKS) -> None:
    for task in tasks:
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        WRITERS[task](folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--task", choices=TASKS, action="append", help="only this task (repeatable; default: all)")
    args = parser.parse_args(argv)
    write(args.out, tuple(args.task or TASKS))
    print(f"wrote synthetic {', '.join(args.task or TASKS)} demo data to {args.out}")


if __name__ == "__main__":
    main()
