"""The canary's synthetic world: training episodes and the shot-dependent `canary_words` task.

The images are the bundled demo data's own kinds (idefics_eval/demo): scenes of coloured circles,
squares and triangles (VQAv2, COCO captions) and drawings of ten ImageNet classes, drawn from seeds
the demo data does not use. One more kind exists only here: a single shape on a gray background,
named by a made-up word (`WORDS`).

The naming game is what makes the canary a few-shot learner. Its shots name single shapes by
colour with made-up words, paired with the colours anew in every episode: the same word means red
in one episode and blue in the next. A word alone says nothing; only the shot whose *image* has the
query's colour tells the query's name. So the model has to read each shot's image through the
cross-attention, tie it to the word after it, and match it to the query's image. A colour may be
renamed half way (the latest name counts), so the shots nearest the query weigh most. The
`canary_words` task fixes one naming for its support set; 0-shot the model can only guess.

Episodes are rendered with the project's own prompt templates (`prompts/`) and turned into token ids
exactly as the harness does (`Prompt.processor_text`, `models.idefics.image_attention_mask`), so the canary
learns the very layout the evaluation feeds it, and a change in that layout shows up as a score drop.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..demo import make_captioning, make_classification, make_data
from ..demo.make_data import COLORS, POSITIONS, SHAPES, Scene, Shape
from ..examples import Example
from ..prompts import IMAGE, PromptTemplate, load_template
from ..tasks import builtin_dir

SEED = 20261202
# Made-up words: none is an English word the other tasks use, each one token in the canary's tokenizer.
WORDS = (
    "blick", "dax", "wug", "fep", "toma", "zorp", "kiki", "bouba", "gazzer", "lorp", "mib", "nork",
    "pilk", "quor", "rull", "sarn", "tiv", "vock", "wem", "yorn", "zib", "glim", "frell", "snup",
    "drock", "plin", "teeb", "morf", "hask", "jund", "kesk", "vurn",
)
WORDS_QUESTION = "What is this shape called?"
CODE = WORDS[:8]  # the naming game's words
TASK_NAMES = dict(zip(COLORS, ("toma", "dax", "kiki", "blick", "bouba", "wug", "zorp", "fep")))  # canary_words' naming
SHAPE_SHIFTS = {"circle": 0, "square": 3, "triangle": 5}  # the by-shape variant: names rotate with the shape


def code_word(color: str, shift: int) -> str:
    """canary_words' name of a colour: TASK_NAMES, rotated by `shift` colours (the by-shape variant)."""
    colors = list(COLORS)
    return TASK_NAMES[colors[(colors.index(color) + shift) % len(colors)]]
COLOR_QUESTION = "What color is the shape?"  # the same single shapes, named by their colour
GRAY = (128, 128, 128)
TASK_SPLITS = {"train": ("train2014", 12), "validation": ("val2014", 2)}  # images per (colour, shape)


@dataclass(frozen=True)
class PoolImage:
    """A training image by its index in the pre-rendered pool (stands where an ImageRef would)."""

    index: int

    @property
    def key(self) -> str:
        return f"pool:{self.index}"


@dataclass(frozen=True)
class Episode:
    """One training sequence: a task's prompt over shots and a query, all with answers.

    `learn` says, per example (shots then query), whether its answer is knowable from what came
    before and so is trained on (a made-up word seen for the first time is not).
    """

    template: str
    shots: tuple[Example, ...]
    query: Example
    learn: tuple[bool, ...]


