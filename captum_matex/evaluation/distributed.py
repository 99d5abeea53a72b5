"""Sharding a benchmark over ``torchrun`` workers (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Worker:
    r"""This process's place in the run: ``rank`` of ``world`` workers."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this worker merges and reports."""
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This worker's items: every ``world``-th item from ``rank`` on."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        """Wait for every worker (no-op for a single process)."""
        if self.world > 1:
            dist.barrier()


@contextlib.contextmanager
def worker_from_env(device: str = "cpu") -> Iterator[Worker]:
    r"""The :class:`Worker` of this process, from ``torchrun``'s environment.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) a process group is started (nccl
    for CUDA devices, gloo otherwise) and destroyed on exit; a plain process
    is worker 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Worker()
        return
    rank = int(os.environ["RANK"])
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        yield Worker(rank, world)
    finally:
        dist.destroy_process_group()
