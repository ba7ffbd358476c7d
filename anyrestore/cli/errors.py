"""Where errors, signals and usage mistakes become one stderr line and an exit code.

Every command runs inside ``CliGroup.invoke``: a domain error prints ``anyrestore: error:
...`` and exits with its code (anyrestore.errors.ExitCode); SIGINT, SIGTERM and SIGHUP (unless
ignored, as under nohup) interrupt the work like Ctrl-C (temporary files are removed on the
way out) and exit 130, 143 or 129; a second
signal during that cleanup exits at once. Usage errors keep Typer's help box and end with the
same one-line error. ``ANYRESTORE_DEBUG=1`` lets unexpected exceptions and warnings through.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

import typer
from typer.core import TyperGroup

from anyrestore.cli import is_program
from anyrestore.errors import (
    SIGNAL_WORDS,
    AnyRestoreError,
    ExitCode,
    Interrupted,
    UsageError,
    forget_hung_up_terminal,
)

DEBUG_ENV = "ANYRESTORE_DEBUG"

_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(32), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


# Library messages name parameters (max_pixels=); on the command line the same thing is a flag.
_AS_FLAGS = re.compile(r"(?<![\w-])(max_pixels|allow_truncated)(?!\w)")


def as_flags(message: str) -> str:
    """A library message in the command line's words: ``max_pixels`` -> ``--max-pixels``."""
    return _AS_FLAGS.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped, so it stays one line."""
    return text.translate(_ESCAPES)


def say(message: str) -> None:
    """One line on stderr (never wrapped, control characters escaped)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        print(one_line(message), file=stream, flush=True)
    except (OSError, ValueError):
        pass  # stderr itself is gone; the exit code still tells


def fail(message: str, code: int) -> NoReturn:
    """Print ``anyrestore: error: <message>`` on stderr and exit with ``code``."""
    say(f"anyrestore: error: {message}")
    raise SystemExit(int(code))


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# -- stdout -------------------------------------------------------------------------------


class StdoutError(UsageError):
    """stdout cannot take what the command prints: no later file could be reported either,
    so a run of several files stops here (exit 2) instead of failing each in turn."""


def stdout() -> TextIO:
    """``sys.stdout``, or a usage error when the process was started with it closed."""
    if sys.stdout is None:
        raise StdoutError("stdout is closed; nothing can be printed")
    return sys.stdout


def emit(text: str = "", *, data: bytes | None = None) -> None:
    """Write a result line (or raw bytes) to stdout and flush, so a failure shows here.

    A full or broken stdout is a usage error (exit 2); fd 1 is then pointed at /dev/null so
    the interpreter's own flush at exit has nothing left to complain about.
    """
    out = stdout()
    try:
        if data is not None:
            out.buffer.write(data)
            out.buffer.flush()
        else:
            try:
                print(text, file=out, flush=True)
            except UnicodeEncodeError:
                # A file name whose bytes are not valid in stdout's encoding (written under
                # another locale): its own bytes, as ls prints them, for the next program.
                out.buffer.write(os.fsencode(text + "\n"))
                out.buffer.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise
    except OSError as exc:
        _silence_stdout()
        raise StdoutError(f"cannot write to stdout: {exc.strerror or exc}") from None


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


# -- signals ------------------------------------------------------------------------------


