"""Command-line plumbing shared by every entry point (trainer/train_*.py, scripts/*.py).

* `make_parser(doc, prog)` gives an `ArgParser`: an `argparse.ArgumentParser` where every long flag
  is accepted with `-` or `_` between its words (`--hf-dataset` == `--hf_dataset`), abbreviations are
  refused (`--hidden` is not `--hidden_size`), an error is ONE line on stderr
  (`prog: error: argument --mask: invalid choice: 'x' (choose from columnar, isolated)`) with exit
  status 2, and checks registered by the flag groups (`add_check`) run right after parsing, before any
  model or data is loaded. A check raises `UsageError` naming the flag(s).
* `@cli_main(build_parser)` turns `main(args) -> int` into the entry point `main(argv=None) -> int`:
  bad input (`parallel_data.io.DataError`, `ValueError`, `OSError` such as FileNotFoundError,
  `SystemExit("message")`, from parsing or from the work itself) becomes one line on stderr and the
  return value 2 (`sys.exit(main())` then exits 2), never a traceback; any other exception is a bug and
  keeps its traceback. `SystemExit` with a number (argparse's 2, `--help`'s 0, a trainer's 130/143 after
  an interrupt) becomes the return value, so an in-process caller always gets the exit status back.
  Ctrl-C that reaches the wrapper prints one line and returns 130 (never 2).
  `PARALLELMIND_TRACEBACK=1` shows the full traceback of a handled error too.

Exit status: 0 success, 2 bad input (a flag, a file, a record), 130 / 143 interrupted by SIGINT / SIGTERM.

Torch-free on purpose: parsing and its checks finish before the heavy imports of an entry point.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from model.device import canonical_dtype, check_device_name

TRACEBACK_ENV = "PARALLELMIND_TRACEBACK"
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class UsageError(ValueError):
    """A flag value, or a combination of flags, that cannot work; the message names the flag(s)."""


def refuse_overwrite(path: str | Path | None, flag: str, overwrite: bool) -> None:
    """A run never replaces an existing output file unasked: UsageError naming `flag` unless --overwrite."""
    if path is not None and Path(path).expanduser().exists() and not overwrite:
        raise UsageError(f"{flag} {path} already exists; pass --overwrite to replace it")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help text (unless it says its own); the epilog keeps its layout."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class ArgParser(argparse.ArgumentParser):
    """argparse with both word separators, no abbreviations, one-line errors and post-parse checks."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._checks: list[tuple[bool, Callable[[argparse.Namespace], None]]] = []

    def add_check(self, check: Callable[[argparse.Namespace], None], *, paths: bool = False) -> None:
        """Run `check(args)` after parsing; it raises UsageError for a bad combination of flags.

        Checks of files and folders (`paths=True`) run after every check of the flags themselves.
        """
        self._checks.append((paths, check))

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _normalise(self, argv: list[str]) -> list[str]:
        """`--a-b` -> `--a_b` (or back) when only the other spelling is declared."""
        known = self._option_string_actions
        out: list[str] = []
        for i, tok in enumerate(argv):
            if tok == "--":
                out.extend(argv[i:])
                break
            if tok.startswith("--") and len(tok) > 2:
                name, eq, value = tok.partition("=")
                if name not in known:
                    for alt in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                        if alt in known:
                            tok = alt + eq + value
                            break
            out.append(tok)
        return out

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else [str(a) for a in args]
        return super().parse_known_args(self._normalise(args), namespace)

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        for _, check in sorted(self._checks, key=lambda c: c[0]):  # stable: flags first, then paths
            try:
                check(ns)
            except UsageError as e:
                self.error(str(e))
        return ns


def check_flags_first(build_parser: Callable[[], ArgParser]) -> None:
    """For a script whose module imports torch at the top: parse (and check) `sys.argv` right away.

    A bad flag or `--help` then answers in a fraction of a second instead of after the heavy imports;
    `main()` parses again (cheap) inside the `cli_main` wrapper. Call it as
    `if __name__ == "__main__": check_flags_first(build_parser)` above the heavy imports.
    """
    build_parser().parse_args()


