"""Reading audio files for the trainer: soundfile (libsndfile) for WAV/FLAC/OGG, mono,
resampled with torchaudio, and refused with a message naming the file when broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioError(ValueError):
    """A file that cannot be used; the message names the file and the problem."""


def read(path: Path, sample_rate: int) -> torch.Tensor:
    """Samples of `path` as float32 (time,), down-mixed to mono and resampled to `sample_rate`."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile reports garbage, headers only, unknown formats
        raise AudioError(f"{path}: unreadable audio ({str(err).strip() or type(err).__name__})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty (0 frames)")
    if info.frames > 0 and data.shape[0] != info.frames:
        raise AudioError(f"{path}: truncated ({data.shape[0]} frames read, header says {info.frames})")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    audio = torch.from_numpy(data.mean(axis=1))
    if sr != sample_rate:
        audio = AF.resample(audio, sr, sample_rate)
    return audio.contiguous()


def write(path: Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    sf.write(str(path), data.astype(np.float32), sample_rate, subtype="FLOAT" if str(path).endswith(".wav") else None)


def list_audio(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