def exit_now(signum: int, frame: object = None) -> None:
    """Signal handler for when there is nothing left to clean: one line, exit 128+signum."""
    word = SIGNAL_WORDS.get(signal.Signals(signum), "interrupted")
    try:
        os.write(2, f"anyrestore: error: {word}\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


_received: list[int] = []  # the signal that started the way out, if any


def _first_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    forget_hung_up_terminal(signum)
    for sig in SIGNAL_WORDS:
        signal.signal(sig, exit_now)  # a second signal during cleanup ends the process
    raise Interrupted(signum)


def _ignore_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNAL_WORDS:
            signal.signal(sig, signal.SIG_IGN)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """The stop signals (anyrestore.errors.STOP_SIGNALS) raise Interrupted while the body runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in SIGNAL_WORDS}
    for sig in saved:
        signal.signal(sig, _first_signal)
    _received.clear()
    try:
        yield
    finally:
        # In the program the command's outcome is decided here and the process exits next.
        # A late signal must neither undo it (exit 130 after the output was committed) nor
        # kill the interpreter's shutdown, which resets Python handlers (exit -2): ignore it.
        if is_program():
            _ignore_signals()
        else:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


# -- the command group --------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _run(body: Any) -> Any:
    """Run a command body, turning every way it can end badly into one line and a code."""
    try:
        return body()
    except (typer.Exit, typer.TyperException, typer.Abort, SystemExit, GeneratorExit):
        raise
    except KeyboardInterrupt as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
        _ignore_signals()  # a second signal now would kill the exiting interpreter (-2)
        fail(str(exc) if isinstance(exc, Interrupted) else "interrupted", code)
    except AnyRestoreError as exc:
        fail(as_flags(str(exc)), exc.exit_code)
    except BrokenPipeError:
        # A closed downstream pipe (`| head`) is not an error worth a message.
        _silence_stdout()
        raise SystemExit(ExitCode.OK) from None
    except Exception as exc:
        _unexpected(exc)


def _unexpected(exc: Exception) -> NoReturn:
    if _received:
        # A library swallowed our interrupt (an import cut short fails again later): what
        # the user did was send a signal, so that is what the exit says.
        _ignore_signals()
        signum = _received[0]
        fail(SIGNAL_WORDS.get(signal.Signals(signum), "interrupted"), 128 + signum)
    if _debug():
        raise exc
    if isinstance(exc, MemoryError):  # decoding a huge photo, say: memory is exit 5
        fail("out of memory", ExitCode.DEVICE)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"{exc.strerror or _first_line(exc)}{where}", ExitCode.FAILED)
    fail(
        f"internal error, please report it: {_first_line(exc)} "
        f"(run with {DEBUG_ENV}=1 for the traceback)",
        ExitCode.FAILED,
    )


def _patch(cls: Any, name: str, make: Any) -> None:
    """Replace ``cls.name`` by ``make(original)``, once; nothing where Typer lacks either."""
    original = getattr(cls, name, None)
    if original is None or getattr(original, "anyrestore", False):
        return
    replacement = make(original)
    replacement.anyrestore = True
    setattr(cls, name, replacement)


def _readable_help() -> None:
    """--help and usage lines in a Unix tool's words, not Python's types. Display only.

    Options name their value with a metavar where they are declared (``--model NAME``);
    Typer 0.29 then still writes, and this leaves out or rewrites:

    * ``--json <bool>`` after every flag, which reads as if a value were expected
      (``--json true`` is an error): a flag shows no type;
    * ``IN <list[str]>``, a type after an argument's metavar: the metavar alone;
    * ``--quality 1-100 [1<=x<=100]``: the range once, where the metavar is the range;
    * ``fix [OPTIONS] {IN}...``: braces around a required argument in the usage line, a
      notation of Typer 0.29's own (click and man pages write ``IN...``, ``[IN]...`` when
      optional): written the way click does.

    Parsing and range checks are untouched. Typer versions without these methods render
    the click way already.
    """
    option = getattr(typer.core, "TyperOption", None)
    argument = getattr(typer.core, "TyperArgument", None)
    _patch(
        option,
        "display_type_rich",
        lambda shown: lambda self, ctx: None if self.is_flag else shown(self, ctx),
    )
    _patch(
        argument,
        "display_type_rich",
        lambda shown: lambda self, ctx: None if self.metavar else shown(self, ctx),
    )
    _patch(
        option,
        "_get_number_range_help_str",
        lambda said: lambda self: None if _says_range(self) else said(self),
    )
    _patch(argument, "_usage_display_name", lambda _: _usage_name)


def _says_range(param: Any) -> bool:
    """Whether the metavar is the range: ``1-100`` from 1 to 100, ``0-1`` from 0.0 to 1.0."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    return None not in (low, high, param.metavar) and param.metavar == f"{low:g}-{high:g}"


def _usage_name(self: Any) -> str:
    """An argument in the usage line as click writes it: ``IN...``, ``[NAME]...``."""
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return f"{name}..." if self.nargs != 1 else name


