"""Datasets read from folders on disk: paired clean/noisy files, or speech mixed with noise.

    FolderPairs: clean/ and noisy/ with matching names (the VoiceBank+DEMAND layout)
    FolderMix:   clean speech and noise clips, mixed on the fly (the DNS-challenge recipe)

Every file is read in full when a folder is first used, so a broken file is found before
the first step rather than hours into a run: with `bad_files=error` the build stops with
every problem listed; with `skip` each bad file is named in a warning and left out. Nothing
that failed the scan is ever read again. The verdicts are kept in a manifest under
`cache_dir` (manifest.py): later runs re-read only files that are new or changed.

Training examples are indexed by a draw key (`epoch * N + i`): `key % N` picks the example
and `(seed, key)` seeds every random choice, so each epoch sees new crops, and a run is
reproducible whatever the number of loader workers. Validation is one fixed crop from the
start of each file, the same for every seed, so runs of a seed sweep are scored alike.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data import audio_io, manifest
from trainer.data.audio_io import AudioError, AudioInfo
from trainer.data.checks import span
from trainer.data.keyed import Keyed
from trainer.data.mixing import mix, reverberate
from trainer.data.staged import Batch, Staged, Stages, concat, unbatch

T = TypeVar("T")

log = logging.getLogger("trainer")

POLICIES = ("error", "skip")
_TRAIN, _VALID = 0, 1
_SHOWN = 20  # problems listed in one error message; the rest are counted
Pair = tuple[AudioInfo, AudioInfo]  # (clean, noisy)
Draw = tuple[np.random.Generator, AudioInfo, int]  # (example's rng, speech file, crop start)


# ---------------------------------------------------------------- scanning and policy


def _folder(key: str, path: str | Path | None) -> Path:
    if path is None:
        raise FileNotFoundError(f"data.{key}: not set")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data.{key}: {folder} does not exist or is not a folder")
    return folder


def _listing(key: str, folder: Path) -> tuple[dict[str, Path], list[AudioError], set[str]]:
    """Audio files under `folder` by relative path without suffix (`spk1/utt3`): the name that
    pairs files across folders. Two files with one name (`a.wav`, `a.flac`) are both bad.
    Also returns every name seen, duplicated ones included."""
    paths = audio_io.list_audio(folder, recursive=True)
    if not paths:
        raise FileNotFoundError(f"data.{key}: no audio files ({', '.join(audio_io.AUDIO_SUFFIXES)}) under {folder}")
    by_name: dict[str, list[Path]] = {}
    for p in paths:
        by_name.setdefault(p.relative_to(folder).with_suffix("").as_posix(), []).append(p)
    problems = [
        AudioError(f"{p}: duplicate (same name as {', '.join(str(q) for q in group if q != p)})")
        for group in by_name.values()
        if len(group) > 1
        for p in group
    ]
    return {name: group[0] for name, group in by_name.items() if len(group) == 1}, problems, set(by_name)


def _scan(
    key: str, folder: Path, files: dict[str, Path], silence_db: float, sample_rate: int, cache_dir: str | None
) -> dict[str, AudioInfo | AudioError]:
    """The full-read verdict on every file, through the folder's manifest (manifest.py):
    only new or changed files are read again."""
    probe = functools.partial(_verdict, silence_db=silence_db, sample_rate=sample_rate)
    return manifest.scan(key, folder, files, probe, cache_dir, silence_db, sample_rate)


def _verdict(path: Path, silence_db: float, sample_rate: int) -> AudioInfo | AudioError:
    try:
        return audio_io.probe(path, silence_db, sample_rate)
    except AudioError as err:
        return err


def _enforce(policy: str, what: str, problems: list[AudioError], skipped: int, total: int, unit: str) -> None:
    """`error`: one exception listing every problem. `skip`: one warning per problem, then the count."""
    if not problems:
        return
    if policy == "error":
        lines = [str(p) for p in problems[:_SHOWN]]
        if len(problems) > _SHOWN:
            lines.append(f"... and {len(problems) - _SHOWN} more")
        raise AudioError(
            f"{len(problems)} bad files in {what} (data.bad_files=error; data.bad_files=skip leaves them out):\n  "
            + "\n  ".join(lines)
        )
    for p in problems:
        log.warning("skipped %s", p)
    log.warning("skipped %d of %d %s in %s", skipped, total, unit, what)
    if skipped == total:
        raise ValueError(f"{what}: all {total} {unit} are bad (data.bad_files=skip): nothing left to use")


def _good_files(
    key: str, path: str | Path | None, policy: str, silence_db: float, sample_rate: int, cache_dir: str | None
) -> dict[str, AudioInfo]:
    folder = _folder(key, path)
    files, problems, _ = _listing(key, folder)
    total = len(files) + len(problems)  # so far, the problems are the duplicates
    scanned = _scan(key, folder, files, silence_db, sample_rate, cache_dir)
    good = {name: r for name, r in scanned.items() if isinstance(r, AudioInfo)}
    problems += [r for r in scanned.values() if isinstance(r, AudioError)]
    _enforce(policy, f"data.{key} ({folder})", problems, total - len(good), total, "files")
    return good


def _split(
    train: dict[str, T], valid: dict[str, T] | None, fraction: float, what: str, share_one: bool = False
) -> tuple[list[T], list[T]]:
    """Training and validation items, each sorted by name: `valid` when it has a folder of
    its own, else a held-out share of `train`. With `share_one`, a pool of a single item
    (one noise clip, one room) serves both, as there is nothing to hold out."""
    if valid is not None:
        return [train[n] for n in sorted(train)], [valid[n] for n in sorted(valid)]
    if share_one and len(train) < 2:
        return list(train.values()), list(train.values())
    held = _held_out(list(train), fraction, what)
    return [train[n] for n in sorted(train) if n not in held], [train[n] for n in sorted(held)]


def _held_out(names: Sequence[str], fraction: float, what: str) -> set[str]:
    """A share of `names` for validation, chosen by a stable hash of each name: the same
    files whatever the seed, the machine, or files added later. Never empty, never all."""
    if len(names) < 2:
        raise ValueError(
            f"data.valid_fraction: {what} has {len(names)} usable item(s); "
            "need 2 to hold some out for validation, or give validation folders"
        )
    score = {n: zlib.crc32(n.encode()) / 2**32 for n in names}
    order = sorted(names, key=lambda n: (score[n], n))
    held = {n for n in names if score[n] < fraction}
    if not held:
        held = {order[0]}
    if len(held) == len(names):
        held.discard(order[-1])
    return held


def _check(sample_rate: int, segment_seconds: float, bad_files: str, valid_fraction: float) -> int:
    if bad_files not in POLICIES:
        raise ValueError(f"data.bad_files must be one of {list(POLICIES)}, got {bad_files!r}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"data.sample_rate must be a positive integer, got {sample_rate}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
    length = int(round(segment_seconds * sample_rate))
    if length < 1:
        raise ValueError(f"data.segment_seconds must give at least one sample, got {segment_seconds}")
    return length


def _start(rng: np.random.Generator, available: int, length: int) -> int:
    return int(rng.integers(0, max(available - length, 0) + 1))


def _name_seed(name: str) -> int:
    return zlib.crc32(name.encode())


# ---------------------------------------------------------------- datasets


def _tolerant(fetch, policy: str, size: int, join=lambda parts: [x for part in parts for x in part]):
    """A batch fetch that survives a file changed under a running job: with `error` the
    read's AudioError (naming the file) ends the run, from a loader worker too; with
    `skip` the file is named in a warning and the example replaced by the next key's."""

    def run(keys: list[int]):
        try:
            return fetch(keys)
        except AudioError:
            if policy == "error":
                raise
        out = []
        for key in keys:
            for attempt in range(min(size, 16)):
                try:
                    out.append(fetch([key + attempt]))
                    break
                except AudioError as err:
                    log.warning("skipped %s (data.bad_files=skip)", err)
            else:
                raise AudioError(f"16 files in a row failed to read near draw {key}: the folder changed under the run")
        return join(out)

    return run