def make_parser(doc: str | None, prog: str) -> ArgParser:
    """A parser whose description is the docstring's first paragraph and whose epilog is the rest."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    return ArgParser(prog=prog, description=head or None, epilog=rest or None)


RESUME_SUFFIX = "_resume.pth"  # {stem}_resume.pth beside {stem}.pth (trainer/engine/checkpointer.py)
HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name


# --- value types (argparse `type=`): a bad value is "argument --flag: message" -------------------------

def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


def _int(v) -> int:
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}") from None


def _float(v) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {v!r}")
    return f


def _bounded(convert, accept, expected: str, name: str):
    """An argparse type: `convert(text)`, then refuse values outside `accept` with "expected <expected>"."""
    def parse(v):
        x = convert(v)
        if not accept(x):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return x
    parse.__name__ = name
    return parse


positive_int = _bounded(_int, lambda i: i >= 1, "a positive integer", "positive_int")
nonneg_int = _bounded(_int, lambda i: i >= 0, "a non-negative integer", "nonneg_int")
nonneg_float = _bounded(_float, lambda f: f >= 0, "a number >= 0", "nonneg_float")
positive_float = _bounded(_float, lambda f: f > 0, "a number > 0", "positive_float")
ratio = _bounded(_float, lambda f: 0.0 <= f <= 1.0, "a value in [0, 1]", "ratio")
probability = _bounded(_float, lambda f: 0.0 < f <= 1.0, "a value in (0, 1]", "probability")
port_number = _bounded(_int, lambda i: 1 <= i <= 65535, "a port number in 1..65535", "port_number")


def http_url(v) -> str:
    """An http(s) URL such as http://127.0.0.1:6006/v1 (trailing slash dropped)."""
    from urllib.parse import urlparse

    u = urlparse(str(v))
    if u.scheme not in ("http", "https") or not u.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {v!r}")
    return str(v).rstrip("/")


