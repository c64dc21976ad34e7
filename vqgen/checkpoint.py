"""Run-directory I/O: safetensors weights beside a JSON description, written atomically.

A run directory holds, per stage (`vqvae`, `prior`):

    <stage>.safetensors / <stage>.json            best weights (what later verbs use)
    <stage>-last.safetensors / <stage>-last.json  weights and settings of the latest step
    train_state-<stage>.safetensors               every model's weights and optimiser, the
                                                  step and the RNG: what --resume restores
    metrics-<stage>.jsonl                         one JSON object per logged step or epoch

The JSON records the resolved configs, metrics, step, versions and the weights' SHA-256, so
`load_vqvae(run)` rebuilds the model from the run alone. No pickle anywhere: loading a run never
executes code from a file. Config sections are read with `config.load_config`, so a run of
an older format loads with defaults for settings added since. Every file is written to a
temporary name and renamed into place, so an interrupted write never leaves a half-written
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import vqgen
from vqgen.config import PriorConfig, VQVAEConfig, load_config
from vqgen.errors import CheckpointError, UsageError

FORMAT = "vqgen-run/1"
UMASK = os.umask(0)
os.umask(UMASK)  # read the process umask (the only way is to set it and set it back)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the user's usual mode
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())  # on disk before it takes the real name
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def to_json(payload: Any, indent: int | None = None) -> str:
    """JSON text in which a value that is not finite (NaN, infinity) is null: JSON has no
    spelling for them, and a reader must not mistake one for a number."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(payload), indent=indent, allow_nan=False)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write `payload` as indented JSON."""
    atomic_write(path, lambda tmp: tmp.write_text(to_json(payload, indent=2) + "\n"))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with one clear line when it is missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return payload


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None
) -> None:
    """Atomically write tensors (made contiguous, on the CPU) to a safetensors file."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"json": to_json(meta)} if meta is not None else None
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file is one clear line."""
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def load_tensor_meta(path: Path) -> dict[str, Any]:
    """The JSON stored in a safetensors file's metadata by `save_tensors`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("json", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def save_model(
    run_dir: Path, stage: str, model: nn.Module, meta: dict[str, Any], last: bool
) -> Path:
    """Write `<stage>[-last].safetensors` and its JSON; returns the weights path."""
    name = f"{stage}-last" if last else stage
    weights = run_dir / f"{name}.safetensors"
    save_tensors(weights, model.state_dict())
    payload = {
        "format": FORMAT,
        "stage": stage,
        "vqgen_version": vqgen.__version__,
        "torch_version": torch.__version__,
        **meta,
        "weights": weights.name,
        "weights_sha256": sha256(weights),
    }
    write_json(run_dir / f"{name}.json", payload)
    return weights


def json_path(run_dir: Path, stage: str, last: bool = False) -> Path:
    """Where a stage's best (or last) checkpoint is described."""
    return run_dir / f"{stage}-last.json" if last else run_dir / f"{stage}.json"


def read_meta(run_dir: Path, stage: str, last: bool = False) -> dict[str, Any]:
    """The JSON description of a stage's checkpoint, checked for format and stage."""
    path = json_path(run_dir, stage, last)
    if not path.is_file():
        hint = (
            "run `vqgen train-vqvae` first" if stage == "vqvae" else "run `vqgen train-prior` first"
        )
        raise UsageError(f"{run_dir} has no {stage} checkpoint ({path.name} missing); {hint}")
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vqgen checkpoint of format {FORMAT}")
    if meta.get("stage") != stage:
        raise CheckpointError(f"{path} holds a '{meta.get('stage')}' model, expected '{stage}'")
    return meta


