"""The typer application and the error boundary every command goes through."""

from __future__ import annotations

import functools
import inspect
import os
import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from miras_search import __version__
from miras_search.cli.oserrors import os_error_message
from miras_search.errors import MirasError
from miras_search.paths import expand_home, user_path
from miras_search.redact import redact_text
from miras_search.schema.plugins import load_plugins

app = typer.Typer(
    name="miras",
    help="Architecture search over the Miras design space of test-time-memory sequence models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
MIN_WIDTH = 20
"""Narrower than this, a width is taken as unknown (``COLUMNS=0``, a terminal that reports 0
columns): rich would print nothing at width 0, error messages included."""
FALLBACK_WIDTH = 80


class _Console(Console):
    """rich's Console with two changes for a command line.

    A width under ``MIN_WIDTH`` (``COLUMNS=0``) counts as unknown: 80 columns, as in a pipe.

    A reader that stops reading (``miras run ... | head -1``) closes the pipe: rich would exit 1
    at the next print. Here the rest of the output is dropped and the command goes on: a study
    still runs to its end, and the command exits with its own code. ``pipe_closed`` says when
    that happened (``status --watch`` stops on it)."""

    pipe_closed = False

    @property
    def size(self) -> ConsoleDimensions:
        width, height = super().size
        return ConsoleDimensions(width if width >= MIN_WIDTH else FALLBACK_WIDTH, height if height > 0 else 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def on_broken_pipe(self) -> None:
        self.quiet = True  # rich drops what is printed from now on
        self.pipe_closed = True
        _drop_output(self.file)


def _drop_output(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that no later write or the flush at
    exit raises BrokenPipeError again (Python's advice for SIGPIPE)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test's captured output: nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _drop_unusable_size() -> None:
    """Drop a ``COLUMNS`` under ``MIN_WIDTH`` (``COLUMNS=0``) and a ``LINES`` of 0 from the
    environment: rich, Typer's help included, would render at that width, which prints nothing;
    without them the terminal's size is used, or 80 x 25."""
    for name, least in (("COLUMNS", MIN_WIDTH), ("LINES", 1)):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) < least:
            del os.environ[name]


_drop_unusable_size()
console = _Console()
errors = _Console(stderr=True)


def interactive() -> bool:
    """Whether stdout is a terminal that draws a live display (a progress bar, a table refreshed
    in place): not a pipe, a file or a dumb terminal (``TERM=dumb``: Emacs' shell), where rich's
    Live prints nothing until it stops."""
    return console.is_terminal and not console.is_dumb_terminal


def stdout_closed() -> bool:
    """Whether the reader of stdout has gone (``| head -1`` exited), without writing to it."""
    if console.pipe_closed:
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no descriptor (a test)
        return False
    return any(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, mask in events)

def table_width() -> int:
    """The width tables must fit: the terminal's; piped (a CI log, ``| tee``) rich's 80 columns,
    or ``$COLUMNS`` when set."""
    return console.width


def print_note(text: str) -> None:
    """A yellow line for the user (a note from Ray's start, an address the environment chose)."""
    console.print(f"[yellow]{escape(text)}[/]", highlight=False)


def print_text(text: str) -> None:
    """``text`` exactly as given on stdout (YAML, CSV): never wrapped, styled or highlighted, so
    that ``miras show f.yaml > g.yaml`` writes what ``miras validate`` reads back."""
    try:
        typer.echo(text.rstrip("\n"))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped (`| head -3`): what it wanted was printed
        console.pipe_closed = True
        _drop_output(sys.stdout)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"miras-search {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Architecture search over the Miras design space of test-time-memory sequence models."""

F = TypeVar("F", bound=Callable[..., Any])


def _help_text(function: Callable[..., Any]) -> str | None:
    """The docstring with each paragraph on one line: Typer's rich help keeps a docstring's line
    breaks, which broke sentences mid-way in `miras --help`'s narrow command column."""
    doc = inspect.getdoc(function)
    if doc is None:
        return None
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in doc.split("\n\n"))


_PATH_TEXTS = ("study", "csv", "targets")
"""Text arguments that are a path (or a study or preset name, which never starts with '~')."""


def _home_expanded(name: str, value: Any) -> Any:
    """A path argument or option with a leading ``~`` read as the home folder: the shell does
    that for ``--out ~/x`` but not for ``--out=~/x`` or a quoted ``'~/x'`` (``paths.expand_home``;
    ``--storage`` is read so where a storage is opened)."""
    if isinstance(value, Path):
        return user_path(value)
    if isinstance(value, list):
        return [_home_expanded(name, item) for item in value]
    if name in _PATH_TEXTS and isinstance(value, str):
        return expand_home(value)
    return value


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` whose MirasErrors end as a readable message and exit code 1."""

    def register(function: F) -> F:
        @functools.wraps(function)
        def guarded(*inner_args: Any, **inner_kwargs: Any) -> Any:
            try:
                load_plugins()  # options defined in the user's modules, before any file is read
                return function(*inner_args, **{name: _home_expanded(name, value)
                                                for name, value in inner_kwargs.items()})
            except BrokenPipeError:  # a write past the console's (print, a library): as there
                console.pipe_closed = True
                _drop_output(sys.stdout)
                raise typer.Exit(0) from None
            except MirasError as error:
                errors.print(f"[bold red]error:[/] {escape(redact_text(str(error)))}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            except OSError as error:  # a full disk, a read-only folder: the machine, not a bug
                message = os_error_message(error)
                if message is None:
                    raise
                errors.print(f"[bold red]error:[/] {escape(redact_text(message))}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        kwargs.setdefault("help", _help_text(function))
        app.command(*args, **kwargs)(guarded)
        return function

    return register