def jpeg(image: Image.Image) -> Image.Image:
    """The image after a JPEG round trip, as the bundled data stores it (quality 90)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def draw_single(color: str, kind: str, rng: random.Random) -> Image.Image:
    """One large shape on gray near the centre, its size and place jittered so that no two images
    are the same: the colour fills much of the picture, as an object does in a real photograph."""
    x, y = POSITIONS["left"]
    scene = Scene(0, "white", (Shape(kind, color, "left"),))
    offset = (32 - x + rng.randint(-6, 6), 32 - y + rng.randint(-6, 6))
    return make_data.draw(scene, background_rgb=GRAY, offset=offset, half=rng.randint(12, 18))


def example(eid: str, image, answer: str, **fields: str) -> Example:
    return Example(id=eid, image_id=eid, image=image, fields=fields, answers=(answer,))


class World:
    """Renders the image pool once and samples episodes from it."""

    def __init__(self, seed: int = SEED, scenes: int = 3000, drawings_per_class: int = 150, singles: int = 1200):
        self.rng = random.Random(seed)
        self.images: list[Image.Image] = []
        self.scenes: list[tuple[int, Scene]] = []
        for image_id in range(10_000_000, 10_000_000 + scenes):
            scene = make_data.make_scene(image_id)
            self.scenes.append((self._add(make_data.draw(scene)), scene))
        classes = (builtin_dir("tasks") / "imagenet_classes.txt").read_text().splitlines()
        self.drawings: list[tuple[int, str]] = []
        for index in make_classification.IMAGENET_CLASSES:
            for n in range(drawings_per_class):
                drawing = make_classification.Drawing(index, f"canary:{index}:{n}")
                self.drawings.append((self._add(make_classification.draw_object(drawing)), classes[index]))
        self.singles: list[tuple[int, str]] = []  # (pool index, colour)
        single_rng = random.Random(f"{seed}:singles")
        for _ in range(singles):
            color, kind = single_rng.choice(list(COLORS)), single_rng.choice(SHAPES)
            self.singles.append((self._add(draw_single(color, kind, single_rng)), color))
        self.singles_by_color = {c: [s for s in self.singles if s[1] == c] for c in COLORS}
        self.colors = (2, 4)  # the naming game's fewest and most colours in an episode
        self.templates = {name: load_template(name) for name in ("vqa", "captioning", "imagenet")}

    def _add(self, image: Image.Image) -> int:
        self.images.append(jpeg(image))
        return len(self.images) - 1

    # -- one example of each kind ------------------------------------------------------------

    def vqa_example(self, n: int) -> Example:
        index, scene = self.rng.choice(self.scenes)
        questions = make_data._candidates(scene, self.rng)
        answer_type = self.rng.choice(make_data.ANSWER_TYPE_BLOCK)
        question = self.rng.choice(questions[answer_type])
        return example(f"v{n}", PoolImage(index), question.answer, question=question.question)

    def caption_example(self, n: int) -> Example:
        index, scene = self.rng.choice(self.scenes)
        caption = self.rng.choice(make_captioning.captions(scene, 5))
        return example(f"c{n}", PoolImage(index), caption)

    def imagenet_example(self, n: int) -> Example:
        index, name = self.rng.choice(self.drawings)
        return example(f"i{n}", PoolImage(index), name, class_name=name)

    def color_example(self, n: int) -> Example:
        index, color = self.rng.choice(self.singles)
        return example(f"s{n}", PoolImage(index), color, question=COLOR_QUESTION)

    # -- episodes ----------------------------------------------------------------------------

    def episode(self, kind: str, shots: int) -> Episode:
        if kind == "words":
            return self.words_episode(shots)
        if kind == "contrast":  # more shots than colours cannot all differ: the ordinary game then
            return self.contrast_episode(shots) if 1 <= shots <= len(COLORS) else self.words_episode(shots)
        if kind == "recency":
            return self.recency_episode(shots) if 2 <= shots <= len(COLORS) else self.words_episode(shots)
        make, template = {
            "vqa": (self.vqa_example, "vqa"),
            "captioning": (self.caption_example, "captioning"),
            "imagenet": (self.imagenet_example, "imagenet"),
            "colors": (self.color_example, "vqa"),
        }[kind]
        examples = [make(n) for n in range(shots + 1)]
        return Episode(template, tuple(examples[:-1]), examples[-1], (True,) * (shots + 1))

    def words_episode(self, shots: int, rename: float = 0.2) -> Episode:
        """The naming game: the shots name single shapes by colour, each colour by a word the episode
        draws from `CODE` (a new pairing every episode); the query's colour is among the shots. A
        word alone says nothing: only the shot whose image has the query's colour tells its name.
        A colour may be renamed on the way (chance `rename` per repeat), and then its latest name
        counts, so the canary reads the shots nearest the query first (where retrieval puts the
        most similar). An episode shows two to four colours, so that most answers repeat an
        earlier shot's and can be learnt; the first naming of a colour cannot be, and is not."""
        shots = max(shots, 1)
        active = self.rng.sample(list(COLORS), min(shots, self.rng.randint(*self.colors)))
        colors = [active[i % len(active)] for i in range(shots)]
        self.rng.shuffle(colors)
        colors.append(self.rng.choice(active))
        naming = dict(zip(COLORS, self.rng.sample(CODE, len(CODE))))
        examples, learn, seen = [], [], set()
        for n, color in enumerate(colors):
            if n < shots and color in seen and self.rng.random() < rename:
                naming[color] = self.rng.choice([w for w in CODE if w != naming[color]])
                learn.append(False)
            else:
                learn.append(color in seen)
            seen.add(color)
            index, _ = self.rng.choice(self.singles_by_color[color])
            examples.append(example(f"w{n}", PoolImage(index), naming[color], question=WORDS_QUESTION))
        return Episode("vqa", tuple(examples[:-1]), examples[-1], tuple(learn))

    def recency_episode(self, shots: int) -> Episode:
        """The naming game where order matters: the query's colour is shown twice under two names,
        each other shot is another colour, and the later of the two names is the answer (as after
        a rename). A model that matches images but ignores order scores 50; only the query is
        learnt. 2 to 8 shots (a word is left over for the outdated name)."""
        color, *others = self.rng.sample(list(COLORS), shots - 1)
        colors = [color, color, *others]
        self.rng.shuffle(colors)
        naming = dict(zip(COLORS, self.rng.sample(CODE, len(CODE))))
        shown = {naming[c] for c in colors}
        first = colors.index(color)
        examples = []
        for n, c in enumerate([*colors, color]):
            index, _ = self.rng.choice(self.singles_by_color[c])
            word = self.rng.choice([w for w in CODE if w not in shown]) if n == first else naming[c]
            examples.append(example(f"w{n}", PoolImage(index), word, question=WORDS_QUESTION))
        return Episode("vqa", tuple(examples[:-1]), examples[-1], (False,) * shots + (True,))

    def contrast_episode(self, shots: int) -> Episode:
        """The naming game at its hardest: every shot a different colour, the query one of them, so
        the context's words are all candidates and only the image match tells which is meant
        (chance: 1 / shots). Only the query's answer is knowable, so only it is learnt."""
        colors = self.rng.sample(list(COLORS), shots)
        naming = dict(zip(COLORS, self.rng.sample(CODE, len(CODE))))
        examples = []
        for n, color in enumerate([*colors, self.rng.choice(colors)]):
            index, _ = self.rng.choice(self.singles_by_color[color])
            examples.append(example(f"w{n}", PoolImage(index), naming[color], question=WORDS_QUESTION))
        return Episode("vqa", tuple(examples[:-1]), examples[-1], (False,) * shots + (True,))


