"""Image features, computed once per run: each image through the model's image encoder (for
IDEFICS the vision tower and the perceiver resampler) once, whatever number of queries show it (a
support image retrieved as a shot for many queries, a query image shared by several questions).

`ImageFeatureCache` holds the per-image features the language model reads, as the family's adapter
computes them (`ModelAdapter.compute_features`; for IDEFICS the perceiver resampler's latents, or
the vision tower's last hidden state for a checkpoint without a resampler). Entries are keyed by
(model fingerprint, dtype, SHA-256 of the image's bytes), not by the image's path or dataset row,
and live for one run (`forget_features`: the weights may change between runs with one model
object, unseen by the fingerprint). The cache is bounded by bytes, evicting the least
recently used entry first. It lives in memory on the model's device (at IDEFICS-9B's 64 x 4096
bfloat16 latents an image costs 512 KiB, so the default 1 GiB holds 2,048 images, more than the
distinct shots of a typical 32-shot run over a few thousand queries). With a spill folder
(`--image-cache-dir`), an evicted entry is written to a file there (`FeatureSpill`) with its
SHA-256 kept in memory, and read back and checked when it is asked for again, instead of going
through the vision tower a second time.

`encode_images(loaded, refs)` is the one entry point: features for `refs`, in order, computing only
the misses and caching them. Each image is encoded alone (a batch of one): on CPU the vision tower's
results for one image change in the last bit with its batch-mates, so encoding images together
would make a query's scores depend on which other images happened to miss the cache with it.
Alone, a feature depends only on (model, image): cached and uncached runs agree exactly.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache_files import read_checked, write_checked
from .errors import UserError
from .examples import image_digest

DEFAULT_MAX_BYTES = 1 << 30


@dataclass
class CacheStats:
    hits: int = 0  # in memory or in the spill folder
    misses: int = 0
    evictions: int = 0
    spilled: int = 0  # entries written to the spill folder
    disk_hits: int = 0  # hits read back from the spill folder


class FeatureSpill:
    """Tensors as one .npy file each, written atomically (a temporary file renamed into place) and
    read back onto the device and in the dtype they were written from, after checking the file's
    SHA-256 against the one kept in memory when it was written (a file damaged since is reported
    in one line and its features recomputed: `cache_files.read_checked`).

    Each spill writes into a new folder of its own under `root` (`features-<pid>-<random>`), removed
    with the spill, and reads only what it wrote: runs sharing `root` never read each other's files,
    and a file left by an earlier run is never read. A file is named by the SHA-256 of its key,
    which for the run's cache holds the model's weights fingerprint and dtype beside the image's digest.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=f"features-{os.getpid()}-", dir=self.root))
        except OSError as error:
            raise UserError(f"cannot create the image feature spill folder under {root}: {error.strerror}; "
                            "choose another --image-cache-dir") from None
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        self._files: dict[Hashable, tuple[Path, str, torch.dtype, torch.device]] = {}  # path, SHA-256, ...

    def __contains__(self, key: Hashable) -> bool:
        return key in self._files

    def write(self, key: Hashable, tensor: torch.Tensor) -> None:
        path = self.folder / f"{hashlib.sha256(repr(key).encode()).hexdigest()}.npy"
        values = tensor.detach().cpu().contiguous()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16: keep its bits
            values = values.view(torch.int16)
        buffer = io.BytesIO()
        try:
            np.save(buffer, values.numpy())
            digest = write_checked(path, buffer.getvalue())
        except OSError as error:
            raise UserError(f"cannot write image features to {self.folder}: {error.strerror}; "
                            "free some space or choose another --image-cache-dir") from None
        self._files[key] = (path, digest, tensor.dtype, tensor.device)

    def read(self, key: Hashable) -> torch.Tensor | None:
        """The tensor written under `key`; None if there is none, or if its file no longer holds
        what was written (one warning line, and the entry is forgotten: the caller recomputes it)."""
        if key not in self._files:
            return None
        path, digest, dtype, device = self._files[key]
        data = read_checked(path, digest, action="recomputing")
        if data is None:
            self.discard(key)
            return None
        values = torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
        return (values.view(dtype) if dtype == torch.bfloat16 else values).to(device)

    def discard(self, key: Hashable) -> None:
        entry = self._files.pop(key, None)
        if entry is not None:
            entry[0].unlink(missing_ok=True)

    def clear(self) -> None:
        for key in list(self._files):
            self.discard(key)


