"""Reading audio files for the trainer: soundfile (libsndfile) for WAV/FLAC/OGG, mono,
resampled with torchaudio, and refused with a message naming the file when broken.

Every refusal reads `<path>: <kind> (<detail>)`, with kind one of: unreadable, empty,
truncated, non-finite, silent. Folder datasets add their own kinds (no partner, length
mismatch, duplicate) in the same shape, so a log can be grepped by kind.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

# Extra input read on each side of a resampled crop, in output samples: the resampling
# filter (torchaudio's default, 6 zero crossings) then sees real signal at the crop's edges
# instead of zeros, so a crop equals the same span of the fully resampled file.
_RESAMPLE_MARGIN = 32


class AudioError(ValueError):
    """A file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    """What a full scan of a good file found; enough to read crops without reopening headers."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    peak_db: float

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def frames_at(self, sample_rate: int) -> int:
        """Length after resampling to `sample_rate` (what `read` returns: torchaudio rounds up)."""
        return -(-self.frames * sample_rate // self.sample_rate)


def _wav_data_problem(path: Path) -> AudioError | None:
    """libsndfile trusts the file size over a WAV header's `data` chunk size and silently
    returns fewer frames, so a WAV cut short mid-copy reads as a shorter, "good" file.
    Compare the two ourselves. Non-RIFF files (RF64, garbage) are left to libsndfile."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                present = size - offset - 8
                if length in (0, 0xFFFFFFFF) or length <= present:  # 0/-1: streamed, length not claimed
                    return None
                if present == 0:
                    return AudioError(f"{path}: unreadable (header only: it claims {length} data bytes, none present)")
                return AudioError(f"{path}: truncated (header claims {length} data bytes, {present} present)")
            offset += 8 + length + (length & 1)  # chunks are word-aligned
    return None


# A damaged header can claim billions of frames or thousands of channels, and libsndfile
# allocates what the header claims before it finds out (found by fuzzing: a 16 KB WAV
# asked for 24 GB). Decoded float32 never exceeds this many times the file's size (PCM: 2-4x,
# FLAC of near-silence: tens), with a floor for tiny files.
_MAX_EXPANSION, _MAX_DECODED_FLOOR, _MAX_CHANNELS = 1000, 64 * 2**20, 64


def _ratio(path: Path, rate: int, target: int) -> tuple[int, int]:
    """The reduced resampling ratio; refused when its terms are so large that the sinc
    kernel (one row per output phase) would need gigabytes: a damaged or exotic rate such
    as 16001 Hz, never a standard one (44.1 -> 16 kHz is 441/160)."""
    g = math.gcd(int(rate), int(target))
    up, down = int(rate) // g, int(target) // g
    if max(up, down) > 4096:
        raise AudioError(f"{path}: unreadable (sample rate {rate} Hz: no practical resampling to {target} Hz)")
    return up, down


def _plausible(path: Path, info) -> None:
    if not 0 < info.channels <= _MAX_CHANNELS or not 1000 <= info.samplerate <= 768000:
        raise AudioError(f"{path}: unreadable (implausible header: {info.channels} channels at {info.samplerate} Hz)")
    decoded = info.frames * info.channels * 4
    if decoded > max(_MAX_DECODED_FLOOR, _MAX_EXPANSION * path.stat().st_size):
        raise AudioError(
            f"{path}: unreadable (header claims {info.frames} frames x {info.channels} channels, "
            "more than the file holds)"
        )


def _load(path: Path) -> tuple[np.ndarray, int]:
    """All frames as float32 (frames, channels) and the file's rate; AudioError when unusable."""
    try:
        info = sf.info(str(path))
        _plausible(path, info)
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as err:  # libsndfile reports garbage, headers only, unknown formats
        raise AudioError(f"{path}: unreadable ({str(err).strip() or type(err).__name__})") from None
    if path.suffix.lower() == ".wav" and (problem := _wav_data_problem(path)) is not None:
        raise problem
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty (0 frames)")
    if info.frames > 0 and data.shape[0] != info.frames:
        raise AudioError(f"{path}: truncated ({data.shape[0]} frames read, header says {info.frames})")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: non-finite (contains NaN or Inf samples)")
    return data, sr


