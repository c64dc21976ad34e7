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

from vqgen.errors import VqgenError

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
    stderr.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


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
    """Run the command line `app` on `argv`: known errors, and OS errors on a path, become one
    line and an exit code."""
    with cli_session():
        try:
            app(args=argv)
        except VqgenError as err:
            if os.environ.get("VQGEN_DEBUG") == "1":
                raise
            stderr.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
            raise SystemExit(err.exit_code) from None
        except MemoryError:  # numpy's and torch's CPU allocations
            if os.environ.get("VQGEN_DEBUG") == "1":
                raise
            stderr.print("[red]error:[/] out of memory; try a smaller --size or --batch-size")
            raise SystemExit(1) from None
        except OSError as err:  # a path the checks did not foresee: still one line
            if err.filename is None or os.environ.get("VQGEN_DEBUG") == "1":
                raise
            why = escape(err.strerror or type(err).__name__)
            stderr.print(f"[red]error:[/] {escape(str(err.filename))}: {why}", highlight=False)
            raise SystemExit(1) from None