def load_weights(run_dir: Path, stage: str, model: nn.Module, last: bool = False) -> None:
    """Load a stage's weights into `model`, refusing files whose shapes do not match it."""
    name = f"{stage}-last" if last else stage
    path = run_dir / f"{name}.safetensors"
    load_state(model, load_tensors(path), path)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """`model.load_state_dict(state)`, with a missing, unexpected or misshapen tensor a
    CheckpointError naming `path` and the tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        key = (missing or unexpected)[0]
        what = "lacks" if missing else "has an unexpected"
        raise CheckpointError(f"{path} does not match its config: it {what} tensor '{key}'")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path} does not match its config: '{key}' has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)


def load_vqvae(run_dir: Path, device: str | torch.device = "cpu", last: bool = False):
    """Rebuild the VQ-VAE from a run directory; returns (model in eval mode, meta)."""
    from vqgen.models.vqvae import VQVAE

    meta = read_meta(run_dir, "vqvae", last)
    where = f"{json_path(run_dir, 'vqvae', last)} 'model'"
    model = VQVAE(load_config(VQVAEConfig, meta.get("model"), where))
    load_weights(run_dir, "vqvae", model, last)
    return model.to(device).eval(), meta


def load_prior(
    run_dir: Path,
    device: str | torch.device = "cpu",
    last: bool = False,
    vqvae_cfg: VQVAEConfig | None = None,
):
    """Rebuild the prior from a run directory; returns (model in eval mode, meta).

    Refuses a prior whose codes came from a VQ-VAE other than the one now in the run, one that
    does not record that VQ-VAE, one whose codebook size or grid differ from `vqvae_cfg` (the
    VQ-VAE that will decode its codes), and label names that do not fit its labels.
    """
    from vqgen.models.pixelcnn import GatedPixelCNN

    meta = read_meta(run_dir, "prior", last)
    path = json_path(run_dir, "prior", last)
    cfg = load_config(PriorConfig, meta.get("model"), f"{path} 'model'")
    vqvae_hash = meta.get("vqvae_sha256")
    if not isinstance(vqvae_hash, str):
        raise CheckpointError(
            f"{path} does not record the VQ-VAE it was trained for ('vqvae_sha256'); "
            "run `vqgen train-prior` again"
        )
    vqvae_path = run_dir / "vqvae.safetensors"
    if vqvae_path.is_file() and sha256(vqvae_path) != vqvae_hash:
        raise CheckpointError(
            f"{run_dir / 'prior.json'} was trained on codes of another VQ-VAE; "
            "run `vqgen train-prior` again"
        )
    if vqvae_cfg is not None and (cfg.codebook_size, cfg.grid) != (
        vqvae_cfg.codebook_size,
        vqvae_cfg.grid,
    ):
        raise CheckpointError(
            f"{path} is a prior over {cfg.codebook_size} codes on a {cfg.grid}x{cfg.grid} grid; "
            f"the run's VQ-VAE has {vqvae_cfg.codebook_size} codes on a "
            f"{vqvae_cfg.grid}x{vqvae_cfg.grid} grid; run `vqgen train-prior` again"
        )
    names = meta.get("label_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or (
        cfg.condition == "label" and len(names) != cfg.num_labels
    ):
        raise CheckpointError(
            f"{path}: 'label_names' must list the prior's {cfg.num_labels} label names, "
            f"got {names!r}"
        )
    model = GatedPixelCNN(cfg)
    load_weights(run_dir, "prior", model, last)
    return model.to(device).eval(), meta


def check_run_dir(run_dir: Path) -> Path:
    """A run directory that exists; one line naming it when it does not."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} is a file, not a folder")
    if not run_dir.is_dir():
        raise UsageError(
            f"run directory {run_dir} does not exist; run `vqgen train-vqvae --run {run_dir}` first"
        )
    return run_dir


# -- train state: what --resume needs, in one file ---------------------------------------------

TRAIN_STATE_FORMAT = "vqgen-train-state/2"  # 2: one weights and optimiser section per model


def train_state_path(run_dir: Path, stage: str) -> Path:
    return run_dir / f"train_state-{stage}.safetensors"


def save_train_state(
    run_dir: Path,
    stage: str,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    info: dict[str, Any],
) -> None:
    """The weights and optimiser of every model of a stage (e.g. a VQ-VAE and its
    discriminator), the RNG and `info` (step, epoch, ...), in one file: one atomic rename
    keeps them consistent."""
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    groups = {}
    for name, model in models.items():
        tensors.update({f"{name}.weights.{k}": v for k, v in model.state_dict().items()})
        state = optimizers[name].state_dict()
        for idx, slots in state["state"].items():
            tensors.update({f"{name}.opt.{idx}.{slot}": v for slot, v in slots.items()})
        groups[name] = state["param_groups"]
    meta = {**info, "format": TRAIN_STATE_FORMAT, "param_groups": groups}
    save_tensors(train_state_path(run_dir, stage), tensors, meta)


def load_train_state(
    run_dir: Path,
    stage: str,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore what `save_train_state` wrote into `models`, `optimizers` and the RNG;
    returns its `info`."""
    path = train_state_path(run_dir, stage)
    if not path.is_file():
        raise UsageError(f"--resume: {path} not found; start without --resume")
    tensors, meta = load_tensors(path), load_tensor_meta(path)
    if meta.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(
            f"{path} is from another vqgen version and cannot be resumed; "
            "train again without --resume"
        )
    for name, model in models.items():
        load_state(model, _section(tensors, f"{name}.weights."), path)
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in _section(tensors, f"{name}.opt.").items():
            idx, slot = key.split(".", 1)
            slots.setdefault(int(idx), {})[slot] = value
        try:
            optimizers[name].load_state_dict(
                {"state": slots, "param_groups": meta["param_groups"][name]}
            )
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path} does not match this model ({err})") from None
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


# -- metrics log: one JSON object per line -----------------------------------------------------


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(to_json(record) + "\n")


def trim_log(path: Path, last_step: int) -> None:
    """Keep the complete lines of a metrics log up to `last_step`: a killed run may have logged
    steps after its last checkpoint, or torn its last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", float("inf")) <= last_step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))