class ImageFeatureCache:
    """An LRU map from a key to a tensor, bounded by the tensors' total bytes; with `spill_dir`,
    evicted tensors (and tensors larger than the whole budget) go to files there and come back
    from them."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, spill_dir: Path | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.spill = FeatureSpill(spill_dir) if spill_dir is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries or (self.spill is not None and key in self.spill)

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The tensor under `key` (now the most recently used, in memory), or None; counts a hit or a miss."""
        tensor = self._entries.get(key)
        if tensor is not None:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return tensor
        tensor = self.spill.read(key) if self.spill is not None else None
        if tensor is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self.stats.disk_hits += 1
        self._insert(key, tensor)  # its file stays: evicted again, it need not be written again
        return tensor

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        """Store `tensor`, evicting LRU entries; one larger than the whole budget is spilled at once, or
        not stored without a spill folder."""
        if self.spill is not None:
            self.spill.discard(key)  # a replaced tensor's old file must not come back
        if key in self._entries:
            old = self._entries.pop(key)
            self.bytes -= old.numel() * old.element_size()
        self._insert(key, tensor)

    def _insert(self, key: Hashable, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            self._spill(key, tensor)
            return
        while self._entries and self.bytes + size > self.max_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.numel() * evicted.element_size()
            self.stats.evictions += 1
            self._spill(evicted_key, evicted)
        self._entries[key] = tensor
        self.bytes += size

    def _spill(self, key: Hashable, tensor: torch.Tensor) -> None:
        if self.spill is not None and key not in self.spill:
            self.spill.write(key, tensor)
            self.stats.spilled += 1

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
        if self.spill is not None:
            self.spill.clear()


# One cache per model object, shared by the generator and the ranker of a run.
_SHARED: "weakref.WeakKeyDictionary[torch.nn.Module, ImageFeatureCache]" = weakref.WeakKeyDictionary()


def shared_cache(loaded) -> ImageFeatureCache:
    """The run-wide cache of `loaded`'s model (created on first use, with the default settings)."""
    cache = _SHARED.get(loaded.model)
    if cache is None:
        cache = _SHARED[loaded.model] = ImageFeatureCache()
    return cache


def configure_shared_cache(loaded, max_bytes: int = DEFAULT_MAX_BYTES, spill_dir: Path | None = None) -> ImageFeatureCache:
    """The run-wide cache of `loaded`'s model with these settings: the current one if it has them
    (several tasks of one run share their images' features), else a new one in its place."""
    cache = _SHARED.get(loaded.model)
    spill_root = cache.spill.root if cache is not None and cache.spill is not None else None
    wanted = Path(spill_dir) if spill_dir is not None else None
    if cache is None or cache.max_bytes != max_bytes or spill_root != wanted:
        cache = _SHARED[loaded.model] = ImageFeatureCache(max_bytes, wanted)
    return cache


def forget_features(loaded) -> None:
    """Empty the run-wide cache of `loaded`'s model (its spill files too), at the start of a run.

    Between two runs with one model object (`evaluate` in a training loop) the weights may have
    changed in place, and the fingerprint cannot be trusted to show it: it samples 256 values of
    each tensor (`models.weights_fingerprint`), so an update that misses them (a few rows of an
    embedding, a frozen tower but one bias) leaves it as it was. Hashing every weight would see
    any change but costs a pass over all of them at each `evaluate` (about a second per GB on
    CPU); features are not worth keeping across runs anyway, since training changes them."""
    cache = _SHARED.get(loaded.model)
    if cache is not None:
        cache.clear()


def compute_features(loaded, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixels -> per-image features, as the model computes them (the family's adapter)."""
    return loaded.adapter.compute_features(pixel_values)


def pixel_values(loaded, images) -> torch.Tensor:
    """The family's image processor on `images`."""
    return loaded.adapter.preprocess(list(images))


def encode_images(loaded, refs: Sequence, cache: ImageFeatureCache | None = None) -> torch.Tensor:
    """Features of `refs` (ImageRefs), stacked in order: (len(refs), tokens, dim); misses computed
    once each (duplicates within `refs` too) and stored in `cache` (no caching when None).

    Keyed by the image's content (`image_digest`: memoised per ref, so a prompt costs a `stat` per
    image, not a hash), not its key: an image edited in place, or two datasets' different images
    under one key, never share features."""
    from .engine import load_image  # engine imports this module

    prefix = (loaded.fingerprint, str(loaded.dtype))
    keys = [prefix + (image_digest(ref),) for ref in refs]
    found: dict[tuple, torch.Tensor] = {}
    missing: dict[tuple, object] = {}  # key -> ref, first occurrence order
    for key, ref in zip(keys, refs):
        if key in found or key in missing:
            continue
        tensor = cache.get(key) if cache is not None else None
        if tensor is None:
            missing[key] = ref
        else:
            found[key] = tensor
    for key, ref in missing.items():
        feature = compute_features(loaded, pixel_values(loaded, [load_image(ref)]))[0]
        found[key] = feature
        if cache is not None:
            cache.put(key, feature)
    if not refs:
        return torch.zeros(0, device=loaded.device)
    return torch.stack([found[key] for key in keys])
