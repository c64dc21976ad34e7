"""The pieces a second code level builds beside, each on its own: the run directory's paths, the
plan of a run's length, the checkpointer, the reporter, the conditioning module, the VQ loss's
section in vqvae.json and the prior registry. And one rule of the suite: no test module imports
another."""

from __future__ import annotations

import ast
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import assert_one_line_error, run_cli
from tiny import CPU_DEVICE, blobs, make_stage, train_cfg

from vqgen import conditioning, sampling
from vqgen.checkpointer import Checkpointer
from vqgen.config import PRIOR_KINDS, PriorConfig, SampleConfig, TrainConfig
from vqgen.errors import CheckpointError, UsageError
from vqgen.models import PRIORS, build_prior
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.progress import Reporter
from vqgen.rundir import RunDir
from vqgen.schedule import UNBOUNDED_STEPS, LoopState, Plan
from vqgen.train import Trainer

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power

REPO = Path(__file__).resolve().parents[1]
RUN_07F045D = Path(__file__).parent / "data" / "run-07f045d"

# -- the run directory ---------------------------------------------------------------------------


def test_every_path_of_a_run_lies_in_it_and_levels_get_their_own_codes(tmp_path):
    run = RunDir(tmp_path / "run")
    paths = [
        *run.stage_files("vqvae"),
        *run.stage_files("prior"),
        run.codes("train"),
        run.codes("train", level="top"),
        run.augmented_codes(2),
        run.figures,
        run.samples,
        run.report,
        run.lock_file,
    ]
    assert all(run.root in p.parents for p in paths)
    assert len(set(paths)) == len(paths)  # no two things share a file
    assert run.codes("train") != run.codes("train", level="top")
    assert run.weights("prior", last=True).name == "prior-last.safetensors"


def test_a_missing_run_and_a_missing_stage_name_the_verb_that_makes_them(tmp_path):
    with pytest.raises(UsageError, match="does not exist; run `vqgen train-vqvae"):
        RunDir(tmp_path / "nowhere").check_exists()
    assert "run `vqgen train-prior` first" in str(RunDir(tmp_path).missing("prior"))


# -- the plan: one notion of a run's length ------------------------------------------------------


def test_the_plan_is_the_first_of_epochs_and_steps():
    plan = Plan(TrainConfig(epochs=3, max_steps=7, batch_size=4), 20, "vqvae", CPU_DEVICE)
    assert (plan.steps_per_epoch, plan.total) == (5, 7)
    plan.start(0)
    assert not plan.done(6) and plan.done(7)


def test_running_out_of_time_ends_the_plan_at_the_current_step():
    plan = Plan(TrainConfig(max_minutes=1.0, batch_size=4), 20, "vqvae", CPU_DEVICE)
    assert plan.total == UNBOUNDED_STEPS
    plan.start(0)
    plan.after_step(3, out_of_time=True)
    assert plan.total == 3 and plan.done(3)


def test_a_resumed_time_limited_run_continues_to_its_fitted_plan():
    plan = Plan(TrainConfig(max_minutes=1.0, batch_size=4), 20, "vqvae", CPU_DEVICE)
    plan.resume(total=UNBOUNDED_STEPS, fitted=40)
    assert (plan.total, plan.fitted) == (40, 40)
    bounded = Plan(TrainConfig(max_steps=9, batch_size=4), 20, "vqvae", CPU_DEVICE)
    bounded.resume(total=5, fitted=5)
    assert bounded.total == 9  # --max-steps is the run's own plan


def test_an_empty_training_set_is_named():
    with pytest.raises(UsageError, match="the prior training set is empty"):
        Plan(TrainConfig(epochs=1, batch_size=4), 0, "prior", CPU_DEVICE)


# -- the checkpointer and the reporter -----------------------------------------------------------


