"""The command line's terminal: warnings as plain lines, output that survives a closed pipe,
SIGTERM handled as Ctrl-C, and every error vqgen knows about as one line and an exit code.

    run(app, ["sample", "--run", "checkpoints/demo"])   # what vqgen.cli.main does
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape

from vqgen.errors import VqgenError, printable, why

stderr = Console(stderr=True, soft_wrap=True)


_shown: set[str] = set()  # the warnings this command has shown


def show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """Warnings as plain `warning: ...` lines on stderr, without Python's source lines, each
    text once a command (a warning about the data comes from every split that loads it)."""
    if str(message) in _shown:
        return
    _shown.add(str(message))
    stderr.print(f"[yellow]warning:[/] {escape(printable(str(message)))}", highlight=False)


class QuietPipe:
    """sys.stdout or sys.stderr, dropping what it cannot write once its reader has gone
    (`vqgen train-vqvae ... 2>&1 | head -1`): the command goes on and saves as if its output
    went nowhere, instead of dying at its next line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.gone = stream, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        """From now on write nothing, and send the stream's file to /dev/null, so that what
        Python flushes at exit goes nowhere too."""
        self.gone = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def cli_session() -> Iterator[None]:
    """While a command runs: warnings as plain lines, each shown once however many splits
    repeat it, output that survives a closed pipe, and SIGTERM stopping as Ctrl-C does
    (training saves first; other verbs say so in one line)."""
    previous, warnings.showwarning = warnings.showwarning, show_warning
    _shown.clear()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = QuietPipe(sys.stdout), QuietPipe(sys.stderr)
    try:
        term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        term = None
    try:
        yield
    finally:
        warnings.showwarning = previous
        sys.stdout, sys.stderr = streams
        if term is not None:
            signal.signal(signal.SIGTERM, term)


def run(app: Callable[..., Any], argv: list[str] | None = None) -> None:
    """Run the command line `app` on `argv`: known errors, the system's (a full disk, too
    little memory) and OS errors on a path become one line and an exit code."""
    with cli_session():
        try:
            app(args=argv)
        except VqgenError as err:
            fail(str(err), err.exit_code, err)
        except MemoryError as err:  # numpy's and torch's CPU allocations
            fail(OUT_OF_MEMORY, 1, err)
        except RuntimeError as err:  # torch's allocators say so in a RuntimeError
            if not any(sign in str(err) for sign in MEMORY_SIGNS):
                raise
            fail(OUT_OF_MEMORY, 1, err)
        except RecursionError as err:
            fail("input nested too deeply to read (a hand-made or hostile file?)", 1, err)
        except OSError as err:  # a path or a disk the checks did not foresee: still one line
            where = f"{err.filename}: " if err.filename is not None else ""
            fail(f"{where}{why(err)}", 1, err)


OUT_OF_MEMORY = "out of memory; try a smaller --size, --batch-size or --n"
MEMORY_SIGNS = ("can't allocate memory", "out of memory", "not enough memory")


def fail(message: str, code: int, err: BaseException) -> None:
    """Print `message` as one `error:` line (control characters shown as '?', so a run file
    cannot drive the terminal) and exit with `code`; with --debug, raise `err` instead."""
    if os.environ.get("VQGEN_DEBUG") == "1":
        raise err
    stderr.print(f"[red]error:[/] {escape(printable(message))}", highlight=False)
    raise SystemExit(code) from None
