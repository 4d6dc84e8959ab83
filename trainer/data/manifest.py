"""Folder manifests: a corpus is scanned in full once, later runs re-check only what changed.

The first scan of a folder reads every file (`audio_io.probe`: header, every sample,
silence, resampling ratio) and writes the verdicts to a manifest under `data.cache_dir`:
per file its size, mtime, rate, frames, channels and peak, or the reason it is bad. A
later run stats every file (cheap) and probes again only files that are new or whose size
or mtime changed; removed files leave the manifest. A file that was bad stays bad and is
reported exactly as the first time, so the bad-file policy (`data.bad_files`) is unchanged.

One manifest per (folder, silence threshold, sample rate), since the verdicts depend on
all three. It is replaced atomically and written under an exclusive lock held for the
whole scan, so concurrent runs, trials and data-parallel ranks wait for the first scan and
then read its result instead of scanning twice. A manifest that does not parse, names
another folder or another format is rebuilt with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trainer.data.audio_io import AudioError, AudioInfo
from trainer.files import atomic_write

log = logging.getLogger("trainer")

FORMAT = 1
Verdict = AudioInfo | AudioError


def location(cache_dir: str | os.PathLike, folder: Path, silence_db: float, sample_rate: int) -> Path:
    key = json.dumps([FORMAT, str(folder.resolve()), float(silence_db), int(sample_rate)])
    return Path(cache_dir).expanduser() / "manifests" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


@contextlib.contextmanager
def _locked(path: Path | None):
    """Exclusive for the whole scan; the kernel drops it if the holder dies. Without a
    writable cache folder the scan runs unshared."""
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a+b")
    except OSError as err:
        log.warning("manifest folder %s is not writable (%s): scanning without a manifest", path.parent, err)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path | None, folder: Path, silence_db: float, sample_rate: int) -> dict[str, dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
        expected = {"format": FORMAT, "folder": str(folder.resolve()), "silence_db": float(silence_db),
                    "sample_rate": int(sample_rate)}  # fmt: skip
        if {k: manifest.get(k) for k in expected} != expected:
            raise ValueError("it was written for another folder, format or settings")
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(e, dict) and "size" in e for e in files.values()):
            raise ValueError("its file table is malformed")
        return files
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("manifest %s of %s is damaged or foreign (%s): scanning the folder again", path, folder, err)
        return {}


def _entry(stat: os.stat_result, verdict: Verdict) -> dict[str, Any]:
    entry: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if isinstance(verdict, AudioError):
        entry["error"] = str(verdict)
    else:
        entry |= {"rate": verdict.sample_rate, "frames": verdict.frames, "channels": verdict.channels,
                  "peak_db": verdict.peak_db}  # fmt: skip
    return entry


def _verdict(path: Path, entry: dict[str, Any]) -> Verdict:
    if "error" in entry:
        return AudioError(entry["error"])
    return AudioInfo(path, int(entry["rate"]), int(entry["frames"]), int(entry["channels"]), float(entry["peak_db"]))


PROCESSES_FROM = 256  # files; fewer are probed by threads (no process start-up to pay)


def _map(probe: Callable[[Path], Verdict], paths: list[Path]) -> list[Verdict]:
    """`probe` over `paths` on every core. Decoding and the checks hold the GIL part of the
    time, so threads use about 1.2 of 2 cores; a large scan forks processes instead (as the
    data loader's workers do), which needs a picklable `probe`."""
    workers = os.cpu_count() or 1
    if len(paths) < PROCESSES_FROM or workers == 1:
        with ThreadPoolExecutor(max_workers=min(8, workers)) as pool:
            return list(pool.map(probe, paths))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(probe, paths, chunksize=max(1, len(paths) // (workers * 16))))


def scan(
    key: str,
    folder: Path,
    files: dict[str, Path],
    probe: Callable[[Path], Verdict],
    cache_dir: str | os.PathLike | None,
    silence_db: float,
    sample_rate: int,
) -> dict[str, Verdict]:
    """The verdict on each of `files` (name -> path under `folder`): from the manifest when
    the file's size and mtime are unchanged, from `probe` (threads) otherwise."""
    t0 = time.perf_counter()
    path = location(cache_dir, folder, silence_db, sample_rate) if cache_dir else None
    with _locked(path):
        known = _read(path, folder, silence_db, sample_rate)
        results: dict[str, Verdict] = {}
        stats: dict[str, os.stat_result] = {}
        todo: dict[str, Path] = {}
        for name, file in files.items():
            try:
                stat = stats[name] = file.stat()
            except OSError as err:
                results[name] = AudioError(f"{file}: unreadable ({err.strerror})")
                continue
            entry = known.get(file.relative_to(folder).as_posix())
            if entry is not None and entry["size"] == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
                results[name] = _verdict(file, entry)
            else:
                todo[name] = file
        results.update(zip(todo, _map(probe, list(todo.values()))))
        rels = {files[n].relative_to(folder).as_posix(): n for n in stats}
        # entries of files not asked for this time (a pair's orphan) stay while the file exists
        kept = {rel: e for rel, e in known.items() if rel not in rels and (folder / rel).is_file()}
        gone = len(known) - len(kept) - sum(rel in known for rel in rels)
        if path is not None and (todo or gone or len(kept) + len(rels) != len(known)):
            table = kept | {rel: _entry(stats[n], results[n]) for rel, n in rels.items()}
            manifest = {"format": FORMAT, "folder": str(folder.resolve()), "silence_db": float(silence_db),
                        "sample_rate": int(sample_rate), "files": table}  # fmt: skip
            try:
                atomic_write(path, lambda f: f.write(json.dumps(manifest).encode()))
            except OSError as err:
                log.warning("could not write the manifest %s (%s): the next run scans again", path, err)
    good = [r for r in results.values() if isinstance(r, AudioInfo)]
    minutes = sum(r.seconds for r in good) / 60
    log.info(
        "data.%s: %d files (%.1f min of audio) in %.2f s: %d from the manifest, %d scanned, %d gone: %s",
        key, len(files), minutes, time.perf_counter() - t0, len(files) - len(todo), len(todo), max(gone, 0), folder,
    )  # fmt: skip
    return results
