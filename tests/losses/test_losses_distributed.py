"""``sync_stats=True`` with a real 2-process gloo group on CPU.

What is asserted, for equal per-rank batches (as a DistributedSampler with drop_last gives):
- averaging the per-rank losses, and the per-rank gradients (what DDP does to parameter gradients),
  gives exactly the single-process loss and gradient of the concatenated batch: mean_r L_r = L and
  grad_r / world = dL/dz[rank slice];
- dou's value is the global one on every rank (L_r = L): its sums are all-reduced with gradient.
With ``sync_stats=False`` the per-rank statistics differ (checked, so the test can fail). The loader's
precomputed target terms (``distance_inputs``) give each rank the same loss and gradient as computing
them in forward, to float32 rounding.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch
import torch.distributed as dist

from imbaseg.losses import distance_maps, get_loss

SYNC_LOSSES = ["dynamit-batch", "boundary-gaussian", "dou", "boundary-dou"]
WORLD = 2
PER_RANK = 2

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform == "win32",
                                reason="needs torch.distributed with gloo")


def global_batch():
    """4 images; rank 0 gets the blob-heavy half, rank 1 a sparse half, so per-rank counts differ."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(WORLD * PER_RANK, 1, 12, 12, generator=g, dtype=torch.float64) * 2
    y = torch.zeros(WORLD * PER_RANK, 1, 12, 12, dtype=torch.float64)
    y[0, 0, 2:9, 3:10] = 1
    y[1, 0, 4:12, 0:6] = 1
    y[2, 0, 5, 2:10] = 1
    y[3, 0, 7, 7] = 1
    return z, y


def loader_inputs(y: torch.Tensor, keys) -> dict[str, torch.Tensor]:
    """The data loader's precomputed inputs of a batch (``distance_maps`` per image, stacked)."""
    maps = [distance_maps(y[i, 0].numpy(), keys) for i in range(len(y))]
    return {k: torch.stack([torch.from_numpy(m[k]) for m in maps])[:, None] for k in keys}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z_all, y_all = global_batch()
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = {}
        for sync in (True, False, "precomputed"):
            for name in SYNC_LOSSES:
                z = z_all[part].clone().requires_grad_(True)
                loss = get_loss(name, sync_stats=bool(sync))
                extras = loader_inputs(y_all[part], loss.distance_inputs) if sync == "precomputed" else {}
                value = loss(z, y_all[part], **extras)
                value.backward()
                results[name, sync] = (value.detach(), z.grad.detach())
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sync_stats_gives_the_single_process_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    # fork: no re-import of torch in the children (seconds on a busy 2-core machine); the children set
    # one intra-op thread first, as DataLoader workers do, so no OpenMP pool is touched after the fork.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method=method)
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process gloo group did not finish in 90 s")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    ranks = [{name: r[name, True] for name in SYNC_LOSSES} for r in results]
    unsynced = [{name: r[name, False] for name in SYNC_LOSSES} for r in results]
    z_all, y_all = global_batch()
    for name in SYNC_LOSSES:
        z = z_all.clone().requires_grad_(True)
        single = get_loss(name)(z, y_all)
        single.backward()
        values = torch.stack([r[name][0] for r in ranks])
        assert values.mean().item() == pytest.approx(single.item(), rel=1e-10), name
        if name == "dou":
            assert torch.allclose(values, single.detach().expand(WORLD), rtol=1e-10, atol=0)
        for rank, r in enumerate(ranks):
            part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            assert torch.allclose(r[name][1] / WORLD, z.grad[part], rtol=1e-8, atol=1e-14), (name, rank)

    for name in SYNC_LOSSES:
        single = get_loss(name)(z_all, y_all).item()
        mean = torch.stack([r[name][0] for r in unsynced]).mean().item()
        assert abs(mean - single) > 1e-4 * abs(single), name  # per-rank statistics really differ

    # the loader's precomputed terms (float32 Gaussian maps, exact counts) with synced statistics: the
    # same per-rank losses and gradients as computing them in forward, to float32 rounding
    for r in results:
        for name in SYNC_LOSSES:
            (v, g), (v_pre, g_pre) = r[name, True], r[name, "precomputed"]
            assert v_pre.item() == pytest.approx(v.item(), rel=1e-6), name
            assert torch.allclose(g_pre, g, rtol=1e-5, atol=1e-12), name
