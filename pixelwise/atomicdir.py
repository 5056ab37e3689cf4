"""Directories replaced crash-safely: a model directory or checkpoint is always whole after a kill at any step.

The protocol of `replace(directory, write)`, in order (each step its own function, so a test can kill
the process right after any of them):

1. `recover(directory)`: settle what an earlier kill left (below), so exactly one copy exists;
2. `write_files`: write every file into a fresh sibling `.NAME.tmp-XXXX` and fsync each;
3. `mark_complete`: write the `.complete` marker and fsync the folder: a tmp folder without the marker
   is incomplete and never used;
4. `move_aside`: rename NAME to NAME.old (when NAME exists);
5. `move_in`: rename the tmp folder to NAME, fsync the parent;
6. `drop_old`: delete NAME.old.

`recover(directory)` after a kill: among NAME, NAME.old and the complete tmp folders, the newest (by the
"epoch" of its config.json, then NAME over tmp over .old) becomes NAME; every other copy and every
incomplete tmp folder is deleted. Each of its renames and deletions leaves a state it can itself recover
from, so a kill during a recovery is recovered by the next. `newest(directory)` makes the same choice
without touching anything (for readers: predict, eval, serve).

Disk full while writing is a ModelError saying which device is full; the previous copy is kept.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pixelwise.errors import ModelError

COMPLETE = ".complete"
CONFIG_NAME = "config.json"


def old_of(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


def tmps_of(directory: Path) -> list[Path]:
    if not directory.parent.is_dir():
        return []
    return sorted(directory.parent.glob(f".{directory.name}.tmp-*"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _epoch(directory: Path) -> float:
    try:
        return float(json.loads((directory / CONFIG_NAME).read_text()).get("epoch", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return -1.0


def candidates(directory: Path) -> list[tuple[Path, bool]]:
    """(copy, complete) for NAME, NAME.old and every tmp folder that exist. NAME and NAME.old only ever
    came from a complete tmp folder (or from an older save without the marker): complete when they hold
    a config.json; a tmp folder is complete when it holds the marker."""
    found = []
    for path, rank in ((directory, 2), (old_of(directory), 0)):
        if path.is_dir():
            found.append((path, (path / CONFIG_NAME).is_file()))
    found += [(t, (t / COMPLETE).is_file() and (t / CONFIG_NAME).is_file()) for t in tmps_of(directory)]
    return found


def newest(directory: str | Path) -> Path | None:
    """The copy `recover` would keep, or None when there is no complete one; changes nothing."""
    directory = Path(directory)
    rank = {directory: 2, old_of(directory): 0}
    complete = [p for p, ok in candidates(directory) if ok]
    if not complete:
        return None
    return max(complete, key=lambda p: (_epoch(p), rank.get(p, 1)))


def recover(directory: str | Path) -> Path | None:
    """Settle what a kill left: the newest complete copy becomes `directory`, every other copy goes.
    Returns `directory` when a complete copy exists, else None (nothing was ever completely saved)."""
    directory = Path(directory)
    winner = newest(directory)
    if winner is not None and winner != directory:
        if directory.exists():
            shutil.rmtree(directory)  # an older complete copy: the winner is complete, so this loses nothing
        os.rename(winner, directory)
        _fsync(directory.parent)
    for path, _ in candidates(directory):
        if path != directory:
            shutil.rmtree(path, ignore_errors=True)
    return directory if winner is not None else None


def _device(path: Path) -> str:
    """The mount point holding `path` (for a "no space left" message)."""
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def write_files(directory: Path, write: Callable[[Path], None]) -> Path:
    """Step 2: a tmp folder beside `directory` holding what `write(folder)` writes, each file fsynced."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            _fsync(f)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in str(exc):
            raise ModelError(f"{directory}: no space left on device ({_device(directory.parent)}) while writing; "
                             "the previous copy is kept") from None
        raise
    return tmp


def mark_complete(tmp: Path) -> None:
    """Step 3: from here on the tmp folder counts as a whole copy."""
    (tmp / COMPLETE).write_text("")
    _fsync(tmp)


def move_aside(directory: Path) -> None:
    """Step 4."""
    if directory.exists():
        os.rename(directory, old_of(directory))


def move_in(tmp: Path, directory: Path) -> None:
    """Step 5."""
    os.rename(tmp, directory)
    _fsync(directory.parent)


def drop_old(directory: Path) -> None:
    """Step 6."""
    shutil.rmtree(old_of(directory), ignore_errors=True)


def replace(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Replace `directory` by what `write(folder)` writes, crash-safely (the module docstring's protocol)."""
    directory = Path(directory)
    recover(directory)
    tmp = write_files(directory, write)
    mark_complete(tmp)
    move_aside(directory)
    move_in(tmp, directory)
    drop_old(directory)
    return directory