def int_list(v) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (positive integers)."""
    try:
        out = [int(x) for x in str(v).split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4, got {v!r}")
    return out


def device_name(v) -> str:
    try:
        return check_device_name(str(v))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def dtype_name(v) -> str:
    try:
        return canonical_dtype(str(v))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class BoolFlag(argparse.Action):
    """`--x` turns a setting on and `--no_x` (also `--no-x`) off; the default may be either."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        names = [s for o in option_strings for s in ((o, "--no_" + o[2:]) if o.startswith("--") else (o,))]
        super().__init__(names, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


# --- path checks (parse time: before anything is loaded or written) ------------------------------------

def check_input_file(path, flag: str, what: str = "file") -> None:
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {path} is a directory; expected a {what}")
    if not p.exists():
        raise UsageError(f"{flag} {path} does not exist")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{flag} {path} is not readable")


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def check_writable_file(path, flag: str) -> None:
    """The file can be created (or replaced): not a directory, its folder exists or can be made."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {path} is a directory; expected a file name")
    if p.exists():
        if not os.access(p, os.W_OK) or not os.access(p.parent, os.W_OK):
            raise UsageError(f"{flag} {path} cannot be overwritten (permission denied)")
        return
    _check_creatable(p.parent, flag, path)


def check_writable_dir(path, flag: str) -> None:
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"{flag} {path} is a file; expected a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path} is not writable")
        return
    _check_creatable(p, flag, path)


def _check_creatable(folder: Path, flag: str, given) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UsageError(f"{flag} {given}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {given}: cannot create files under {base} (permission denied)")


def check_not_resume_state(path, flag: str) -> None:
    """A `{stem}_resume.pth` is optimizer/RNG/data state, not a model: name the checkpoint beside it."""
    name = Path(path).name
    if name.endswith(RESUME_SUFFIX):
        model = Path(path).with_name(name[: -len(RESUME_SUFFIX)] + ".pth")
        there = "" if model.exists() else " (not there yet)"
        raise UsageError(f"{flag} {path} is a training resume state (optimizer, RNG and data position), not a model; "
                         f"the model checkpoint next to it is {model}{there}")


def check_model_path(path, flag: str) -> None:
    check_not_resume_state(path, flag)
    if not Path(path).expanduser().exists():
        raise UsageError(f"{flag} {path} does not exist (train one with trainer/train_pretrain.py, or pass a saved "
                         "model folder)")


def check_local_or_hub(path, flag: str) -> None:
    if not Path(path).expanduser().exists() and not HUB_NAME.match(str(path)):
        raise UsageError(f"{flag} {path} does not exist (and is not a Hub name such as owner/model)")


_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")


def error_message(exc: BaseException | str) -> str:
    """The one-line message for a handled error (a DataLoader worker's error: its original message)."""
    text = str(exc) if not isinstance(exc, SystemExit) else str(exc.code)
    if _WORKER_ERROR.match(text) and "Traceback" in text:
        # "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\nmodule.DataError: msg"
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last, count=1)
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or text


def report_error(prog: str, exc: BaseException | str) -> int:
    """Print `prog: error: message` (with the rank under torchrun) on stderr; returns exit status 2."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = f" [rank {os.environ.get('RANK', '0')}]" if world > 1 else ""
    print(f"{prog}{rank}: error: {error_message(exc)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def cli_main(build_parser: Callable[[], ArgParser], prog: str | None = None):
    """`@cli_main(build_parser)` over `main(args) -> int` gives the entry point `main(argv=None) -> int`.

    The arguments are parsed (and checked) inside the wrapper, so a bad flag, a bad file and a bad record
    all come back as one line and exit status 2; see the module docstring. prog: the name in those
    lines (default: the file that defines `main`).
    """
    def decorate(main: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        module = sys.modules.get(main.__module__)
        name = prog or Path(getattr(module, "__file__", None) or sys.argv[0] or "parallelmind").stem

        @functools.wraps(main)
        def wrapper(argv: list[str] | None = None) -> int:
            status = _run_main(main, build_parser, name, argv)
            if argv is None and _closed_a_process_group():
                _exit_now(status)
            if argv is None and status in (EXIT_SIGINT, EXIT_SIGTERM):
                # a command stopped by a signal has saved its work: a further Ctrl-C (a terminal sends one to
                # the whole process group) must not turn the exit status into death by signal
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return status

        wrapper.build_parser = build_parser
        return wrapper

    return decorate


def _closed_a_process_group() -> bool:
    mod = sys.modules.get("trainer.distributed")  # never imported here: only a run that used it can say yes
    return bool(mod is not None and mod.group_closed())


def _exit_now(status: int) -> None:
    """End a process whose run finished, saved and closed its process group, skipping the interpreter's
    teardown: there, gloo's C++ threads can abort ("terminate called without an active exception", exit -6)
    or hang after a complete run (pytorch/pytorch#75097), which would turn a finished run into a failure."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def stage_front(doc: str | None, prog: str, add_args: Callable[[ArgParser], None], stage: Callable[[], object]):
    """-> (build_parser, parse_args, main) of a trainer front whose stage is built elsewhere.

    The flags come from `add_args(parser)`; `main(argv=None) -> int` runs the engine on `stage()`. The
    engine and the stage are imported only by `main`, so `--help` and a bad flag answer before torch loads.
    """
    def build_parser() -> ArgParser:
        p = make_parser(doc, prog)
        add_args(p)
        return p

    def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
        return build_parser().parse_args(argv)

    @cli_main(build_parser, prog)
    def main(args: argparse.Namespace) -> int:
        from trainer.engine import run

        return run(args, stage())

    return build_parser, parse_args, main


def _run_main(main, build_parser, prog: str, argv: list[str] | None) -> int:
    """Parse, run, and turn data and argument errors into one line and exit status 2."""
    try:
        return main(build_parser().parse_args(argv))
    except SystemExit as e:  # argparse (2, or 0 after --help), a trainer's 130/143, or a message
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        return report_error(prog, e)
    except (ValueError, OSError) as e:  # DataError, UsageError, FileNotFoundError, PermissionError, ...
        if os.environ.get(TRACEBACK_ENV):
            raise
        return report_error(prog, e)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_SIGINT