def test_the_checkpointer_keeps_the_best_and_restores_where_it_stood(tmp_path):
    run = RunDir(tmp_path)
    cfg = train_cfg()
    stage = make_stage(tmp_path, blobs(8), blobs(4, seed=1))
    trainer = Trainer(stage, cfg, CPU_DEVICE)
    plan = Plan(cfg, len(stage.train_set), stage.name, CPU_DEVICE)
    keeper = Checkpointer(run, stage, cfg, trainer)
    keeper.keep(LoopState(step=2, epoch=1), plan, {"val_ssim": 0.5})
    keeper.keep(LoopState(step=4, epoch=2), plan, {"val_ssim": 0.4})  # worse: last only
    keeper.keep(LoopState(step=5, epoch=2, skip=1), plan, {"val_ssim": math.nan})
    assert keeper.best == 0.5
    best = json.loads(run.meta("vqvae").read_text())
    last = json.loads(run.meta("vqvae", last=True).read_text())
    assert (best["step"], last["step"]) == (2, 5)
    again = Checkpointer(run, stage, cfg, trainer)
    state = again.restore(Plan(cfg, len(stage.train_set), stage.name, CPU_DEVICE))
    assert (state.step, state.epoch, state.skip, again.best) == (5, 2, 1, 0.5)
    assert "step 5" in again.kept()


def test_the_reporter_logs_every_nth_step_and_each_validation(tmp_path):
    log = tmp_path / "metrics-vqvae.jsonl"
    report = Reporter("vqvae", log, log_every=2)
    report.begin(resumed_at=None)
    report.start_epoch()
    for step in range(1, 6):
        report.step(LoopState(step=step), 5, {"loss": float(step)}, batch=4)
    report.log_epoch(LoopState(step=5, epoch=1), {"val_ssim": 0.3})
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 5]
    assert records[-1]["val_ssim"] == 0.3 and "train_loss" in records[-1]
    assert report.history == [records[-1]]
    Reporter("vqvae", log, log_every=2).begin(resumed_at=3)  # a resume keeps steps <= 3
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2]


# -- conditioning --------------------------------------------------------------------------------


def test_sampling_conditions_follow_the_prior_and_refuse_other_options():
    label = PriorConfig(condition="label", num_labels=2)
    meta = {"label_names": ["NC", "AD"], "slice_range": [0.2, 0.8]}
    assert conditioning.for_sampling(label, meta, SampleConfig(n=4)).tolist() == [0, 1, 0, 1]
    assert conditioning.for_sampling(label, meta, SampleConfig(n=2, label="AD")).tolist() == [1, 1]
    spread = conditioning.for_sampling(PriorConfig(condition="slice"), meta, SampleConfig(n=3))
    assert spread.tolist() == pytest.approx([0.2, 0.5, 0.8])
    assert conditioning.for_sampling(PriorConfig(), meta, SampleConfig(n=3)) is None
    with pytest.raises(UsageError, match=r"--slice 0\.5: this prior was trained with"):
        conditioning.for_sampling(label, meta, SampleConfig(n=2, slice_pos=0.5))


def test_label_names_that_do_not_fit_the_prior_are_refused():
    cfg = PriorConfig(condition="label", num_labels=2)
    with pytest.raises(CheckpointError, match=r"prior\.json: 'label_names' must list"):
        conditioning.check_metadata(cfg, {"label_names": ["AD"]}, "prior.json")


def test_groups_are_the_classes_of_a_label_prior_only():
    groups = conditioning.groups("label", ["NC", "AD"])
    assert [g.name for g in groups] == ["NC", "AD"]
    assert groups[1].mask(torch.tensor([0, 1, 1])).tolist() == [False, True, True]
    assert conditioning.groups("slice", []) == []


# -- the VQ loss and older runs ------------------------------------------------------------------


@pytest.fixture
def run_07f045d(tmp_path: Path) -> Path:
    run = tmp_path / "run-07f045d"
    shutil.copytree(RUN_07F045D, run)
    return run


