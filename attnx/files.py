"""Every file attnx writes lands whole or not at all, and a bad output path is refused before any work.

A writer writes into a staging folder beside its outputs (hidden, `.attnx-staging-*`, in the same
folder, so the same filesystem and the final rename is atomic). Only when the writer returns are the
files flushed to disk and renamed into place, together: several outputs (prefill and decode, an ONNX
file and its external data) land all or none. On an exception, Ctrl-C or SIGTERM the staging folder
is removed and whatever was at the output paths is untouched. A SIGKILL cannot be caught: it leaves
at most a stale staging folder, never a partial file at an output path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from attnx.errors import InputError, OutputWriteError

STAGING_PREFIX = ".attnx-staging-"
_BACKUP_PREFIX = ".attnx-old-"
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# what the disk or the system refused, as against a bug: a clear error naming the outputs, not a traceback
_REFUSED = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _kind(path: Path) -> str:
    return "a folder" if path.is_dir() else "a file" if path.is_file() else "a special file"


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _require_writable_folder(what: str, path: Path, folder: Path, make_parents: bool) -> None:
    found = _nearest_existing(folder) if make_parents else folder
    if not found.exists():
        raise InputError(f"{what} {path}: expected an existing folder {folder}, found nothing there")
    if not found.is_dir():
        raise InputError(f"{what} {path}: expected {found} to be a folder, found {_kind(found)}")
    if not os.access(found, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: expected a folder attnx can write to, found {found} read-only")


def check_output_path(path: str | Path, what: str = "output", *, make_parents: bool = False) -> Path:
    """Refuse an output file path that cannot be written, before the work that produces it starts.

    The target must be a regular file or absent; its folder must exist and be writable
    (`make_parents`: the nearest existing folder above it, the missing ones are created when the
    file lands). Raises InputError saying what was expected and what was found; returns the path."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"{what} {path}: expected a file to write, found {_kind(path)}")
    _require_writable_folder(what, path, path.parent, make_parents)
    return path


def check_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Refuse an output folder that is a file or cannot be created or written; returns it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder}: expected a folder, found {_kind(folder)}")
    _require_writable_folder(what, folder, folder, make_parents=True)
    return folder


def _interrupt(signum, frame):
    """SIGTERM while outputs are staged: unwind as the SIGINT handler would, so the staging is removed."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises (as Ctrl-C does) instead of ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the main thread's own writes are covered
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (and are delivered after) while files are renamed and staging removed."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _land(staged: dict[Path, Path], targets: list[Path]) -> None:
    """Rename every file of each staging folder into its folder; on a failure put back what was there."""
    for target in targets:
        if not (staged[target.parent] / target.name).is_file():
            raise RuntimeError(f"the writer of {target} finished without writing it")
    moves = [(staging / name, folder / name)
             for folder, staging in staged.items() for name in sorted(os.listdir(staging))]
    for new, _ in moves:
        _fsync(new)
    landed: list[tuple[Path, Path | None]] = []
    try:
        for new, target in moves:
            backup = None
            if target.is_file():
                backup = new.with_name(_BACKUP_PREFIX + target.name)
                try:
                    os.link(target, backup)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(target, backup)
            os.replace(new, target)
            landed.append((target, backup))
    except BaseException:
        for target, backup in reversed(landed):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
        raise
    for folder in staged:
        _fsync(folder)


def _make_folders(folder: Path, created: list[Path]) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:  # made meanwhile by another process: not ours to remove
            continue
        created.append(f)


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Stage several output files; yields the paths to write them at (same names, in staging folders).

    When the block ends normally every staged file (the named ones, and any other file the writer
    put beside them, such as ONNX external data) is fsynced and renamed into place; if the block
    raises, is interrupted or gets SIGTERM, nothing lands, the old files stay as they were and the
    staging folders (and any folder created for the outputs) are removed."""
    targets = [Path(p) for p in paths]
    if len({t.resolve() for t in targets}) != len(targets):
        raise InputError(f"expected a different path for each output, got {', '.join(map(str, targets))}")
    created: list[Path] = []
    staged: dict[Path, Path] = {}
    with _terminate_unwinds():
        try:
            for folder in dict.fromkeys(t.parent for t in targets):
                try:
                    _make_folders(folder, created)
                    staged[folder] = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
                except OSError as exc:  # whatever the errno: nothing of the user's has been touched yet
                    raise OutputWriteError(f"expected to write {', '.join(map(str, targets))}, but {folder} "
                                           f"takes no new file: {exc.strerror or exc}") from exc
            yield [staged[t.parent] / t.name for t in targets]
            with _signals_held():
                _land(staged, targets)
                created.clear()
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            raise OutputWriteError(f"expected to write {', '.join(map(str, targets))}, but the system refused: "
                                   f"{exc.strerror}; what was at those paths is left as it was") from exc
        finally:
            with _signals_held():
                for staging in staged.values():
                    shutil.rmtree(staging, ignore_errors=True)
                for folder in reversed(created):
                    with contextlib.suppress(OSError):
                        folder.rmdir()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """One output file: yields the staging path to write; the file lands at `path` only on success."""
    with atomic_outputs(path) as (staged,):
        yield staged


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_output(path) as staged:
        staged.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def folder_lock(folder: str | Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if missing) while inside; if another process holds
    it, say so once through `on_wait` and wait. The lock is flock on the folder itself: nothing is
    left behind, and it goes with the process however that ends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(f"waiting for another attnx process that is writing into {folder} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
