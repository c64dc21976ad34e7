"""Models in a run directory: safetensors weights beside a JSON description, and the train
state that --resume restores. Where each file lives is vqgen.rundir's; how a file is written
(atomically) is vqgen.fileio's.

The JSON records the resolved configs, metrics, step, versions and the weights' SHA-256, so
`load_vqvae(run)` rebuilds the model from the run alone. No pickle anywhere: loading a run never
executes code from a file. Config sections are read with `config.load_config`, so a run of
an older format loads with defaults for settings added since.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

import vqgen
from vqgen import conditioning
from vqgen.config import DataConfig, PriorConfig, VQLossConfig, VQVAEConfig, load_config
from vqgen.data import resolve
from vqgen.errors import CheckpointError, UsageError
from vqgen.fileio import (
    check_regular,
    load_tensor_meta,
    load_tensors,
    read_json,
    save_tensors,
    sha256,
    write_json,
)
from vqgen.rundir import RunDir

FORMAT = "vqgen-run/1"
# every top-level key a model's JSON has held, in this format: any other is refused
META_KEYS = {
    *("format", "stage", "vqgen_version", "torch_version", "weights", "weights_sha256"),
    *("model", "loss", "data", "train", "step", "epoch", "metrics"),  # both stages
    *("top_model", "vqvae_sha256", "label_names", "slice_range", "baselines_bits"),  # prior
}
# a vqvae.json without a "loss" section keeps the loss settings in "model"; such a run that
# recorded no L1 weight was trained without the L1 term, which is on by default now
LEGACY_LOSS = {"l1_weight": 0.0}
# settings of the PatchGAN discriminator that vqgen no longer has (docs/decisions.md,
# "adversarial"): a VQ-VAE trained with it loads and decodes as any other, but is not resumed
REMOVED_LOSS_KEYS = ("adversarial", "disc_start", "disc_weight", "disc_channels", "disc_layers")
# a prior.json from before dropout, --augment and --dilation were recorded was trained without
# them (and its network has no dilated layers), the defaults of today notwithstanding
LEGACY_PRIOR = {"dropout": 0.0, "augment": 0, "dilation": 1}


def save_model(run: RunDir, stage: str, model: nn.Module, meta: dict[str, Any], last: bool) -> Path:
    """Write `<stage>[-last].safetensors` and its JSON; returns the weights path."""
    weights = run.weights(stage, last)
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
    write_json(run.meta(stage, last), payload)
    return weights


def read_meta(run: RunDir, stage: str, last: bool = False) -> dict[str, Any]:
    """The JSON description of a stage's checkpoint, checked for format and stage."""
    path = run.meta(stage, last)
    check_regular(path)  # a folder or a FIFO is named as such, never read (a FIFO blocks)
    if not path.is_file():
        raise run.missing(stage, last)
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vqgen checkpoint of format {FORMAT}")
    if meta.get("stage") != stage:
        raise CheckpointError(f"{path} holds a '{meta.get('stage')}' model, expected '{stage}'")
    unknown = sorted(set(meta) - META_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown key '{unknown[0]}' (not one vqgen writes)")
    return meta


def load_weights(run: RunDir, stage: str, model: nn.Module, last: bool = False) -> None:
    """Load a stage's weights into `model`, refusing files whose shapes do not match it."""
    path = run.weights(stage, last)
    load_state(model, load_tensors(path), path)


def build_checked(build: Callable[[], nn.Module], path: Path) -> nn.Module:
    """`build()`'s model, once a copy built on the meta device (no memory) has every tensor of
    the weights at `path`, by the shapes in the file's header: sizes in a run file that do not
    fit its weights are refused before anything is allocated."""
    with torch.device("meta"):
        probe = build()
    check_regular(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    check_shapes({k: tuple(v.shape) for k, v in probe.state_dict().items()}, found, path)
    return build()


def check_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: Path
) -> None:
    """Refuse, naming `path` and the tensor, weights that lack one of `expected`'s tensors,
    have one more, or have one of another shape."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        key = (missing or unexpected)[0]
        what = "lacks" if missing else "has an unexpected"
        raise CheckpointError(f"{path} does not match its config: it {what} tensor '{key}'")
    for key, shape in expected.items():
        if found[key] != shape:
            raise CheckpointError(
                f"{path} does not match its config: '{key}' has shape {found[key]}, "
                f"expected {shape}"
            )


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """`model.load_state_dict(state)`, with a missing, unexpected or misshapen tensor a
    CheckpointError naming `path` and the tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path)
    model.load_state_dict(state)


