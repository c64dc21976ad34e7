"""Files, written so that nothing is ever half-written: atomic writes, JSON that refuses NaN,
safetensors tensors with JSON metadata, and the append-only metrics log.

Every file is written to a temporary name beside its target and renamed into place, so an
interrupted write leaves the old file or the new one, never a torn one. Nothing here knows
what a run or a model is (vqgen.rundir and vqgen.checkpoint do).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqgen.errors import CheckpointError, OutputError, why

UMASK = os.umask(0)
os.umask(UMASK)  # read the process umask (the only way is to set it and set it back)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`. A write
    that fails (a full disk, no permission) is an OutputError naming `path`, and leaves the
    old file as it was."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the user's usual mode
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())  # on disk before it takes the real name
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        raise OutputError(f"cannot write {path}: {why(err)}") from None
    finally:
        if tmp is not None:
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


NOT_FILES = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a device",
    stat.S_ISBLK: "a device",
}


def check_regular(path: Path, what: str = "a checkpoint file") -> None:
    """Refuse, in one line naming it, a `path` that is there but is no plain file (a folder, a
    FIFO, a device): reading one fails oddly or blocks for ever. A missing path passes."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing, or a dangling link: the caller says so
    for test, kind in NOT_FILES.items():
        if test(mode):
            raise CheckpointError(f"{path} is {kind}, not {what}; move it away")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with one clear line when it is missing or corrupt."""
    check_regular(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a vqgen file") from None
    except OSError as err:  # a folder or a FIFO where a file belongs, no permission
        raise CheckpointError(f"{path} cannot be read ({why(err)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return payload


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None
) -> None:
    """Atomically write tensors (made contiguous, on the CPU) to a safetensors file."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"json": to_json(meta)} if meta is not None else None
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file is one clear line."""
    check_regular(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def load_tensor_meta(path: Path) -> dict[str, Any]:
    """The JSON stored in a safetensors file's metadata by `save_tensors`."""
    from safetensors import safe_open

    check_regular(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("json", "{}"))
    except (SafetensorError, OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(to_json(record) + "\n")


def trim_log(path: Path, last_step: int) -> None:
    """Keep the complete lines of a metrics log up to `last_step`: a killed run may have logged
    steps after its last checkpoint, or torn its last line."""
    if not path.exists():
        return
    # lines end at "\n" only, as append_jsonl writes them: read_text's newline translation and
    # splitlines() would also break at the \r, \x0b, \x1c.. that binary junk holds, and count
    # lines the file does not have
    lines = path.read_bytes().decode(errors="replace").split("\n")
    kept, lines = [], lines[:-1] if lines[-1] == "" else lines
    torn = []  # lines that are not a JSON object: a torn last one is expected, others are not
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            torn += [i] if i < len(lines) - 1 else []
        elif record.get("step", float("inf")) <= last_step:
            kept.append(line + "\n")
    if torn:
        warnings.warn(
            f"{path}: dropped {len(torn)} line(s) that are not JSON, first line {torn[0] + 1}",
            stacklevel=3,
        )
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))