class CliGroup(TyperGroup):
    """Typer's group with anyrestore's error handling around every command."""

    def invoke(self, ctx: typer.Context) -> Any:
        with warnings.catch_warnings():
            if not _debug():
                # Pillow and torch warnings (corrupt EXIF, empty tensors) would print
                # multi-line notices before our one error line; the CLI speaks for itself.
                warnings.simplefilter("ignore")
            return _run(lambda: super(CliGroup, self).invoke(ctx))

    def _value_options(self, argv: list[str]) -> set[str]:
        """The option names that take a value in the command ``argv`` names (``-o``, ...)."""
        command: Any = self
        for word in argv:
            sub = getattr(command, "commands", {}).get(word)
            if sub is None:
                break
            command = sub
        return {
            name
            for param in getattr(command, "params", [])
            if getattr(param, "opts", None) and not getattr(param, "is_flag", True)
            for name in (*param.opts, *param.secondary_opts)
        }

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        prog_name = prog_name or "anyrestore"
        _readable_help()
        argv = sys.argv[1:] if args is None else list(args)
        _refuse_empty(argv)
        _refuse_dash_files(argv, self._value_options(argv))
        _import_torch_first(argv)
        try:
            with signals_interrupt():
                code = _run(
                    lambda: super(CliGroup, self).main(
                        args, prog_name, complete_var, standalone_mode=False, **extra
                    )
                )
        except typer.TyperException as exc:  # click's usage errors (Typer's copy of click)
            if not standalone_mode:
                raise
            if (
                type(exc).__name__ == "NoArgsIsHelpError"
            ):  # the help was printed: say what's missing
                group = getattr(getattr(exc, "ctx", None), "command_path", "") or "anyrestore"
                fail(f"a command is required; `{group} --help` lists them", exc.exit_code)
            _show_usage_error(exc)
            message = exc.format_message()
            if type(exc).__name__ == "NoSuchOption" and not getattr(exc, "possibilities", None):
                # nothing like an option of ours: perhaps a file name (a near miss lists options)
                message += (
                    " (a file whose name starts with a dash: write ./NAME, or put it after --"
                    " with every option before)"
                )
            fail(message, exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            fail("aborted", ExitCode.FAILED)
        if code == ExitCode.INTERRUPTED:  # Typer turned a signal while parsing into Exit(130)
            _ignore_signals()
            signum = _received[0] if _received else signal.SIGINT
            fail(SIGNAL_WORDS.get(signal.Signals(signum), "interrupted"), 128 + signum)
        if not standalone_mode:
            return code
        raise SystemExit(code if isinstance(code, int) else ExitCode.OK)


#: Options whose value may be empty on purpose.
EMPTY_ALLOWED = ("--suffix",)


def _refuse_empty(args: list[str]) -> None:
    """An empty argument is exit 2, whatever it stands for.

    It is nearly always an unset shell variable (``-o "$OUT"``), and as a path it would mean
    the current folder (``Path("")`` is ``.``): ``batch DIR -o ""`` would restore into it.
    """
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg.endswith("=") and arg[:-1] not in EMPTY_ALLOWED:
            option = arg[:-1]  # --output=
        elif arg == "" and (option := args[i - 1] if i else "") not in EMPTY_ALLOWED:
            pass
        else:
            continue
        what = (
            f"{option} has an empty value"
            if option.startswith("-") and option != "--"
            else f"the argument after {args[i - 1]!r} is empty"
            if i
            else "the first argument is empty"
        )
        fail(f"{what} (an unset shell variable?)", ExitCode.USAGE)


def _refuse_dash_files(args: list[str], value_options: set[str]) -> None:
    """A file whose name starts with a dash, given before ``--``, is exit 2 with the fix.

    The parser reads ``-old.jpg`` as ``-o ld.jpg`` and ``-mood.jpg`` as ``-m ood.jpg``: the
    first would write a file the user never named. An argument that names an existing file
    is never meant as options, so it is refused before anything runs; the value of an option
    that takes one (``-o -out.png``) is left alone.
    """
    for i, arg in enumerate(args):
        if arg == "--":
            return
        if i and args[i - 1] in value_options:
            continue
        # lexists answers False for a name the system refuses (too long, a NUL byte)
        if len(arg) > 1 and arg[0] == "-" and arg[1] != "-" and os.path.lexists(arg):
            # ./NAME keeps the options where they are (after --, every argument is a file)
            fixed = shlex.join(["anyrestore", *args[:i], f"./{arg}", *args[i + 1 :]])
            example = f": {fixed}" if i else ""
            fail(f"{arg} would be read as options; write it ./{arg}{example}", ExitCode.USAGE)


def _import_torch_first(args: list[str]) -> None:
    """Import torch before signals raise ``Interrupted``, for a command that will need it.

    Part of torch's start-up runs Python called from C++; an exception raised there by a
    signal handler cannot cross back and the process aborts (exit -6, a C++ message). Nothing
    of the command exists yet, so a signal during this import just exits with its one line.
    Help, ``--version`` and a bare ``anyrestore`` stay quick.
    """
    quick = not args or args[0] == "--version" or any(a in ("-h", "--help") for a in args)
    if quick or "torch" in sys.modules:
        return
    if not is_program() or threading.current_thread() is not threading.main_thread():
        return
    saved = {sig: signal.getsignal(sig) for sig in SIGNAL_WORDS}
    for sig in saved:
        signal.signal(sig, exit_now)
    try:
        import torch  # noqa: F401
    except Exception as exc:  # a broken install: a missing CUDA library, an ABI mismatch
        fail(
            f"cannot import torch ({type(exc).__name__}: {exc}); reinstall it, e.g. "
            "pip install --force-reinstall torch",
            ExitCode.FAILED,
        )
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _show_usage_error(exc: typer.TyperException) -> None:
    """The command's usage line and where its help is, before our one error line.

    Typer would also print the message in a box: the error is said once, on the last line.
    """
    ctx: typer.Context | None = getattr(exc, "ctx", None)
    if ctx is None:
        return
    try:
        lines = [ctx.get_usage()]
        if ctx.command.get_help_option(ctx) is not None:
            lines.append(f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.")
        typer.echo("\n".join(lines), err=True)
    except Exception:  # a broken stderr: the final line is what matters
        pass
