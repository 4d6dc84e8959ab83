"""Atomic file writes: a hidden temporary in the same directory, flushed and fsynced, then
renamed over the target (atomic on POSIX), the directory fsynced so that the rename itself
survives a crash. Free of torch, so that the tools that only read run folders
(`python -m trainer.runs`) start fast."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or must not be used; the message names the file."""


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
            raise CheckpointError(f"could not write {path}: {err.strerror or err}") from err
        raise


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Temporaries left by a process killed mid-write; safe because only one run writes here."""
    stale = sorted(Path(directory).glob(f"{_TMP_PREFIX}*")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed stale temporary %s", path)
    return stale