def load_vqvae(run: RunDir, device: str | torch.device = "cpu", last: bool = False):
    """Rebuild the VQ-VAE from a run directory; returns (model in eval mode, meta)."""
    from vqgen.models.vqvae import VQVAE

    meta, where = read_meta(run, "vqvae", last), run.meta("vqvae", last)
    cfg = vqvae_configs(meta, where)[0]
    data = meta.get("data")
    if isinstance(data, dict) and "size" in data:  # an older run's: it must agree with the model
        data_config(meta, where)
    model = build_checked(lambda: VQVAE(cfg), run.weights("vqvae", last))
    load_weights(run, "vqvae", model, last)
    return model.to(device).eval(), meta


def run_data(run: RunDir, meta: dict[str, Any], moved_to: str | None = None) -> DataConfig:
    """The data a run's VQ-VAE was trained on (its vqvae.json `meta`), or at `moved_to` where
    it has moved since; a recorded path that no longer exists is one line saying where it was
    recorded and how to point elsewhere."""
    where = run.meta("vqvae")
    data = data_config(meta, where)
    if moved_to is not None:
        place = moved_to if moved_to == "mni152" else str(Path(moved_to).expanduser().resolve())
        found = resolve(place)[0]  # a --data that is no dataset fails here
        if found != data.kind:
            what = "is the embedded mni152 data" if place == "mni152" else f"holds {found} data"
            raise UsageError(
                f"--data {moved_to} {what}, but this run was trained on {data.kind} data "
                f"('{data.source}', recorded in {where}); --data gives the new place of that "
                "same data, where it moved"
            )
        return dataclasses.replace(data, source=place)
    if data.kind != "mni152" and not Path(data.source).exists():
        raise UsageError(
            f"data path '{data.source}' (where {where} records the data) does not exist; if "
            "the data has moved, give its new place with --data NEW (train-vqvae --resume, "
            "train-prior and evaluate take it)"
        )
    return data


def data_config(meta: dict[str, Any], where: Path) -> DataConfig:
    """The "data" section of a vqvae.json at `where`. A run from before the slice size had its
    one home in "model" records it here too, where it must agree with the model's."""
    data = meta.get("data")
    if isinstance(data, dict) and "size" in data:
        size = vqvae_configs(meta, where)[0].size
        if data["size"] != size:
            raise CheckpointError(
                f"{where}: 'data' size {data['size']!r} differs from 'model' size {size}, the "
                "one 'size' a run has now"
            )
        data = {k: v for k, v in data.items() if k != "size"}
    return load_config(DataConfig, data, f"{where} 'data'")


def vqvae_configs(meta: dict[str, Any], where: Path) -> tuple[VQVAEConfig, VQLossConfig]:
    """The model and loss settings of a vqvae.json at `where`. A run from before the loss had
    its own section keeps those settings in "model"; one without them takes the defaults. The
    settings of the removed discriminator are dropped (`trained_adversarially` tells)."""
    model, loss = meta.get("model"), meta.get("loss")
    if loss is None and isinstance(model, dict):
        loss_keys = {"l1_weight", *REMOVED_LOSS_KEYS}
        loss = LEGACY_LOSS | {k: v for k, v in model.items() if k in loss_keys}
        model = {k: v for k, v in model.items() if k not in loss_keys}
    if isinstance(loss, dict):
        loss = {k: v for k, v in loss.items() if k not in REMOVED_LOSS_KEYS}
    return (
        load_config(VQVAEConfig, model, f"{where} 'model'"),
        load_config(VQLossConfig, loss, f"{where} 'loss'"),
    )


def trained_adversarially(meta: dict[str, Any]) -> bool:
    """Whether a vqvae.json's VQ-VAE was trained with the discriminator vqgen no longer has."""
    sections = [meta.get("loss"), meta.get("model")]
    return any(isinstance(s, dict) and s.get("adversarial") is True for s in sections)


def load_prior(
    run: RunDir,
    device: str | torch.device = "cpu",
    last: bool = False,
    vqvae_cfg: VQVAEConfig | None = None,
    vqvae_hash: str | None = None,
):
    """Rebuild the prior from a run directory; returns (model in eval mode, meta).

    Refuses a prior whose codes came from a VQ-VAE other than the one now in the run (whose
    SHA-256 is `vqvae_hash`, computed here if not given), one that does not record that VQ-VAE,
    one whose codebook size or grid differ from `vqvae_cfg` (the VQ-VAE that will decode its
    codes), and label names that do not fit its labels.
    """
    from vqgen.models import build_prior

    meta = read_meta(run, "prior", last)
    path = run.meta("prior", last)
    cfg, top_cfg = prior_configs(meta, path)
    recorded = meta.get("vqvae_sha256")
    if not isinstance(recorded, str):
        raise CheckpointError(
            f"{path} does not record the VQ-VAE it was trained for ('vqvae_sha256'); "
            "train it anew with `vqgen train-prior --overwrite`"
        )
    vqvae_path = run.weights("vqvae")
    if vqvae_hash is None and vqvae_path.is_file():
        vqvae_hash = sha256(vqvae_path)
    if vqvae_hash is not None and vqvae_hash != recorded:
        raise CheckpointError(
            f"{run.meta('prior')} was trained on codes of another VQ-VAE; "
            "train it anew with `vqgen train-prior --overwrite`"
        )
    grids = [c.grid for c in (top_cfg, cfg) if c is not None]
    if vqvae_cfg is not None and (cfg.codebook_size, grids) != (
        vqvae_cfg.codebook_size,
        vqvae_cfg.grids,
    ):
        raise CheckpointError(
            f"{path} is a prior over {cfg.codebook_size} codes on {describe_grids(grids)}; "
            f"the run's VQ-VAE has {vqvae_cfg.codebook_size} codes on "
            f"{describe_grids(vqvae_cfg.grids)}; train it anew with `vqgen train-prior --overwrite`"
        )
    conditioning.check_metadata(cfg, meta, path)
    model = build_checked(lambda: build_prior(cfg, top_cfg), run.weights("prior", last))
    load_weights(run, "prior", model, last)
    return model.to(device).eval(), meta