def test_a_run_whose_loss_settings_are_in_model_loads_them_into_loss(run_07f045d):
    from vqgen import checkpoint

    meta = json.loads((run_07f045d / "vqvae.json").read_text())
    assert "loss" not in meta and meta["model"]["adversarial"] is True
    model_cfg, loss_cfg = checkpoint.vqvae_configs(meta, run_07f045d / "vqvae.json")
    assert loss_cfg.l1_weight == 1.0 and model_cfg.codebook_size == 8
    assert checkpoint.trained_adversarially(meta)  # the discriminator's settings are dropped
    del meta["model"]["adversarial"], meta["model"]["l1_weight"]
    _, defaults = checkpoint.vqvae_configs(meta, run_07f045d / "vqvae.json")
    assert defaults.l1_weight == 0.0  # a missing setting
    assert not checkpoint.trained_adversarially(meta)


def test_a_vqvae_trained_with_the_removed_discriminator_is_not_resumed(run_07f045d, capsys):
    (run_07f045d / "vqvae-last.json").write_bytes((run_07f045d / "vqvae.json").read_bytes())
    args = ["--run", run_07f045d, "--resume", "--device", "cpu"]
    code, _, err = run_cli(capsys, "train-vqvae", *args)
    assert_one_line_error(code, err, 2, "vqvae-last.json", "--adversarial", "no longer")


@pytest.mark.slow
def test_a_run_made_at_07f045d_takes_a_new_prior_then_samples_and_evaluates(
    run_07f045d, tiny_mni152, capsys
):
    """Its prior has the removed --attention layer: one line says so; its VQ-VAE (trained with
    the removed discriminator) takes a new prior, then samples and evaluates."""
    args = ["--run", run_07f045d, "--device", "cpu"]
    code, _, err = run_cli(capsys, "sample", *args, "--n", "3")
    assert_one_line_error(code, err, 1, "prior.json", "--attention", "--overwrite")
    prior = ["--layers", "2", "--channels", "16", "--condition", "slice", "--max-steps", "2"]
    code, _, err = run_cli(capsys, "train-prior", *args, *prior, "--overwrite")
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", *args, "--n", "3")
    assert code == 0, err
    assert len(list((run_07f045d / "samples").glob("sample_*.png"))) == 3
    code, _, err = run_cli(capsys, "evaluate", *args, "--n-samples", "4")
    assert code == 0, err
    report = json.loads((run_07f045d / "report.json").read_text())
    assert report["prior"]["condition"] == "slice" and report["samples"]["n"] == 4


def test_a_new_run_writes_the_loss_section(trained_run):
    meta = json.loads((trained_run / "vqvae.json").read_text())
    assert set(meta["loss"]) == {"l1_weight"}
    assert "l1_weight" not in meta["model"]


# -- the prior registry --------------------------------------------------------------------------


def test_every_prior_kind_has_a_model_and_builds_it():
    assert set(PRIORS) == set(PRIOR_KINDS)
    assert isinstance(build_prior(PriorConfig(grid=4, codebook_size=8)), GatedPixelCNN)
    with pytest.raises(UsageError, match="prior kind"):
        PriorConfig(kind="transformer")


def test_a_kind_without_a_fast_sampler_falls_back_to_the_naive_one(monkeypatch):
    cfg = PriorConfig(codebook_size=8, grid=4, channels=8, layers=2)
    torch.manual_seed(0)
    prior = build_prior(cfg).eval()

    def draw():
        return sampling.sample_codes(prior, 2, generator=torch.Generator().manual_seed(3))

    fast = draw()
    monkeypatch.setattr(sampling, "FAST_SAMPLERS", {})
    naive_calls = []
    real_naive = sampling.sample_codes_naive
    monkeypatch.setattr(
        sampling, "sample_codes_naive", lambda *a, **k: naive_calls.append(1) or real_naive(*a, **k)
    )
    assert torch.equal(draw(), fast) and naive_calls == [1]


# -- the suite's own layout -----------------------------------------------------------------------


def test_no_test_module_imports_another():
    tests = {p.stem for p in (REPO / "tests").glob("test_*.py")}
    imports = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            imports += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in tests]
    assert not imports, imports
