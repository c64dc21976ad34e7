"""Which device a verb runs on, whether it computes in bf16 there, and the batch it trains with.

device = resolve_device("auto")      # CUDA where there is one, else the CPU
with autocast(device):               # bf16 where the device computes it natively
    ...
cfg, said = for_device(cfg, device.type)   # the device's batch size and learning rate
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from vqgen.config import TrainConfig
from vqgen.errors import UsageError


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` picks CUDA when there is one; cpu, cuda and cuda:N (or a torch.device) are
    taken as given. Asking for a CUDA device that is not there is a usage error."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{name}'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"--device {name}: this machine has {count} CUDA device(s)")
    return device


def computes_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA, or a CPU with AVX512-BF16 (by torch's
    own probe). Training runs under bf16 autocast there, 1.4-1.8x faster on such a CPU
    (docs/decisions.md, bf16); elsewhere bf16 would be slower than float32."""
    if device.type == "cuda":
        return True
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private: looked up, not assumed
    return device.type == "cpu" and probe is not None and bool(probe())


def autocast(
    device: torch.device | str, enabled: bool | None = None
) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` where it computes bf16 natively (or as `enabled` says)."""
    device = torch.device(device)
    on = computes_bf16(device) if enabled is None else enabled
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


# The batch a device trains with where --batch-size is not given: a 2-core CPU's slices/s do
# not grow past 16 (docs/decisions.md, batch-size), a GPU keeps busy only with more
DEVICE_BATCH = {"cpu": 16, "cuda": 64}
BASE_BATCH, BASE_LR = 16, 2e-3  # the learning rate chosen at batch 16 (docs/decisions.md)


def for_device(cfg: TrainConfig, device: str) -> tuple[TrainConfig, str]:
    """`cfg` with the batch size and learning rate left to the device filled in, and a line
    saying which. The rate follows the batch by the square-root rule for Adam (Malladi et al.
    2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms",
    https://arxiv.org/abs/2205.10287): BASE_LR x sqrt(batch / BASE_BATCH)."""
    batch = cfg.batch_size or DEVICE_BATCH.get(device, BASE_BATCH)
    lr = cfg.lr if cfg.lr is not None else BASE_LR * math.sqrt(batch / BASE_BATCH)
    said = [f"batch {batch}" + ("" if cfg.batch_size else f" (the default on {device})")]
    said.append(f"lr {lr:g}" + ("" if cfg.lr is not None else f" ({BASE_LR:g} at batch 16)"))
    return dataclasses.replace(cfg, batch_size=batch, lr=lr), ", ".join(said)
