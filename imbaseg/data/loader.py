"""``build_loader``: a reproducible torch DataLoader for ``SegDataset``.

Seeding: the loader's ``torch.Generator`` (seeded with ``seed``, plus the rank when distributed) drives
the shuffling and, at the start of every epoch, DataLoader's per-worker base seed. Each worker then
has ``torch.initial_seed() = base_seed + worker_id``; ``seed_worker`` copies it into numpy and
``random`` and reseeds the dataset's per-item generator with it. Items go to workers round-robin in a
fixed order, so the same seed gives the same batches (augmentations included) for the same
``num_workers``; different worker counts give different, equally valid, draws. With
``num_workers=0`` the loader reseeds the dataset from its generator at every epoch instead.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from imbaseg.errors import UserError


def _base_dataset(dataset):
    """Unwrap Subset/ConcatDataset-like wrappers down to the object that has ``reseed``."""
    while not hasattr(dataset, "reseed") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the dataset from the worker's torch seed."""
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = _base_dataset(info.dataset) if info is not None else None
    if dataset is not None and hasattr(dataset, "reseed"):
        dataset.reseed(seed)


class SeededDataLoader(DataLoader):
    """DataLoader that reseeds the dataset at each epoch when it runs in the main process."""

    def __iter__(self):
        if self.num_workers == 0:
            dataset = _base_dataset(self.dataset)
            if hasattr(dataset, "reseed"):
                dataset.reseed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        return super().__iter__()


class ShardSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``world`` takes items ``r, r+world, ...`` in order: each item once over all ranks.

    Unlike DistributedSampler it never pads with repeated items, so metrics summed over ranks
    cover the whole split exactly (shards may differ in length by one).
    """

    def __init__(self, dataset, num_replicas: int, rank: int):
        self.n, self.world, self.rank = len(dataset), int(num_replicas), int(rank)

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def build_loader(dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                 drop_last: bool = False, distributed: bool = False, pin_memory: bool | None = None,
                 persistent_workers: bool | None = None, prefetch_factor: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
    """A seeded DataLoader; with ``distributed`` a DistributedSampler (call ``loader.sampler.set_epoch(e)``).

    ``distributed`` with ``shuffle`` uses DistributedSampler (the same permutation for every world
    size, so a global batch holds the same items on 1 or N processes); without ``shuffle`` it uses
    ``ShardSampler`` (no padding, for evaluation). ``num_replicas``/``rank`` default to the process
    group's; pass them explicitly (e.g. 1 and 0) to get the same sampling in a single process.

    pin_memory defaults to ``torch.cuda.is_available()``; persistent_workers to ``num_workers > 0``
    (workers keep their memory map and imports across epochs); prefetch_factor to torch's default.
    """
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}.")
    if int(num_workers) < 0:
        raise UserError(f"num_workers must be >= 0, got {num_workers}.")
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        if shuffle:
            sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                                         seed=seed, drop_last=drop_last)
            rank = sampler.rank
        else:
            import torch.distributed as dist

            world = num_replicas if num_replicas is not None else dist.get_world_size()
            rank = rank if rank is not None else dist.get_rank()
            sampler = ShardSampler(dataset, world, rank)
    rank = rank or 0
    generator = torch.Generator().manual_seed(int(seed) + 1_000_003 * rank)  # ranks augment differently
    workers = int(num_workers)
    return SeededDataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=bool(shuffle) and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        worker_init_fn=seed_worker,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else bool(pin_memory),
        persistent_workers=workers > 0 and (persistent_workers is None or bool(persistent_workers)),
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )
