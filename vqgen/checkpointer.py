"""The checkpoints of a training stage: the best weights by the stage's monitor, the last ones
with the train state (optimiser, step, RNG) that --resume restores, and the rule that weights
which are not finite are never saved.

    keeper = Checkpointer(run, stage, cfg, trainer)
    state = keeper.restore(plan) if resume else LoopState()
    keeper.keep(state, plan, metrics)             # after a validation: last, and best if better
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor

from vqgen import checkpoint, distributed
from vqgen.config import TrainConfig, to_dict
from vqgen.rundir import RunDir
from vqgen.schedule import LoopState, Plan

if TYPE_CHECKING:
    from vqgen.train import Stage, Trainer


class Diverged(Exception):
    """A loss, gradient or weight that is not finite, at `step` where known: fit turns it into
    a TrainingError that says what is kept on disk."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def all_finite(tensors: dict[Any, Any]) -> bool:
    """Whether every floating-point tensor in a (possibly nested) state dict is finite."""
    for value in tensors.values():
        if isinstance(value, dict) and not all_finite(value):
            return False
        if isinstance(value, Tensor) and value.is_floating_point() and not value.isfinite().all():
            return False
    return True


class Checkpointer:
    """The run's checkpoints of a stage: the best weights by the stage's monitor, the last ones
    with the train state, and restoring that state for --resume. Only rank 0 writes."""

    def __init__(self, run: RunDir, stage: Stage, cfg: TrainConfig, trainer: Trainer):
        self.run, self.stage, self.cfg, self.trainer = run, stage, cfg, trainer
        self.best: float | None = None  # best validation value so far
        self.metrics: dict[str, float] = {}  # the latest validation
        self.saved_step: int | None = None  # the step of the last checkpoint on disk

    def restore(self, plan: Plan) -> LoopState:
        """Models, optimisers, RNG, where training stood and the plan, from the train state."""
        trainer = self.trainer
        info = checkpoint.load_train_state(
            self.run, self.stage.name, trainer.saved(), trainer.optimizers
        )
        state = LoopState(step=info["step"], epoch=info["epoch"], skip=info["skip"])
        self.best = info.get("best")
        plan.resume(info["total"], info.get("fitted"))
        self.saved_step = state.step
        if plan.done(state.step):
            warnings.warn(
                f"--resume: the {self.stage.name} run in {self.run} is already complete "
                f"({state.step} of {plan.total} steps); nothing to train",
                stacklevel=3,
            )
        return state

    def kept(self) -> str:
        """What is on disk now, for an error message."""
        if self.saved_step is None:
            return "nothing was saved"
        return f"the last good checkpoint (step {self.saved_step}) in {self.run} is kept"

    def keep(self, state: LoopState, plan: Plan, metrics: dict[str, float]) -> None:
        """Save after a validation, as the best too when its monitored value is the best yet."""
        self.metrics = metrics
        value = metrics[self.stage.monitor]
        better = self.best is None or (
            value > self.best if self.stage.higher_is_better else value < self.best
        )
        improved = math.isfinite(value) and better
        if improved:
            self.best = value
        self.save(state, plan, best_too=improved)

    def save(self, state: LoopState, plan: Plan, best_too: bool) -> None:
        """Rank 0 writes the best (if it is) and the last weights with their JSON, then the train
        state, the sign of a whole save (vqgen.overwrite waits for it). Every rank first checks
        that all hold the same weights.
        Weights or optimiser state that are not finite are never saved: the last good
        checkpoint stays the resume point."""
        trainer, name = self.trainer, self.stage.name
        distributed.check_same_model(trainer.model, f"{name} step {state.step}")
        for key, model in trainer.saved().items():
            if not all_finite(model.state_dict()):
                what = name if key == "model" else f"{name} {key}"
                raise Diverged(f"{what} weights became non-finite")
        for key, optimizer in trainer.optimizers.items():
            if not all_finite(optimizer.state):
                raise Diverged(f"{name} {key} optimiser state became non-finite")
        if not distributed.is_main():
            return
        train = to_dict(replace(self.cfg, bf16=trainer.bf16))  # as resolved on this device
        meta = {**self.stage.meta, "train": train, "step": state.step}
        meta.update(epoch=state.epoch, metrics=self.metrics)
        model = trainer.kept()
        if best_too:
            checkpoint.save_model(self.run, name, model, meta, last=False)
        checkpoint.save_model(self.run, name, model, meta, last=True)
        info = {**asdict(state), "best": self.best, "total": plan.total, "fitted": plan.fitted}
        # the train state goes last: what --overwrite takes as the sign of a whole save
        checkpoint.save_train_state(self.run, name, trainer.saved(), trainer.optimizers, info)
        self.saved_step = state.step
