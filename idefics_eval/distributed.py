"""Data parallelism: the one place that knows how many processes there are.

Under `torchrun` or `accelerate launch` (WORLD_SIZE > 1 in the environment) every process joins a
process group (NCCL on GPUs, gloo on CPU), takes the GPU of its local rank, and scores its own
shard of the queries. Rank 0 writes shared files (manifest, indexes, final predictions, results);
the others wait for it at barriers. A single process needs none of this and never initialises
torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share: every size-th item from its rank on; together the shards cover `items` once."""
        return items[self.rank :: self.size]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def device(self, requested: str | None) -> str | None:
        """Each process takes the GPU of its local rank unless a device was named."""
        if self.size > 1 and requested in (None, "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested


_WORLD: World | None = None


def world() -> World:
    """The process group of this run, joined on first use when launched with several processes."""
    global _WORLD
    if _WORLD is None:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        _WORLD = World(rank=int(os.environ.get("RANK", "0")), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return _WORLD