def render(template: PromptTemplate, episode: Episode):
    """The episode's prompt as the harness builds it: shots in full, the query continued by its
    answer (exactly a ranked candidate's layout), so training text = evaluation text + answer."""
    return template.render(episode.shots, episode.query, lambda e: e.answers[0], candidate=episode.query.answers[0])


def answer_spans(template: PromptTemplate, episode: Episode, text: str) -> list[tuple[int, int]]:
    """Character spans, in the processor text, of the answers to learn (each with what ends it:
    the newline after a shot's answer)."""
    after = template.example.split(IMAGE)[1]
    lead_pattern = after[: after.index(template.target)]
    spans, cursor = [], 0
    examples = (*episode.shots, episode.query)
    for ex, learn in zip(examples, episode.learn):
        cursor = text.index("<image>", cursor) + len("<image>")
        lead = template._fill(lead_pattern, {**ex.fields, template.target[1:-1]: ""}, ex.id).lstrip(" ")
        start = text.index(lead, cursor) + len(lead)
        answer = ex.answers[0]
        if text[start : start + len(answer)] != answer:
            raise AssertionError(f"answer {answer!r} not found where expected in {text[start:start + 40]!r}")
        end = start + len(answer)
        if text[end : end + 1] == "\n":
            end += 1
        if learn:
            spans.append((start, end))
        cursor = end
    return spans


# -- the canary_words task's data, in the VQA v2 layout --------------------------------------

def build_words_split(split: str, by_shape: bool = False, shapes: tuple[str, ...] = SHAPES,
                      repeats: int | None = None) -> tuple[dict, dict, dict[int, Image.Image]]:
    """(questions JSON, annotations JSON, images by id): every (colour, shape) drawn
    `TASK_SPLITS[split][1]` times; the answer is the colour's name (or the (colour, shape)'s name
    with `by_shape`), all 10 annotators agreeing."""
    subtype, default_repeats = TASK_SPLITS[split]
    repeats = default_repeats if repeats is None else repeats
    rng = random.Random(f"{SEED}:words:{split}:{by_shape}")
    questions, annotations, images = [], [], {}
    image_id = {"train": 700_000, "validation": 800_000}[split]
    for color in COLORS:
        for kind in shapes:
            for _ in range(repeats):
                image_id += 1
                images[image_id] = draw_single(color, kind, rng)
                answer = code_word(color, SHAPE_SHIFTS[kind] if by_shape else 0)
                question_id = image_id * 1000
                questions.append({"image_id": image_id, "question": WORDS_QUESTION, "question_id": question_id})
                annotations.append({
                    "question_type": "what is", "multiple_choice_answer": answer,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)],
                    "image_id": image_id, "answer_type": "other", "question_id": question_id,
                })
    info = {"description": "canary_words: single shapes named by made-up words (idefics_eval/canary/world.py)"}
    return (
        {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "questions": questions},
        {"info": info, "data_type": "mscoco", "data_subtype": subtype, "annotations": annotations},
        images,
    )


def write_words_data(out: Path, by_shape: bool = False, shapes: tuple[str, ...] = SHAPES,
                     repeats: dict[str, int] | None = None) -> None:
    """Write the canary_words task; tests write variants: names that rotate with the shape
    (`by_shape`), fewer shapes, fewer images per split (`repeats`)."""
    for split, (subtype, _) in TASK_SPLITS.items():
        questions, annotations, images = build_words_split(split, by_shape, shapes, (repeats or {}).get(split))
        (out / subtype).mkdir(parents=True, exist_ok=True)
        (out / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps(questions) + "\n")
        (out / f"v2_mscoco_{subtype}_annotations.json").write_text(json.dumps(annotations) + "\n")
        for image_id, image in images.items():
            image.save(out / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", quality=90)