def prior_configs(meta: dict[str, Any], where: Path) -> tuple[PriorConfig, PriorConfig | None]:
    """The prior settings of a prior.json at `where`: its "model" (the bottom or only level)
    and, for a run of two code levels, its "top_model"."""

    def read(key: str) -> PriorConfig:
        given = meta.get(key)
        if isinstance(given, dict):
            if given.get("attention") is True:
                raise CheckpointError(
                    f"{where}: this prior was trained with --attention, which vqgen no longer "
                    'has (docs/decisions.md, "attention"); train it anew with '
                    "`vqgen train-prior --overwrite`"
                )
            given = LEGACY_PRIOR | {k: v for k, v in given.items() if k != "attention"}
        return load_config(PriorConfig, given, f"{where} '{key}'")

    cfg = read("model")
    if not cfg.top_grid:
        return cfg, None
    top = read("top_model")
    if top.grid != cfg.top_grid or top.top_grid:
        raise CheckpointError(f"{where}: 'top_model' is not the prior of 'model''s top grid")
    return cfg, top


def describe_grids(grids: list[int]) -> str:
    """'a 32x32 grid' (one level) or '8x8 and 32x32 grids' (top and bottom level)."""
    sides = " and ".join(f"{g}x{g}" for g in grids)
    return f"a {sides} grid" if len(grids) == 1 else f"{sides} grids"


# -- train state: what --resume needs, in one file ---------------------------------------------

TRAIN_STATE_FORMAT = "vqgen-train-state/2"  # 2: one weights and optimiser section per model


def save_train_state(
    run: RunDir,
    stage: str,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    info: dict[str, Any],
) -> None:
    """The weights of every model of a stage (the model, a moving average of its weights) and
    its optimisers (vqgen.optim: "model", and "muon" where Muon updates the gated blocks), the
    RNG and `info` (step, epoch, ...), in one file: one atomic rename keeps them consistent."""
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    groups = {}
    for name, model in models.items():
        tensors.update({f"{name}.weights.{k}": v for k, v in model.state_dict().items()})
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        for idx, slots in state["state"].items():
            tensors.update({f"{name}.opt.{idx}.{slot}": v for slot, v in slots.items()})
        groups[name] = state["param_groups"]
    meta = {**info, "format": TRAIN_STATE_FORMAT, "param_groups": groups}
    save_tensors(run.train_state(stage), tensors, meta)


def train_state_info(run: RunDir, stage: str) -> dict[str, Any]:
    """Where a stage's training stopped (step, epoch, plan), from its train state's header
    alone; one line with a fix that works when there is none to resume."""
    path = run.train_state(stage)
    again = "train it anew with --overwrite" if run.holds_any(stage) else "start without --resume"
    if not path.is_file():
        raise UsageError(f"--resume: {path} not found, so there is nothing to continue; {again}")
    meta = load_tensor_meta(path)
    if meta.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(
            f"{path} is from another vqgen version and cannot be resumed; {again}"
        )
    return meta


def load_train_state(
    run: RunDir,
    stage: str,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore what `save_train_state` wrote into `models`, `optimizers` and the RNG;
    returns its `info`."""
    path = run.train_state(stage)
    meta, tensors = train_state_info(run, stage), load_tensors(path)
    for name, model in models.items():
        load_state(model, _section(tensors, f"{name}.weights."), path)
    for name, optimizer in optimizers.items():
        if name not in meta["param_groups"]:
            raise CheckpointError(f"{path} has no state for the {name} optimiser it trains with")
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in _section(tensors, f"{name}.opt.").items():
            idx, slot = key.split(".", 1)
            slots.setdefault(int(idx), {})[slot] = value
        try:
            optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"][name]})
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path} does not match this model ({err})") from None
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
