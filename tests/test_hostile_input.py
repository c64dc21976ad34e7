"""Run files are untrusted input, and system errors are one line: edited sizes, control
characters, deep JSON, damaged secondary files, a full disk, too little memory, odd arguments
from Python."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fixtures import assert_one_line_error, run_cli
from tiny import CPU

import vqgen
from vqgen import fileio
from vqgen.errors import UsageError

ESC = "\x1b"


def edit(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


# -- sizes in a run file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "section", "key", "value", "needle"),
    [
        ("vqvae.json", "model", "codebook_size", 50_000, "does not match its config"),
        ("vqvae.json", "model", "codebook_size", 10**9, "at most 65536"),
        ("vqvae.json", "model", "hidden", 200_000, "at most 2048"),
        ("prior.json", "model", "channels", 10**6, "at most 2048"),
        ("prior.json", "model", "kernel", 100_001, "at most 15"),
        ("prior.json", "model", "layers", 10**6, "at most 256"),
        ("prior.json", "model", "layers", 200, "does not match its config"),
    ],
)
def test_sizes_in_a_run_file_are_checked_before_anything_is_built(
    trained_run, capsys, file, section, key, value, needle
) -> None:
    edit(trained_run / file, lambda m: m[section].update({key: value}))
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    named = file if "at most" in needle else file.replace(".json", ".safetensors")
    assert_one_line_error(code, err, 1, named, needle)


@pytest.mark.slow
def test_an_edited_size_costs_no_memory(trained_run) -> None:
    """50,000 codes of the edited size would take gigabytes to build: the shapes in the
    weights' header refuse them first, in a process that stays small."""
    edit(trained_run / "vqvae.json", lambda m: m["model"].update(codebook_size=60_000))
    edit(trained_run / "prior.json", lambda m: m["model"].update(channels=2048, layers=250))
    # the peak of this process's own memory (VmHWM): ru_maxrss would also count the pytest
    # worker's peak, which Linux carries into a child across fork and exec
    code = textwrap.dedent(f"""
        import re
        from pathlib import Path
        from vqgen.cli import main
        try:
            main(["sample", "--run", {str(trained_run)!r}, "--device", "cpu"])
        except SystemExit as stop:
            status = Path("/proc/self/status").read_text()
            print(stop.code, re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))  # KiB
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    exit_code, peak_kib = map(int, proc.stdout.split())
    assert exit_code == 1 and "does not match its config" in proc.stderr, proc.stderr
    assert peak_kib < 1_500_000, peak_kib  # torch alone takes about half of that


# -- text from a run file --------------------------------------------------------------------


def test_control_characters_in_label_names_never_reach_the_terminal(trained_run, capsys) -> None:
    edit(trained_run / "prior.json", lambda m: m.update(label_names=[f"{ESC}[2J", "AD"]))
    code, out, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 1, "prior.json", "label_names")
    assert ESC not in out + err


def test_a_stale_lock_with_control_characters_is_shown_harmlessly(trained_run, capsys) -> None:
    (trained_run / ".vqgen.lock").write_text(f"{ESC}]0;owned{ESC}\\ `vqgen demo` (pid 1)")
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert code == 0, err
    assert "took over the lock of ?]0;owned?\\ `vqgen demo`" in err and ESC not in err


def test_a_deeply_nested_run_file_is_one_line(trained_run, capsys) -> None:
    (trained_run / "prior.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, *CPU)
    assert_one_line_error(code, err, 1, "prior.json", "nested too deeply")


# -- damaged secondary files -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["manifest-number", "manifest-list"])
def test_a_damaged_sample_manifest_keeps_the_files_it_cannot_vouch_for(
    trained_run, tmp_path, capsys, damage
) -> None:
    out = tmp_path / "samples"
    args = ["--run", trained_run, "--n", "2", "--out", out, *CPU]
    assert run_cli(capsys, "sample", *args)[0] == 0
    manifest = out / ".vqgen-samples.json"
    manifest.write_text('{"sha256": 5}' if damage == "manifest-number" else "[[1, 2]]")
    before = fileio.sha256(out / "sample_0000.png")
    code, _, err = run_cli(capsys, "sample", *args)
    assert code == 2 and "ignoring" in err and ".vqgen-samples.json" in err, err
    assert "which `vqgen sample` did not write" in err
    assert fileio.sha256(out / "sample_0000.png") == before


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["codes out of range", "truncated"])
def test_damaged_code_grids_are_encoded_again(trained_run, capsys, damage) -> None:
    path = trained_run / "codes" / "train.safetensors"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        tensors, meta = fileio.load_tensors(path), fileio.load_tensor_meta(path)
        fileio.save_tensors(path, {**tensors, "codes": tensors["codes"] * 0 + 1000}, meta)
    args = ["--run", trained_run, "--overwrite", "--max-steps", "1", *CPU]
    code, _, err = run_cli(capsys, "train-prior", *args, "--layers", "2", "--channels", "8")
    assert code == 0, err
    assert "train.safetensors is damaged" in err and "encoding its slices again" in err
    assert fileio.load_tensors(path)["codes"].max() < 1000


# -- the system: a full disk, too little memory ------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch):
    """Every file vqgen writes, and the lock, fails as on a full disk."""

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)


@pytest.mark.parametrize("verb", ["sample", "evaluate", "data"])
def test_a_full_disk_is_one_line(trained_run, tmp_path, capsys, full_disk, verb) -> None:
    args = {
        "sample": ["sample", "--run", trained_run, "--n", "2", *CPU],
        "evaluate": ["evaluate", "--run", trained_run, "--n-samples", "2", *CPU],
        "data": ["data", "mni152", "--size", "32", "--preview", tmp_path / "p.png"],
    }[verb]
    code, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()  # the data cache, if it could not be kept, warns once
    assert code == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("error: cannot write") and "the disk is full" in lines[-1], err
    assert all(line.startswith(("warning:", "evaluate:")) for line in lines[:-1]), err
    assert sum("data cache" in line for line in lines) <= 1, err


def test_a_full_disk_under_the_lock_is_one_line(trained_run, capsys, monkeypatch) -> None:
    from vqgen import runlock

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runlock.os, "pwrite", no_space)
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 2, ".vqgen.lock", "the disk is full")


def test_the_allocator_running_out_is_one_line(trained_run, capsys, monkeypatch) -> None:
    from vqgen.loaded import LoadedRun

    def too_big(*args, **kwargs):
        raise RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 4 GB")

    monkeypatch.setattr(LoadedRun, "draw", too_big)
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 1, "out of memory")


def test_too_many_samples_are_refused_before_any_work(trained_run, capsys) -> None:
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "200000", *CPU)
    assert_one_line_error(code, err, 2, "--n must be at most 10000")


@pytest.mark.parametrize("minutes", ["nan", "inf", "-1"])
def test_a_demo_budget_that_is_no_number_is_one_line(tmp_path, capsys, minutes) -> None:
    code, _, err = run_cli(capsys, "demo", "--run", tmp_path / "d", "--minutes", minutes)
    assert_one_line_error(code, err, 2, "--minutes must be a positive finite number")


def test_a_budget_too_small_names_what_it_needs(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "demo", "--run", tmp_path / "d", "--minutes", "1.2")
    line = assert_one_line_error(code, err, 2, "--minutes 1.2 leaves no time")
    assert float(line.rsplit(" ", 1)[-1]) > 1.2


# -- the Python API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda run: run.sample(2.5), "--n must be int"),
        (lambda run: run.sample(True), "--n must be int"),
        (lambda run: run.sample(2, top_k=2.5), "--top-k must be int"),
        (lambda run: run.sample(2, seed=1.5), "--seed must be int"),
        (lambda run: run.sample(2, label=1), "--label must be str"),
        (lambda run: run.decode(None), "codes must be a tensor or a list"),
        (lambda run: run.evaluate(n_samples=2.5), "--n-samples must be at least 2"),
    ],
)
def test_odd_arguments_from_python_are_usage_errors_naming_them(trained_run, call, needle):
    run = vqgen.load_run(trained_run, device=torch.device("cpu"))
    with pytest.raises(UsageError, match=needle):
        call(run)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "cpu:0"])
def test_a_torch_device_is_taken_as_given(trained_run, device) -> None:
    assert vqgen.load_run(trained_run, device=device).device.type == "cpu"


def test_cuda_n_without_cuda_is_one_line(trained_run) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="cuda:0 was asked for but no CUDA device"):
        vqgen.load_run(trained_run, device="cuda:0")
