"""Multi-process training under `torchrun`: one process per GPU (NCCL) or per CPU worker (gloo).

    torchrun --nproc-per-node 4 -m vqgen train-vqvae --data DIR --run RUN

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `init()` joins the process group when they say
there is more than one process, and everything here is a no-op in a single process. The rules
the training loop follows:

- `--batch-size` is the global batch: each rank takes its share of every batch through a
  DistributedSampler, and DDP averages the gradients, so N processes take the same steps as
  one process with the same batch;
- only rank 0 logs, plots, validates and writes files; the others wait for it (`main_first`,
  `barrier`) where they read what it wrote;
- decisions that end a step (Ctrl-C, the time budget, a non-finite loss) are agreed through one
  small all-reduce per step, so no rank waits forever for the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vqgen.errors import TrainingError


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group when WORLD_SIZE > 1; returns this rank's device.

    NCCL with one GPU per process (LOCAL_RANK) on CUDA, gloo on the CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. filling a cache), then the other ranks do."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` when distributed, else the model itself.

    Buffers (the quantizer's codebook state) are kept equal by the quantizer's own
    all-reduces, so DDP does not re-broadcast them before every forward.
    """
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # newer torch renamed the option (and warns about the old name)
    new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, **no_sync)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def sum_(tensor: Tensor) -> Tensor:
    """All-reduce `tensor` in place by summing over ranks; returns it."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean(values: list[float], device: torch.device) -> list[float]:
    """Every rank's `values` averaged over ranks (one all-reduce); a flag that is non-zero on
    any rank stays positive."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world_size()).tolist()


def min_int(value: int, device: torch.device) -> int:
    """The smallest of every rank's `value`."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_batch(x: Tensor, batch: int) -> Tensor:
    """Rows of every rank's `x` in the order one process would hold the global batch.

    `x` is (batch * r, ...) with r rows per sample, e.g. the flattened positions of an encoder
    output. A DistributedSampler deals sample j of rank k from global position j * world + k,
    so the gathered (world, batch, r, ...) rows are interleaved back sample by sample.
    """
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    stacked = torch.stack(parts).view(world_size(), batch, -1, *x.shape[1:])
    return stacked.transpose(0, 1).reshape(-1, *x.shape[1:])


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, to check that ranks hold the same model."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprints(model: nn.Module, device: torch.device) -> list[str]:
    """Every rank's `fingerprint` of its copy of the model, in rank order."""
    mine = fingerprint(model)
    if not active():
        return [mine]
    # the digests as byte tensors: all_gather_object would pickle
    digest = torch.tensor(list(bytes.fromhex(mine)), dtype=torch.uint8, device=device)
    parts = [torch.empty_like(digest) for _ in range(world_size())]
    dist.all_gather(parts, digest)
    return [bytes(p.cpu().tolist()).hex() for p in parts]


def check_same_model(model: nn.Module, where: str) -> None:
    """Under torchrun, stop with an error if the ranks' copies of `model` differ."""
    if not active():
        return
    device = next(model.parameters()).device
    prints = fingerprints(model, device)
    if len(set(prints)) > 1:
        raise TrainingError(
            f"{where}: the {world_size()} processes hold different weights; "
            "this is a bug in vqgen, please report it"
        )
