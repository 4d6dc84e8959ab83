"""The files a run writes and reads: atomic writes and JSON.

An atomic write goes to a hidden temporary in the same directory, is flushed and fsynced,
then renamed over the target (atomic on POSIX), and the directory is fsynced so that the
rename itself survives a crash: a kill at any moment leaves the old file or the new one,
plus at worst a temporary that the next start removes. Free of torch, so that the tools
that only read run folders (`python -m trainer.runs`) start fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


class WriteError(RuntimeError):
    """A file that could not be written; the message names it and the reason."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(f"could not write {path}: {err.strerror or err}") from err
        raise


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Temporaries left by a process killed mid-write; safe because only one run writes here."""
    stale = sorted(Path(directory).glob(f"{_TMP_PREFIX}*")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed stale temporary %s", path)
    return stale


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "-inf", "nan": strict JSON has no such numbers
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, written atomically; non-finite floats as strings."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is missing or does not parse: the files are
    written atomically, so an unreadable one was never finished (or was damaged)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