def _tensors(**arrays: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}


# ---------------------------------------------------------------- paired folders


class FolderPairs:
    """Noisy/clean pairs from two folders with the same file names (relative path, any suffix).
    A training crop takes the same span of both files."""

    infinite = False

    def __init__(
        self,
        clean_dir: str,
        noisy_dir: str,
        valid_clean_dir: str | None = None,
        valid_noisy_dir: str | None = None,
        valid_fraction: float = 0.05,
        sample_rate: int = 16000,
        segment_seconds: float = 1.0,
        bad_files: str = "error",
        silence_db: float = -60.0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        self.length = _check(sample_rate, segment_seconds, bad_files, valid_fraction)
        self.cache_dir = cache_dir
        if (valid_clean_dir is None) != (valid_noisy_dir is None):
            raise ValueError("data.valid_clean_dir and data.valid_noisy_dir must be given together (or neither)")
        self.sample_rate, self.seed = int(sample_rate), seed
        self.bad_files, self.silence_db = bad_files, silence_db
        pairs = self._pairs("clean_dir", clean_dir, "noisy_dir", noisy_dir)
        valid = None
        if valid_clean_dir is not None:
            valid = self._pairs("valid_clean_dir", valid_clean_dir, "valid_noisy_dir", valid_noisy_dir)
        self._train, self._valid = _split(pairs, valid, valid_fraction, f"data.clean_dir ({clean_dir})")
        log.info("data: %d training pairs, %d validation pairs", len(self._train), len(self._valid))

    def _pairs(self, clean_key: str, clean_dir: str, noisy_key: str, noisy_dir: str) -> dict[str, Pair]:
        folders = _folder(clean_key, clean_dir), _folder(noisy_key, noisy_dir)
        clean, problems, names_c = _listing(clean_key, folders[0])
        noisy, more, names_n = _listing(noisy_key, folders[1])
        problems += more
        total = len(names_c | names_n)  # pairs, orphans and duplicated names included
        for files, other, folder in ((clean, noisy, folders[1]), (noisy, clean, folders[0])):
            orphans = sorted(set(files) - set(other))
            problems += [AudioError(f"{files[n]}: no partner (nothing named '{n}.*' under {folder})") for n in orphans]
        names = sorted(set(clean) & set(noisy))
        scanned_c, scanned_n = (
            _scan(k, d, {n: files[n] for n in names}, self.silence_db, self.sample_rate, self.cache_dir)
            for k, d, files in ((clean_key, folders[0], clean), (noisy_key, folders[1], noisy))
        )
        pairs = {}
        for n in names:
            c, z = scanned_c[n], scanned_n[n]
            bad = [r for r in (c, z) if isinstance(r, AudioError)]
            # "same length" up to one sample of the coarser file: rates may differ within a pair
            if not bad and abs(c.seconds - z.seconds) > 1 / min(c.sample_rate, z.sample_rate) + 1e-9:
                bad = [AudioError(f"{c.path} and {z.path}: length mismatch ({c.seconds:.4f} s vs {z.seconds:.4f} s)")]
            problems += bad
            if not bad:
                pairs[n] = (c, z)
        what = f"data.{clean_key} ({folders[0]}) and data.{noisy_key} ({folders[1]})"
        _enforce(self.bad_files, what, problems, total - len(pairs), total, "pairs")
        return pairs

    def _example(self, pair: Pair, start: int) -> dict[str, torch.Tensor]:
        clean, noisy = (audio_io.read_segment(info, self.sample_rate, start, self.length) for info in pair)
        return _tensors(noisy=noisy, clean=clean)

    def _draw(self, keys: list[int]) -> list[dict[str, torch.Tensor]]:
        out = []
        for key in keys:
            pair = self._train[key % len(self._train)]
            rng = np.random.default_rng([self.seed, _TRAIN, key])
            available = min(info.frames_at(self.sample_rate) for info in pair)
            out.append(self._example(pair, _start(rng, available, self.length)))
        return out

    def _valid_example(self, index: int) -> dict[str, torch.Tensor]:
        return self._example(self._valid[index], 0)

    def train(self) -> Dataset:
        return Keyed.draws(_tolerant(self._draw, self.bad_files, len(self._train)), len(self._train))

    def valid(self) -> Dataset:
        return Keyed.fixed_set(lambda keys: [self._valid_example(k) for k in keys], len(self._valid))


# ---------------------------------------------------------------- speech + noise (trainer/data/mixing.py)


class FolderMix:
    """Clean speech from one folder mixed with noise from another at a random SNR and level.
    Without `noise_dir`, noisy is the (level-normalised) clean speech: for tasks that only
    need clean audio, such as bandwidth extension."""

    infinite = False

    def __init__(
        self,
        speech_dir: str,
        noise_dir: str | None = None,
        valid_speech_dir: str | None = None,
        valid_noise_dir: str | None = None,
        valid_fraction: float = 0.05,
        snr_db: Sequence[float] = (-5.0, 15.0),
        level_db: Sequence[float] = (-35.0, -15.0),
        sample_rate: int = 16000,
        segment_seconds: float = 1.0,
        bad_files: str = "error",
        silence_db: float = -60.0,
        seed: int = 0,
        cache_dir: str | None = None,
        rir_dir: str | None = None,
        valid_rir_dir: str | None = None,
        rir_prob: float = 0.5,
        rir_target: str = "early",
        early_ms: float = 50.0,
    ):
        self.length = _check(sample_rate, segment_seconds, bad_files, valid_fraction)
        if rir_target not in ("early", "direct"):
            raise ValueError(f"data.rir_target must be 'early' or 'direct', got {rir_target!r}")
        if not 0 <= rir_prob <= 1 or early_ms < 0:
            raise ValueError(f"data.rir_prob must be in [0, 1] and data.early_ms >= 0, got {rir_prob}, {early_ms}")
        if rir_dir is None and valid_rir_dir is not None:
            raise ValueError("data.valid_rir_dir is set but data.rir_dir is not")
        self.rir_prob, self.bad_files = rir_prob, bad_files
        self.keep = int(round(early_ms * sample_rate / 1000)) if rir_target == "early" else 0
        self.snr_db, self.level_db = span("data.snr_db", snr_db), span("data.level_db", level_db)
        if noise_dir is None and valid_noise_dir is not None:
            raise ValueError("data.valid_noise_dir is set but data.noise_dir is not")
        self.sample_rate, self.seed = int(sample_rate), seed

        def pool(key: str, folder: str | None, valid_folder: str | None, ingredient: bool = True):
            """Training and validation files of one folder; an ingredient (noise, rooms) is
            optional (none: empty) and a single file of it serves both."""
            if folder is None and ingredient:
                return [], []
            found = _good_files(key, folder, bad_files, silence_db, sample_rate, cache_dir)
            valid = None
            if valid_folder is not None:
                valid = _good_files(f"valid_{key}", valid_folder, bad_files, silence_db, sample_rate, cache_dir)
            return _split(found, valid, valid_fraction, f"data.{key} ({folder})", share_one=ingredient)

        self._train, self._valid = pool("speech_dir", speech_dir, valid_speech_dir, ingredient=False)
        self._train_noise, self._valid_noise = pool("noise_dir", noise_dir, valid_noise_dir)
        self._train_rir, self._valid_rir = pool("rir_dir", rir_dir, valid_rir_dir)
        log.info(
            "data: %d training and %d validation speech files, %d/%d noise files, %d/%d room impulse responses",
            len(self._train),
            len(self._valid),
            len(self._train_noise),
            len(self._valid_noise),
            len(self._train_rir),
            len(self._valid_rir),
        )

    def _crop(self, info: AudioInfo, start: int) -> np.ndarray:
        return audio_io.read_segment(info, self.sample_rate, start, self.length)

    def _noise(self, rng: np.random.Generator, pool: list[AudioInfo]) -> np.ndarray:
        info = pool[int(rng.integers(len(pool)))]
        available = info.frames_at(self.sample_rate)
        if available >= self.length:
            return self._crop(info, _start(rng, available, self.length))
        clip = audio_io.read_segment(info, self.sample_rate, 0, available)  # short clip: loop it
        return np.roll(np.resize(clip, self.length), int(rng.integers(available)))

    def _reverb(self, clean: np.ndarray, draws: list[Draw], pool: list[AudioInfo]) -> tuple[np.ndarray, np.ndarray]:
        """(speech as heard, training target): a share `rir_prob` of the examples is
        convolved with a room impulse response; their target keeps the direct path (and
        `early_ms` of early reflections with `rir_target=early`); the others stay dry."""
        heard, target = clean.copy(), clean.copy()
        for i, (rng, _, _) in enumerate(draws):
            if rng.uniform() < self.rir_prob:
                info = pool[int(rng.integers(len(pool)))]
                rir = audio_io.read_segment(info, self.sample_rate, 0, info.frames_at(self.sample_rate))
                heard[i], target[i] = reverberate(clean[i], rir, self.keep)
        return heard, target

    def _ingredients(self, draws: list[Draw], noise_pool: list[AudioInfo], rir_pool: list[AudioInfo]) -> Batch:
        """The loader's stage (trainer/data/staged.py): per-example reads and draws."""
        clean = np.stack([self._crop(info, start) for _, info, start in draws])
        noise = np.stack([self._noise(rng, noise_pool) for rng, _, _ in draws]) if noise_pool else None
        snr = np.array([rng.uniform(*self.snr_db) for rng, _, _ in draws], np.float32)
        level = np.array([rng.uniform(*self.level_db) for rng, _, _ in draws], np.float32)
        out = {"snr_db": snr, "level_db": level}
        if rir_pool:  # drawn last: without RIRs every example is what it was before they existed
            clean, out["target"] = self._reverb(clean, draws, rir_pool)
        out["speech"] = clean
        if noise is not None:
            out["noise"] = noise
        return _tensors(**out)

    @staticmethod
    def finish(batch: Batch) -> Batch:
        """The batched stage, on the batch's device: one vectorised mix for the batch."""
        noisy, clean = mix(batch["speech"], batch.get("noise"), batch["snr_db"], batch["level_db"], batch.get("target"))
        return {"noisy": noisy, "clean": clean}

    def _draw(self, keys: list[int]) -> Batch:
        draws = []
        for key in keys:
            info = self._train[key % len(self._train)]
            rng = np.random.default_rng([self.seed, _TRAIN, key])
            draws.append((rng, info, _start(rng, info.frames_at(self.sample_rate), self.length)))
        return self._ingredients(draws, self._train_noise, self._train_rir)

    def _valid_example(self, index: int) -> dict[str, torch.Tensor]:
        info = self._valid[index]
        rng = np.random.default_rng([_VALID, _name_seed(info.path.name)])  # fixed by the file, not the seed
        return unbatch(self.finish(self._ingredients([(rng, info, 0)], self._valid_noise, self._valid_rir)))[0]

    def train_stages(self) -> Stages:
        draw = _tolerant(self._draw, self.bad_files, len(self._train), concat)
        return Stages(draw, self.finish, len(self._train))

    def train(self) -> Dataset:
        return Staged(self.train_stages())

    def valid(self) -> Dataset:
        return Keyed.fixed_set(lambda keys: [self._valid_example(k) for k in keys], len(self._valid))
