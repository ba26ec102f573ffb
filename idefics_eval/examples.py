"""Examples: the records a task is evaluated on, with their images decoded lazily.

An `Example` is the typed boundary between the data formats (`idefics_eval.formats`) and the rest of
the pipeline. Images are referenced, not held: `ImageRef.load()` decodes on demand, so a split of
200k questions costs only its annotations in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from .errors import UserError


class ImageRef(Protocol):
    """A lazily decoded image. `key` identifies the image's content source (used in fingerprints)."""

    key: str

    def load(self) -> Image.Image: ...


@dataclass(frozen=True)
class FileImage:
    """An image file on disk (for example a COCO image next to VQA v2 JSON annotations)."""

    path: Path

    @property
    def key(self) -> str:
        return str(self.path)

    def load(self) -> Image.Image:
        return open_image(self.path)


@dataclass(frozen=True)
class DatasetImage:
    """Row `index` of an Arrow-backed Hugging Face dataset; decoded only when loaded."""

    dataset: Any = field(repr=False, compare=False)
    index: int
    column: str
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.fingerprint}:{self.index}"

    def load(self) -> Image.Image:
        value = self.dataset[self.index][self.column]
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and value.get("bytes") is not None:
            import io

            return _decode(io.BytesIO(value["bytes"]), f"row {self.index} of column {self.column!r}")
        if isinstance(value, dict) and value.get("path"):
            return open_image(Path(value["path"]))
        if isinstance(value, str):
            return open_image(Path(value))
        raise UserError(
            f"row {self.index}: column {self.column!r} holds {type(value).__name__}, not an image; "
            "map the image column with the task's columns"
        )


def open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise UserError(f"image not found: {path}; check the data folder (--data) and the task's image_file pattern")
    with open(path, "rb") as handle:
        return _decode(handle, str(path))


def _decode(handle, where: str) -> Image.Image:
    try:
        image = Image.open(handle)
        image.load()
    except Exception as error:  # PIL raises many types for corrupt files
        raise UserError(f"cannot decode image {where}: {error}") from None
    return image.convert("RGB")


@dataclass(frozen=True)
class Example:
    """One question (or caption target, or classification item) and its image.

    `id` is unique within a split. `image_id` names the underlying image: two questions about the
    same picture share it, which is how a query's own image is kept out of its shots.
    `fields` hold what the prompt template fills in (e.g. `question`, `text`, `context`, `history`);
    `answers` the ground truth texts (VQA: the 10 human answers in answer-id order; captioning: the
    reference captions; classification: the correct class name); `metadata` anything reports break
    down by or metrics need (e.g. `answer_type`, NoCaps `domain`, VisDial `relevance`).

    Ranked tasks: `candidates` are this example's own candidate answers (ScienceQA's choices,
    VisDial's 100 options), empty when the task file gives one class list for all; `label` is the
    index of the correct candidate (or class). Winoground: `extra_images` holds the second image.
    """

    id: str
    image_id: str
    image: ImageRef = field(compare=False)
    fields: Mapping[str, str]
    answers: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    label: int | None = None
    extra_images: tuple[ImageRef, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ExampleSet:
    """The examples of one split of one source, in source order, with a content fingerprint."""

    name: str  # e.g. "vqav2/validation"
    source: str  # where it came from: a folder, a hub id, a file pattern
    examples: Sequence[Example]

    def __len__(self) -> int:
        return len(self.examples)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the ids, image keys and answers: changes whenever the split's content does."""
        digest = hashlib.sha256()
        for example in self.examples:
            digest.update(f"{example.id}\x1f{example.image_id}\x1f{example.image.key}\x1f".encode())
            digest.update("\x1f".join(example.answers).encode())
            digest.update(f"\x1d{example.label}\x1d".encode() + "\x1f".join(example.candidates).encode())
            digest.update("".join(ref.key for ref in example.extra_images).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()[:16]

    def unique_images(self) -> list[tuple[str, ImageRef]]:
        """One (image_id, image) pair per distinct image, in first-seen order."""
        seen: dict[str, ImageRef] = {}
        for example in self.examples:
            seen.setdefault(example.image_id, example.image)
        return list(seen.items())
