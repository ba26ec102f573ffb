"""Weights checksum: the cost of `models.weights_checksum` (every weight, on its device) beside
`sha256_of_weights` (SHA-256 of every weight's bytes on the host, the obvious exact alternative) and the sampled
`models.weights_fingerprint`, on the canary and on a ~1 GB model of linear layers (float32 and
bfloat16), at the process's torch thread count (run it with OMP_NUM_THREADS=1 for one core).

`identical` checks the checksum against itself computed in chunks of an odd size (another
reduction order), which must not change it.

Usage: OMP_NUM_THREADS=1 python benchmarks/weights_checksum.py
Last line: RESULT name=weights_checksum speedup=<digest s / checksum s on the 1 GB float32 model> identical=<bool> ...
"""

from __future__ import annotations

import hashlib
import time

import torch
from common import result_line

from idefics_eval.models import (
    CANARY_DIR,
    load_model,
    weights_checksum,
    weights_fingerprint,
)


def sha256_of_weights(model: torch.nn.Module) -> str:
    """The baseline: every weight's bytes (with its name, shape and dtype) through SHA-256, on the host."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def seconds(function, model) -> float:
    """The best of three runs: the machine is shared."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        function(model)
        best = min(best, time.perf_counter() - start)
    return best


def gigabyte_model(dtype: torch.dtype) -> torch.nn.Module:
    """Linear layers of 4096 x 4096 (IDEFICS-9B's width) holding about 1 GB in `dtype`."""
    layers = (1 << 30) // (4096 * 4096 * torch.empty((), dtype=dtype).element_size())
    with torch.no_grad():
        return torch.nn.Sequential(*(torch.nn.Linear(4096, 4096, bias=False, dtype=dtype) for _ in range(layers)))


def main() -> None:
    models = {"canary": load_model(str(CANARY_DIR), device="cpu", progress=False).model,
              "1gb_float32": gigabyte_model(torch.float32), "1gb_bfloat16": gigabyte_model(torch.bfloat16)}
    found: dict[str, float] = {}
    identical = True
    for name, model in models.items():
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        found[f"{name}_mb"] = size / 1e6
        for kind, function in (("checksum", weights_checksum), ("digest", sha256_of_weights), ("fingerprint", weights_fingerprint)):
            found[f"{name}_{kind}_s"] = seconds(function, model)
        found[f"{name}_checksum_gb_per_s"] = size / found[f"{name}_checksum_s"] / 1e9
        found[f"{name}_digest_gb_per_s"] = size / found[f"{name}_digest_s"] / 1e9
        identical &= weights_checksum(model) == weights_checksum(model, words_per_pass=(1 << 20) + 7)
    print(result_line("weights_checksum", found["1gb_float32_digest_s"] / found["1gb_float32_checksum_s"], identical,
                      threads=torch.get_num_threads(), **found))


if __name__ == "__main__":
    main()
