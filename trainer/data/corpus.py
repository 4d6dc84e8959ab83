"""The embedded dataset's corpora (clean utterances, noise clips): rendered once, then reused.

Rendering is the expensive part of the embedded data (about 8 ms per utterance and 5 ms
per noise clip on one core: ~20 s for the default corpus), and every job of a sweep used
to pay it again. A corpus is now

* rendered all at once, in parallel over the machine's cores (forked workers). Each clip is
  a pure function of `(seed, split, kind, index)`, so the result is the serial one, bit for bit;
* shared by every dataset of the process that asks for the same corpus (the jobs of a
  multirun under Hydra's basic launcher run in one process);
* cached on disk under `data.cache_dir` (one folder per corpus, named by a hash of every
  setting that changes a clip and of the source code that renders them). Files are written
  atomically, under a lock, so concurrent jobs (joblib, submitit, DDP ranks) render a
  corpus once; every read is checked against the checksums written with it, and a damaged
  or foreign cache is rendered again, with a warning, never used.

A cache that cannot be written (read-only disk, quota) costs a warning, not the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainer.data import noise, voice
from trainer.files import atomic_write, remove_stale_temporaries

log = logging.getLogger(__name__)

TRAIN, VALID = 0, 1
CLEAN, NOISE = 0, 1
_SOURCES = (Path(voice.__file__), Path(noise.__file__), Path(__file__))  # the code a clip depends on
_SHARED: OrderedDict[str, Corpus] = OrderedDict()  # this process's corpora, most recent last
_SHARED_MAX = 4  # corpora kept in memory (a sweep over seeds makes one per seed)
_PARALLEL_MIN = 32  # clips below which forking workers costs more than it saves


@dataclass(frozen=True)
class Spec:
    """Everything a clip depends on. Mixing settings (SNR, level) are not here: they are
    applied per draw, so datasets that differ only in them share a corpus."""

    seed: int
    split: int  # TRAIN or VALID
    sample_rate: int
    clip_length: int  # samples
    clean: int  # utterances
    noises: int  # noise clips
    families: tuple[str, ...]
    p_modulate: float
    p_reverb: float

    def key(self) -> str:
        code = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES)).hexdigest()
        text = json.dumps({**asdict(self), "code": code}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Corpus:
    clean: np.ndarray  # (spec.clean, clip_length) float32
    noise: np.ndarray  # (spec.noises, clip_length) float32


def corpus(spec: Spec, cache_dir: str | os.PathLike | None) -> Corpus:
    """The corpus of `spec`: from this process, else from the disk cache, else rendered
    (and cached). Safe to call from concurrent processes."""
    key = spec.key()
    if key in _SHARED:
        _SHARED.move_to_end(key)
        return _SHARED[key]
    folder = Path(cache_dir).expanduser() / f"synthetic-{key}" if cache_dir else None
    with _locked(folder):
        found = _read(folder, spec) if folder is not None else None
        if found is None:
            found = _render(spec)
            if folder is not None:
                _write(folder, spec, found)
    _SHARED[key] = found
    while len(_SHARED) > _SHARED_MAX:
        _SHARED.popitem(last=False)
    return found


# --- rendering -------------------------------------------------------------------------


def render_clean(spec: Spec, index: int) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, spec.split, CLEAN, index])
    return voice.render(rng, spec.clip_length, spec.sample_rate).astype(np.float32)


def render_noise(spec: Spec, clean: np.ndarray, index: int) -> np.ndarray:
    """One noise clip; its babble talkers are utterances of the same split's clean corpus,
    and a validation example's babble never contains its own target utterance."""
    rng = np.random.default_rng([spec.seed, spec.split, NOISE, index])
    avoid = index if spec.split == VALID else None

    def talker(r: np.random.Generator, n: int) -> np.ndarray:
        pick = int(r.integers(len(clean)))
        if pick == avoid and len(clean) > 1:
            pick = (pick + 1) % len(clean)
        utterance = clean[pick].astype(np.float64)
        return np.roll(utterance, int(r.integers(len(utterance))))[:n]

    clip = noise.make_noise(
        rng, spec.clip_length, spec.sample_rate, list(spec.families), spec.p_modulate, spec.p_reverb, talker
    )
    return clip[0].astype(np.float32)