def read(path: Path, sample_rate: int) -> torch.Tensor:
    """Samples of `path` as float32 (time,), down-mixed to mono and resampled to `sample_rate`."""
    data, sr = _load(Path(path))
    audio = torch.from_numpy(data.mean(axis=1))
    if sr != sample_rate:
        audio = AF.resample(audio, *_ratio(path, sr, sample_rate))
    return audio.contiguous()


def probe(path: Path, silence_db: float | None = None, sample_rate: int | None = None) -> AudioInfo:
    """Read the whole file once and check everything `read` checks, plus silence: a file
    whose mono peak is under `silence_db` dBFS teaches nothing and breaks SNR arithmetic;
    and, given the rate it will be used at, that it can be resampled to it."""
    path = Path(path)
    data, sr = _load(path)
    if sample_rate is not None:
        _ratio(path, sr, sample_rate)
    peak = float(np.abs(data.mean(axis=1)).max())
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if silence_db is not None and peak_db < silence_db:
        raise AudioError(f"{path}: silent (peak {peak_db:.1f} dBFS, under {silence_db:g} dBFS)")
    return AudioInfo(path, sr, data.shape[0], data.shape[1], peak_db)


@functools.lru_cache(maxsize=16)
def _resampler(up: int, down: int) -> T.Resample:
    """`AF.resample`'s filter, computed once per ratio (a crop is read per example; the
    kernel cost as much as the convolution)."""
    return T.Resample(up, down)


def read_segment(info: AudioInfo, sample_rate: int, start: int, length: int) -> np.ndarray:
    """`length` samples at `sample_rate` from sample `start` (also at `sample_rate`), mono
    float32, zero-padded past the end. Reads only the frames needed from disk."""
    rate = info.sample_rate
    if rate == sample_rate:
        lo, skip, count = start, 0, length
    else:
        # Start the read on a frame where both rates' sample grids meet, so the resampled
        # crop lands exactly on the output grid of a whole-file resample.
        step = rate // math.gcd(rate, sample_rate)
        first = max(0, start * rate // sample_rate - _RESAMPLE_MARGIN * max(1, rate // sample_rate))
        lo = first // step * step
        skip = start - lo * sample_rate // rate
        count = -(-(start + length + _RESAMPLE_MARGIN) * rate // sample_rate) - lo
    lo = min(lo, info.frames)
    wanted = min(count, info.frames - lo)
    try:
        data, _ = sf.read(str(info.path), start=lo, frames=wanted, dtype="float32", always_2d=True)
    except Exception as err:  # deleted, replaced or damaged since the scan
        raise AudioError(f"{info.path}: unreadable (changed since it was scanned: {str(err).strip()})") from None
    if data.shape[0] < wanted:
        raise AudioError(f"{info.path}: truncated (changed since it was scanned: {data.shape[0]} of {wanted} frames)")
    if not np.isfinite(data).all():  # the file changed since it was scanned
        raise AudioError(f"{info.path}: non-finite (contains NaN or Inf samples)")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if rate != sample_rate and len(mono):
        with torch.no_grad():
            mono = _resampler(*_ratio(info.path, rate, sample_rate))(
                torch.from_numpy(np.ascontiguousarray(mono))
            ).numpy()
    out = np.zeros(length, np.float32)
    piece = mono[skip : skip + length]
    out[: len(piece)] = piece
    return out


def write(path: Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    sf.write(str(path), data.astype(np.float32), sample_rate, subtype="FLOAT" if str(path).endswith(".wav") else None)


def list_audio(folder: Path, recursive: bool = False) -> list[Path]:
    """Audio files directly in `folder` (or anywhere under it with `recursive`), sorted."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
