"""A hostile newcomer's trial, item by item: help that shows no odd types, a sample cut short
that the next one still replaces, one piece of advice for a run that stopped early, moved data
named where the run records it, a long --augment that says so, what a short realism check
lacks, odd files where a checkpoint belongs, --debug after the verb, a dataset with a split
missing, a file given as --out, binary junk in a metrics log, and realism figures that stay on
the floor's scale for slices unlike any real one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import assert_one_line_error, brain_slice, make_adni, run_cli
from tiny import CPU, PRIOR_2X8

from vqgen import fileio, inference, sample, train_prior
from vqgen.data.dataset import make_dataset
from vqgen.errors import UsageError

SAMPLE = ["--n", "4", *CPU]


def edit(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


# -- 1. help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [[], ["data"], ["train-prior"], ["sample"], ["evaluate"]])
def test_help_shows_no_type_for_flags(capsys, verb) -> None:
    code, out, _ = run_cli(capsys, *verb, "--help")
    assert code == 0
    assert "<bool>" not in out and "--help" in out, out


def test_sample_help_names_its_own_seed(capsys) -> None:
    code, out, _ = run_cli(capsys, "sample", "--help")
    assert code == 0 and "Seed of the samples drawn" in out
    assert "evaluate" not in " ".join(out.split()), out


# -- 2. a sample cut short ------------------------------------------------------------------------


def test_a_sample_cut_short_is_replaced_by_the_next(trained_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "drawn"
    written = []

    def ctrl_c_at_the_third(image, path):
        if len(written) == 2:
            raise KeyboardInterrupt
        inference.write_png(image, path)
        written.append(path)

    with monkeypatch.context() as mp:
        mp.setattr(sample, "write_png", ctrl_c_at_the_third)
        code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--out", out, *SAMPLE)
    assert code == 130, err
    assert len(json.loads((out / sample.MANIFEST).read_text())["sha256"]) == 2
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--out", out, *SAMPLE)
    assert code == 0, err
    assert "removed 2 earlier sample file(s)" in err
    assert len(list(out.glob("sample_*.png"))) == 4


# -- 3. a run that stopped before its first validation -------------------------------------------


def test_a_run_with_last_files_alone_gets_one_advice(trained_run, capsys) -> None:
    for name in ("vqvae.json", "vqvae.safetensors", "train_state-vqvae.safetensors"):
        (trained_run / name).unlink()
    shutil.rmtree(trained_run / "codes")
    for path in trained_run.glob("*prior*"):
        path.unlink()
    lines = []
    for verb in (["sample"], ["train-vqvae", "--resume"], ["train-vqvae"]):
        code, _, err = run_cli(capsys, *verb, "--run", trained_run, *CPU)
        lines.append(assert_one_line_error(code, err, 2, "--overwrite"))
    assert not any("continue it" in line or "without --resume" in line for line in lines), lines


# -- 4. moved data -------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_prior_names_vqvae_json_and_takes_the_moved_data(trained_run, tmp_path, capsys):
    recorded = json.loads((trained_run / "vqvae.json").read_text())["data"]["source"]
    moved = Path(shutil.copytree(recorded, tmp_path / "moved"))
    gone = tmp_path / "gone"
    edit(trained_run / "vqvae.json", lambda m: m["data"].update(source=str(gone)))
    shutil.rmtree(trained_run / "codes")  # the slices must be read again
    args = ["--run", trained_run, "--overwrite", "--max-steps", "1", *PRIOR_2X8, *CPU]
    code, _, err = run_cli(capsys, "train-prior", *args)
    assert_one_line_error(code, err, 2, str(gone), "vqvae.json", "--data")
    code, _, err = run_cli(capsys, "train-prior", *args, "--data", moved)
    assert code == 0, err


@pytest.mark.slow
def test_a_resumed_vqvae_takes_the_moved_data(trained_run, tmp_path, capsys) -> None:
    recorded = json.loads((trained_run / "vqvae.json").read_text())["data"]["source"]
    moved = Path(shutil.copytree(recorded, tmp_path / "moved"))
    gone = tmp_path / "gone"
    for name in ("vqvae.json", "vqvae-last.json"):
        edit(trained_run / name, lambda m: m["data"].update(source=str(gone)))
    args = ["--run", trained_run, "--resume", "--overwrite", *CPU]
    code, _, err = run_cli(capsys, "train-vqvae", *args)
    assert_one_line_error(code, err, 2, str(gone), "vqvae.json", "--data NEW")
    code, _, err = run_cli(capsys, "train-vqvae", *args, "--data", moved)
    assert code == 0, err
    assert "ignoring" not in err  # --data and --overwrite are both taken under --resume


def test_data_of_another_kind_is_named_as_such(trained_run, capsys) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--run", trained_run, "--data", "mni152", *CPU)
    assert_one_line_error(code, err, 2, "embedded mni152", "trained on adni data", "vqvae.json")


# -- 5. a long --augment -----------------------------------------------------------------------


@pytest.mark.slow
def test_many_augment_copies_warn_of_their_cost_and_report_progress(
    trained_run, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(train_prior, "MANY_COPIES", 2)
    monkeypatch.setattr(train_prior, "PROGRESS_SECONDS", 0.0)  # as if each copy took long
    args = ["--run", trained_run, "--overwrite", "--max-steps", "1", *PRIOR_2X8, *CPU]
    code, _, err = run_cli(capsys, "train-prior", *args, "--augment", "30")
    assert code == 0, err
    assert "warning: --augment 30: 30 copies of the train split, about" in err, err
    assert "to make and encode here" in err and "every epoch 31 times as long as" in err
    for done in range(1, 31):  # every copy, not only every 3rd (a tenth of 30)
        assert f"encoded {done} of 30 copies" in err, err


# -- 6. a read-only run ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("quick_c2st")
def test_a_read_only_run_without_code_grids_is_evaluated(trained_run, read_only, tmp_path, capsys):
    shutil.rmtree(trained_run / "codes")  # evaluate encodes the splits, and cannot keep them
    run = read_only(trained_run)
    out = tmp_path / "elsewhere" / "report.json"
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--out", out, "--n-samples", "4", *CPU)
    assert code == 0, err
    assert out.is_file() and not (trained_run / "codes").exists()


# -- 9. a realism check too small to run ---------------------------------------------------------


def slices(n: int, subjects: int, split: str = "test"):
    pixels = np.stack([brain_slice(16, 16, i) for i in range(n)])
    names = [f"s{i % subjects}" for i in range(n)]
    return make_dataset(pixels, names, [-1] * n, [0.5] * n, names, kind="folder", split=split)


def test_a_skipped_realism_check_says_exactly_what_is_short() -> None:
    from vqgen.evaluate_realism import too_small

    train = slices(20, 4, "train")
    assert too_small(slices(20, 3), train, torch.zeros(20, 1, 16, 16)) == ""
    why = too_small(slices(20, 3), train, torch.zeros(3, 1, 16, 16))
    assert why == "needs 8 slices in each set (samples: 3)", why
    why = too_small(slices(5, 1), train, None)
    assert (
        why
        == "needs 8 slices in each set (split: 5) and slices of 2 subjects in the split (it has 1)"
    ), why
    assert "samples" not in why and "train split" not in why


# -- 10, 11. what sits where a checkpoint file belongs -------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "what"),
    [
        ("vqvae.safetensors", os.mkdir, "is a folder"),
        ("vqvae.json", os.mkdir, "is a folder"),
        ("vqvae.json", os.mkfifo, "is a FIFO"),
        ("prior.json", os.mkfifo, "is a FIFO"),
    ],
)
def test_no_file_where_a_checkpoint_belongs_is_named(trained_run, capsys, name, make, what):
    (trained_run / name).unlink()
    make(trained_run / name)
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, *SAMPLE)  # never blocks
    assert_one_line_error(code, err, 1, name, what, "not a checkpoint file")


def test_an_unknown_top_level_key_is_refused(trained_run, capsys) -> None:
    edit(trained_run / "vqvae.json", lambda m: m.update(surprise=1))
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, *SAMPLE)
    assert_one_line_error(code, err, 1, "vqvae.json", "unknown key 'surprise'")


# -- 13. --debug after the verb ----------------------------------------------------------------


def test_debug_works_after_the_verb(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VQGEN_DEBUG", "0")  # restored after the test: --debug sets it
    with pytest.raises(UsageError, match="does not exist"):  # its traceback, not one line
        run_cli(capsys, "sample", "--run", tmp_path / "none", "--debug")


# -- 16, 17. datasets and output paths -------------------------------------------------------------


def test_data_shows_an_adni_tree_without_test(tmp_path, capsys) -> None:
    root = make_adni(tmp_path, {"train": 4}, slices=1)
    code, out, err = run_cli(capsys, "data", root, "--size", "32")
    assert code == 0, err
    assert "warning: the test split is missing" in err and "test" in err, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert {"train", "validate", "test"} <= set(rows), out


def test_a_file_given_as_out_is_called_a_file(trained_run, tmp_path, capsys) -> None:
    (tmp_path / "taken").write_text("mine")
    args = ["--run", trained_run, "--out", tmp_path / "taken", *SAMPLE]
    code, _, err = run_cli(capsys, "sample", *args)
    assert_one_line_error(code, err, 2, "--out", "is a file", "give a folder")


def test_a_layout_is_named_with_its_article(tmp_path, capsys) -> None:
    root = make_adni(tmp_path, {"train": 1}, slices=1)
    code, _, err = run_cli(capsys, "data", root, "--kind", "oasis")
    assert_one_line_error(code, err, 2, "not an OASIS layout")


# -- 18. binary junk in a metrics log --------------------------------------------------------------


def test_binary_junk_in_a_log_is_counted_in_its_own_lines(tmp_path) -> None:
    log = tmp_path / "metrics-vqvae.jsonl"
    good = [json.dumps({"step": s}) for s in (1, 2)]
    junk = b"\x00\r\x0b\x1c\x85 junk\r\n" * 5  # each a line with breaks splitlines() sees
    log.write_bytes("\n".join(good).encode() + b"\n" + junk + b"torn")
    with pytest.warns(UserWarning, match=r"dropped 5 line\(s\) that are not JSON, first line 3"):
        fileio.trim_log(log, last_step=2)
    assert log.read_text().splitlines() == good


# -- 19. realism of slices unlike any real one ---------------------------------------------------


@pytest.mark.slow
def test_far_off_images_give_finite_distances_on_the_floor_scale() -> None:
    from vqgen import realism

    train, test = slices(64, 8, "train"), slices(32, 4)
    net = realism.train_feature_net(train, steps=30)
    real = realism.extract_features(net, test.images)
    floor = realism.feature_distances(real, realism.extract_features(net, train.images[:32]))
    checker = (torch.arange(16 * 16).reshape(16, 16) % 2).float()
    for far in (
        torch.zeros(32, 1, 16, 16),
        torch.ones(32, 1, 16, 16),
        checker.expand(32, 1, -1, -1),
    ):
        found = realism.feature_distances(real, realism.extract_features(net, far))
        assert all(np.isfinite(v) for v in found.values()), found
        assert found["fid"] > floor["fid"] and found["kid"] > floor["kid"]
        assert found["fid"] < 1e4 and found["kid"] < 1e5, found  # were 1e5 to 1e6, and 1e10


# -- a slice level at the edge of the trained ones ---------------------------------------------


@pytest.mark.parametrize(("level", "warned"), [(0.9, False), (0.15, False), (0.95, True)])
def test_a_slice_level_is_judged_as_the_warning_prints_the_range(level, warned) -> None:
    """Trained levels of 0.1512 to 0.8996 print as "0.15 to 0.90": --slice 0.9 lies inside."""
    import warnings

    from vqgen.conditioning import for_sampling
    from vqgen.config import PriorConfig, SampleConfig

    cfg = PriorConfig(codebook_size=8, grid=4, condition="slice")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cond = for_sampling(cfg, {"slice_range": [0.1512, 0.8996]}, SampleConfig(slice_pos=level))
    assert cond.tolist() == pytest.approx([level] * 16)
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warned, messages
    assert not warned or "(0.15 to 0.90)" in messages[0]
