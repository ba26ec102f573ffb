"""Image features, computed once per run: each image through the vision tower and the perceiver
resampler once, whatever number of queries show it (a support image retrieved as a shot for many
queries, a query image shared by several questions).

`ImageFeatureCache` holds the per-image features the language model's cross-attention reads:
the perceiver resampler's latents (`perceiver_embeddings`), or the vision tower's last hidden
state (`image_encoder_embeddings`) for a checkpoint without a resampler. Entries are keyed by
(model fingerprint, dtype, image key) and the cache is bounded by bytes, evicting the least
recently used entry first. It lives in memory on the model's device; there is no spill to disk
(at IDEFICS-9B's 64 x 4096 bfloat16 latents an image costs 512 KiB, so the default 1 GiB holds
2,048 images, more than the distinct shots of a typical 32-shot run over a few thousand queries).

`encode_images(loaded, refs)` is the one entry point: features for `refs`, in order, computing only
the misses and caching them. Each image is encoded alone (a batch of one): on CPU the vision tower's
results for one image change in the last bit with its batch-mates, so encoding images together
would make a query's scores depend on which other images happened to miss the cache with it.
Alone, a feature depends only on (model, image): cached and uncached runs agree exactly.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

DEFAULT_MAX_BYTES = 1 << 30


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ImageFeatureCache:
    """An LRU map from a key to a tensor, bounded by the tensors' total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The tensor under `key` (now the most recently used), or None; counts a hit or a miss."""
        tensor = self._entries.get(key)
        if tensor is None:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return tensor

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        """Store `tensor` (a tensor larger than the whole budget is not stored), evicting LRU entries."""
        size = tensor.numel() * tensor.element_size()
        if key in self._entries:
            old = self._entries.pop(key)
            self.bytes -= old.numel() * old.element_size()
        if size > self.max_bytes:
            return
        while self._entries and self.bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.numel() * evicted.element_size()
            self.stats.evictions += 1
        self._entries[key] = tensor
        self.bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


# One cache per model object, shared by the generator and the ranker of a run.
_SHARED: "weakref.WeakKeyDictionary[torch.nn.Module, ImageFeatureCache]" = weakref.WeakKeyDictionary()


def shared_cache(loaded) -> ImageFeatureCache:
    """The run-wide cache of `loaded`'s model (created on first use)."""
    cache = _SHARED.get(loaded.model)
    if cache is None:
        cache = _SHARED[loaded.model] = ImageFeatureCache()
    return cache


def feature_kind(loaded) -> str:
    """The forward-pass keyword that takes cached features for this checkpoint."""
    return "perceiver_embeddings" if loaded.model.config.use_resampler else "image_encoder_embeddings"


@torch.no_grad()
def compute_features(loaded, pixel_values: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) pixels -> (n, tokens, dim) features, exactly as IdeficsModel.forward computes them."""
    model = loaded.model.model
    pixels = pixel_values.to(dtype=model.dtype, device=loaded.device).contiguous()
    hidden = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=False).last_hidden_state
    return model.perceiver_resampler(hidden) if model.config.use_resampler else hidden


def pixel_values(loaded, images) -> torch.Tensor:
    out = loaded.processor.image_processor(list(images), return_tensors="pt")
    return out if isinstance(out, torch.Tensor) else out["pixel_values"]


def encode_images(loaded, refs: Sequence, cache: ImageFeatureCache | None = None) -> torch.Tensor:
    """Features of `refs` (ImageRefs), stacked in order: (len(refs), tokens, dim); misses computed
    once each (duplicates within `refs` too) and stored in `cache` (no caching when None)."""
    from .engine import load_image  # engine imports this module

    prefix = (loaded.fingerprint, str(loaded.dtype))
    found: dict[str, torch.Tensor] = {}
    missing: dict[str, object] = {}  # key -> ref, first occurrence order
    for ref in refs:
        if ref.key in found or ref.key in missing:
            continue
        tensor = cache.get(prefix + (ref.key,)) if cache is not None else None
        if tensor is None:
            missing[ref.key] = ref
        else:
            found[ref.key] = tensor
    for ref in missing.values():
        feature = compute_features(loaded, pixel_values(loaded, [load_image(ref)]))[0]
        found[ref.key] = feature
        if cache is not None:
            cache.put(prefix + (ref.key,), feature)
    if not refs:
        return torch.zeros(0, device=loaded.device)
    return torch.stack([found[ref.key] for ref in refs])
