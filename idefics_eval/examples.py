"""Examples: the records a task is evaluated on, with their images decoded lazily.

An `Example` is the typed boundary between the data formats (`idefics_eval.formats`) and the rest of
the pipeline. Images are referenced, not held: `ImageRef.load()` decodes on demand, so a split of
200k questions costs only its annotations in memory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from .errors import UserError
from .paths import Confinement


class ImageRef(Protocol):
    """A lazily decoded image. `key` names the image's source (its path, its dataset row): it is
    what results' fingerprints record. An ImageRef may also have `digest() -> str`, a hash of its
    encoded bytes read without decoding, which keys the caches (see `image_digest`). It is asked
    for at every prompt that shows the image (the image-feature cache's key), so the shipped refs
    hash once and answer from a `DigestMemo` while the bytes cannot have changed."""

    key: str

    def load(self) -> Image.Image: ...


def image_digest(ref: ImageRef) -> str:
    """SHA-256 of what `ref` decodes from: its file's or its Arrow cell's bytes, or (an ImageRef
    with no `digest`) its decoded pixels, so that a cache keyed by it changes with the image."""
    digest = getattr(ref, "digest", None)
    if digest is not None:
        return digest()
    return _pixel_digest(ref.load())


_DIGEST_BATCH = 256  # images hashed per thread-pool task in `ExampleSet.content_fingerprint`


def _digests_of(refs: Sequence[ImageRef]) -> list[str]:
    return [image_digest(ref) for ref in refs]


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def _file_digest(path: Path) -> str:
    _check_exists(path)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# A file changed this recently may change again within the same timestamp tick (a few milliseconds
# on Linux filesystems, 2 s on FAT) without its stat showing it: its digest is not kept ("racy git").
_RACY_NS = 2_000_000_000


def _settled_stat(path: Path) -> tuple[int, ...] | None:
    """What any write, rename or `touch` changes about the file at `path`: its device, inode, size,
    mtime and ctime (which no tool can set back: `cp -p`, `rsync -t` and `touch -r` keep mtimes,
    not ctimes); None when it is missing or changed within the last `_RACY_NS`."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < _RACY_NS:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class DigestMemo:
    """One image ref's digest, kept while what it hashed cannot have changed: bytes in memory (an
    Arrow cell of an open dataset), or a file whose stat (`_settled_stat`) is the one it had when
    hashed. A check costs one `stat` call, hashing reads the whole file: 1 us against about 150 us
    for a COCO image, at every prompt that shows it."""

    def __init__(self) -> None:
        self._digest: str | None = None
        self._file: tuple[Path, tuple[int, ...]] | None = None  # the file hashed and its stat; None: bytes

    def known(self) -> str | None:
        """The kept digest, or None when there is none or its file may have changed since."""
        if self._digest is None or (self._file is not None and _settled_stat(self._file[0]) != self._file[1]):
            return None
        return self._digest

    def of_bytes(self, data: bytes) -> str:
        """The digest of `data`, kept for good (the bytes of an open dataset's cell do not change)."""
        self._digest, self._file = hashlib.sha256(data).hexdigest(), None
        return self._digest

    def of_file(self, path: Path) -> str:
        """The digest of the file at `path`: the kept one while its stat is unchanged, else hashed."""
        if self._file is not None and self._file[0] == path and (known := self.known()) is not None:
            return known
        stat = _settled_stat(path)  # taken before hashing: a write during the hash shows at the next check
        digest = _file_digest(path)
        self._digest, self._file = (digest, (path, stat)) if stat is not None else (None, None)
        return digest


@dataclass(frozen=True)
class FileImage:
    """An image file on disk (for example a COCO image next to VQA v2 JSON annotations)."""

    path: Path
    _memo: DigestMemo = field(default_factory=DigestMemo, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        return str(self.path)

    def load(self) -> Image.Image:
        return open_image(self.path)

    def digest(self) -> str:
        return self._memo.of_file(self.path)


@dataclass(frozen=True)
class DatasetImage:
    """Row `index` of an Arrow-backed Hugging Face dataset; decoded only when loaded.

    An image stored as a path (no bytes) is opened only inside `inside` (relative paths from its folder).
    """

    dataset: Any = field(repr=False, compare=False)
    index: int
    column: str
    fingerprint: str
    inside: Confinement = field(repr=False, compare=False)
    _memo: DigestMemo = field(default_factory=DigestMemo, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.fingerprint}:{self.index}"

    def digest(self) -> str:
        # Not the dataset's fingerprint: for local files the datasets library hashes their mtimes,
        # and a save_to_disk folder keeps the fingerprint it was saved with, whatever its Arrow
        # files hold since; and an Image cell may hold only a path to a file outside the Arrow.
        known = self._memo.known()
        if known is not None:
            return known
        value = self.dataset[self.index][self.column]
        if isinstance(value, dict) and value.get("bytes") is not None:
            return self._memo.of_bytes(value["bytes"])
        path = self._path(value)
        if path is not None:  # the very file load() would open, confined the same way
            return self._memo.of_file(path)
        return _pixel_digest(self.load())  # a decoded image (or load's one-line error)

    def _path(self, value: Any) -> Path | None:
        """The file an image stored as a path names, refused in one line when it leaves `inside`."""
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        if not path:
            return None
        where = f"row {self.index} of column {self.column!r}"
        return self.inside.check(path, where, "store the image's bytes in the dataset")

    def load(self) -> Image.Image:
        value = self.dataset[self.index][self.column]
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and value.get("bytes") is not None:
            import io

            return _decode(io.BytesIO(value["bytes"]), f"row {self.index} of column {self.column!r}")
        path = self._path(value)
        if path is not None:
            return open_image(path)
        raise UserError(
            f"row {self.index}: column {self.column!r} holds {type(value).__name__}, not an image; "
            "map the image column with the task's columns"
        )


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"image not found: {path}; check the data folder (--data) and the task's image_file pattern")


def open_image(path: Path) -> Image.Image:
    _check_exists(path)
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
    `image` is None only for a shot shown as text only (`without_image`).
    """

    id: str
    image_id: str
    image: ImageRef | None = field(compare=False)
    fields: Mapping[str, str]
    answers: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    label: int | None = None
    extra_images: tuple[ImageRef, ...] = field(default=(), compare=False)

    def without_image(self) -> Example:
        """This example as a shot shown as text only (Flamingo's zero-shot): the prompt renders its
        text as a shot's, with no image placeholder and no image input."""
        return replace(self, image=None, extra_images=())


def _inside(ref: ImageRef, root: str) -> str:
    """An image file's path relative to the folder `root` (with / between parts); any other image's key."""
    if isinstance(ref, FileImage):
        try:
            return ref.path.relative_to(root).as_posix()
        except ValueError:  # not under root (a split built by hand, a source that is no folder)
            pass
    return ref.key


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
        """Hash of the ids, image names and answers: changes whenever the split's content does, not
        where it lives. An image file is named by its path inside `source` (the data folder), so a
        moved folder (or checkout, for the bundled data) keeps the fingerprint its results record."""
        return self._fingerprint(lambda ref: _inside(ref, self.source))

    def fingerprint_at(self, root: str) -> str:
        """The fingerprint results recorded before 2026-12-03, which named an image file by its full
        path: the value this split had when its folder `source` was at `root` (the recorded source).
        With the folder where it was, `fingerprint_at(source)` is that value exactly."""
        moved = Path(root)
        return self._fingerprint(lambda ref: ref.key if (inside := _inside(ref, self.source)) == ref.key else str(moved / inside))

    def is_recorded_as(self, fingerprint: object, source: object) -> bool:
        """Whether a results row's or manifest's (fingerprint, source) names this split's content,
        wherever the folder is now; a record from before 2026-12-03 by `fingerprint_at(source)`."""
        return fingerprint == self.fingerprint or (isinstance(source, str) and fingerprint == self.fingerprint_at(source))

    def _fingerprint(self, image_key: Callable[[ImageRef], str]) -> str:
        digest = hashlib.sha256()
        for example in self.examples:
            digest.update(f"{example.id}\x1f{example.image_id}\x1f{image_key(example.image)}\x1f".encode())
            digest.update("\x1f".join(example.answers).encode())
            digest.update(f"\x1d{example.label}\x1d".encode() + "\x1f".join(example.candidates).encode())
            digest.update("".join(image_key(ref) for ref in example.extra_images).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()[:16]

    @cached_property
    def content_fingerprint(self) -> str:
        """`fingerprint` with a hash of every distinct image's bytes: it keys the caches of what was
        computed from the images (RICES embeddings), so an image replaced in place under the same
        name misses them. Kept apart from `fingerprint`, which results record and which reads no image.

        The cost is acceptable: each image's encoded bytes are read and hashed once per split and
        run, never decoded (SHA-256 runs at about 1 GB/s a core, so COCO val2014's 6 GB takes
        seconds), while what the cache saves decodes, resizes and runs a vision encoder on every
        image. Cheaper keys such as size and mtime can lie (`cp -p`, `rsync -t`, `touch -r` keep mtimes).
        """
        return self._content_fingerprint(self.fingerprint)

    def content_fingerprint_at(self, root: str) -> str:
        """`content_fingerprint` as it was before 2026-12-03, on `fingerprint_at(root)` (recorded RICES index fingerprints)."""
        return self._content_fingerprint(self.fingerprint_at(root))

    def _content_fingerprint(self, fingerprint: str) -> str:
        digest = hashlib.sha256(fingerprint.encode())
        for image_id, image in self._image_digests:
            digest.update(f"\x1e{image_id}\x1f{image}".encode())
        return digest.hexdigest()[:16]

    @cached_property
    def _image_digests(self) -> list[tuple[str, str]]:
        images = self.unique_images()
        refs = [ref for _, ref in images]
        # Reading files overlaps hashing (both free the GIL); a task per batch of images, not per
        # image, as a task costs about as much as hashing a small image (100k tasks: seconds).
        batches = [refs[start : start + _DIGEST_BATCH] for start in range(0, len(refs), _DIGEST_BATCH)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            digests = [digest for batch in pool.map(_digests_of, batches) for digest in batch]
        return [(image_id, digest) for (image_id, _), digest in zip(images, digests)]

    def unique_images(self) -> list[tuple[str, ImageRef]]:
        """One (image_id, image) pair per distinct image, in first-seen order (a new list each call)."""
        return list(self._unique_images)

    @cached_property
    def _unique_images(self) -> tuple[tuple[str, ImageRef], ...]:
        # Kept, as `fingerprint` is: a RICES run asks for it about six times a split (0.1 s each at 100k).
        seen: dict[str, ImageRef] = {}
        for example in self.examples:
            seen.setdefault(example.image_id, example.image)
        return tuple(seen.items())
