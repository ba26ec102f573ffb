"""Data parallelism: the one place that knows how many processes there are.

Under `torchrun` or `accelerate launch` (WORLD_SIZE > 1 in the environment) every process joins a
process group (NCCL on GPUs, gloo on CPU), takes the GPU of its local rank, and scores its own
shard of the queries. Rank 0 writes shared files (manifest, indexes, final predictions, results);
the others wait for it at barriers. A single process needs none of this and never initialises
torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def default_threads() -> int:
    """Torch's intra-op threads when --threads is not given: OMP_NUM_THREADS where it is set, else
    one per core this process may use that other programs do not keep busy, shared among the run's
    processes on this machine (LOCAL_WORLD_SIZE under torchrun), at least one.

    Busy cores are the whole part of the 1-minute load average. Torch's own default (every core)
    is what makes a shared machine slow: an operation waits for its slowest thread, and a thread
    whose core another program holds stalls every operation (10-30x slower on two shared cores with
    the demo's tiny model), while one thread per free core loses nothing."""
    try:
        requested = int(os.environ.get("OMP_NUM_THREADS", ""))
        if requested > 0:
            return requested
    except ValueError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, (cores - busy) // local_processes)


@contextmanager
def torch_threads(requested: int | None) -> Iterator[int]:
    """Torch's intra-op thread count for a command: `requested` (--threads), else `default_threads()`;
    the previous count comes back afterwards (an in-process caller keeps its own)."""
    previous = torch.get_num_threads()
    threads = requested or default_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