# Worker globals: set in the parent before the pool forks, so workers inherit them for free.
_JOB: tuple[Spec, np.ndarray | None] | None = None


def _work(index: int) -> np.ndarray:
    spec, clean = _JOB
    return render_clean(spec, index) if clean is None else render_noise(spec, clean, index)


def _map(spec: Spec, clean: np.ndarray | None, count: int) -> np.ndarray:
    global _JOB
    out = np.empty((count, spec.clip_length), np.float32)
    workers = _workers()
    _JOB = (spec, clean)
    try:
        if workers > 1 and count >= _PARALLEL_MIN:
            # fork: the workers start in milliseconds and inherit the clean corpus; they
            # run numpy only (no torch), so forking a process that has torch loaded is safe
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for i, clip in enumerate(pool.imap(_work, range(count), chunksize=8)):
                    out[i] = clip
        else:
            for i in range(count):
                out[i] = _work(i)
    finally:
        _JOB = None
    return out


def _workers() -> int:
    if sys.platform != "linux":  # fork is only safe and the default-cheap start on Linux
        return 1
    return len(os.sched_getaffinity(0))


def _render(spec: Spec) -> Corpus:
    started = time.perf_counter()
    clean = _map(spec, None, spec.clean)
    found = Corpus(
        clean, _map(spec, clean, spec.noises) if spec.families else np.zeros((0, spec.clip_length), np.float32)
    )
    workers = _workers() if spec.clean >= _PARALLEL_MIN else 1
    log.info(
        "rendered the %s corpus (%d utterances, %d noise clips) in %.1f s on %d process%s",
        "training" if spec.split == TRAIN else "validation",
        spec.clean,
        spec.noises,
        time.perf_counter() - started,
        workers,
        "es" if workers > 1 else "",
    )
    return found


# --- disk cache --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path | None):
    """An exclusive lock on the corpus folder: the first process renders, the others wait
    and then read. The kernel drops the lock if its holder dies."""
    if folder is None:
        yield
        return
    try:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / "lock", "a+b")
    except (ImportError, OSError) as err:  # no POSIX locks, or an unwritable folder: render unshared
        log.debug("corpus cache lock unavailable in %s: %s", folder, err)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            remove_stale_temporaries(folder)  # a writer killed mid-write; no one else writes now
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def _read(folder: Path, spec: Spec) -> Corpus | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") != json.loads(json.dumps(asdict(spec))):
            raise ValueError("it was made for other settings")
        arrays = {}
        for name, shape in (("clean", (spec.clean, spec.clip_length)), ("noise", (spec.noises, spec.clip_length))):
            array = np.load(folder / f"{name}.npy", allow_pickle=False)
            if array.shape != shape or array.dtype != np.float32:
                raise ValueError(f"{name}.npy holds {array.dtype}{list(array.shape)}, expected float32{list(shape)}")
            if _digest(array) != meta["sha256"][name]:
                raise ValueError(f"{name}.npy does not match its checksum")
            arrays[name] = array
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("corpus cache %s is damaged or foreign (%s): rendering it again", folder, err)
        return None
    log.info("read the %s corpus from the cache %s", "training" if spec.split == TRAIN else "validation", folder)
    return Corpus(arrays["clean"], arrays["noise"])


def _write(folder: Path, spec: Spec, found: Corpus) -> None:
    try:
        for name, array in (("clean", found.clean), ("noise", found.noise)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            atomic_write(folder / f"{name}.npy", lambda f, b=buffer: f.write(b.getbuffer()))
        # meta.json last: a reader trusts the arrays only once their checksums are on disk
        meta = {"spec": asdict(spec), "sha256": {"clean": _digest(found.clean), "noise": _digest(found.noise)}}
        atomic_write(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    except Exception as err:  # noqa: BLE001 - a cache is an optimisation: never fail the run for it
        log.warning("could not cache the corpus in %s (%s); it will be rendered again next time", folder, err)
