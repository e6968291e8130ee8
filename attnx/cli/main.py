"""attnx command line: zoo | export | check | optimize | convert | generate | bench | plugins | build | train | triton.

Exit codes: 0 success (parity passed), 1 parity failed, 2 bad input or usage, 3 internal error,
130 interrupted, 141 stdout closed by its reader.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from attnx.cli import bench, build, check, convert, export, generate, optimize, plugins, train, triton, zoo
from attnx.errors import AttnxError

COMMANDS = (zoo, export, check, convert, generate, optimize, bench, plugins, build, train, triton)  # in `attnx --help` order
# 0 and 1 are the handlers' own (success or parity passed; parity failed); these are main's
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 2, 3, 130, 141
DEBUG_ENV = "ATTNX_DEBUG"
_PACKAGE = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; each sets `run`, the handler that takes the parsed args."""
    parser = argparse.ArgumentParser(prog="attnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an internal error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _failing_step(exc: BaseException) -> str:
    """Where `exc` was raised: the innermost attnx frame below this dispatcher (a library's frame says
    less than the attnx step that called it), else the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = Path(__file__).resolve()
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(_PACKAGE)
            and Path(f.filename).resolve() != here]
    frame = (ours or frames)[-1]
    where = Path(frame.filename)
    where = where.resolve().relative_to(_PACKAGE.parent) if ours else where.name
    return f"{frame.name} ({where}:{frame.lineno})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400] + ' …' if len(text) > 400 else text}" if text else type(exc).__name__


class _Interrupted:
    """SIGINT handler: remembers the interrupt, so that an exception a library raises while unwinding
    from it (torch.export wraps a KeyboardInterrupt) still ends as an interrupt."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    prefix = f"attnx {args.command}"
    interrupted = _Interrupted()
    # only the main thread may set handlers; None: a handler not set from Python, left as it is
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGINT, interrupted)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader of stdout stopped reading (`| head`): no more output, and no traceback at exit
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    except BaseException as exc:
        if interrupted.seen or isinstance(exc, KeyboardInterrupt):
            print(f"{prefix}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, AttnxError):
            if debug:
                traceback.print_exc()
            print(f"{prefix}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not isinstance(exc, Exception):  # SystemExit and the like keep their meaning
            raise
        if debug:
            traceback.print_exc()
        print(f"{prefix}: internal error in {_failing_step(exc)}: {_one_line(exc)}; run with --debug or "
              f"{DEBUG_ENV}=1 for the traceback", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
