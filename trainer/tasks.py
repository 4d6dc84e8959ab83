"""Tasks decide what a batch means: which tensors are input and target, which metrics are
computed on validation, and which of them is monitored (best checkpoint, early stopping,
plateau schedule, the value returned to a sweeper).

Every task also reports two checks from the field on each validation: `clip_frac` (share
of output samples at or beyond the clipping threshold) and `hf_excess_db` (output energy
above a cutoff relative to the target's: aliasing and spurious harmonics show up here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchaudio.functional as AF

from losses.functional import below
from trainer import metrics as M

# Slow metrics: name -> function(reference, degraded, sample_rate) on one example, in numpy
# land (the `pesq` and `pystoi` packages). Run on a subset of validation, at a cadence.
SLOW_METRICS = {
    "pesq_wb": lambda ref, out, sr: M.pesq(ref, out, sr, "wb"),
    "pesq_nb": lambda ref, out, sr: M.pesq(ref, out, sr, "nb"),
    "stoi": lambda ref, out, sr: M.stoi(ref, out, sr),
    "estoi": lambda ref, out, sr: M.stoi(ref, out, sr, extended=True),
}


class Task:
    """What every task provides to the engine. `pair` splits a batch into the model's input
    and the loss's target; at validation `predict` turns the model's output into what the
    metrics score, `metrics` scores it per example, `summarise` derives ratio metrics
    from the means, and `examples` picks what TensorBoard shows."""

    slow: list[str] = []

    def __init__(self, monitor: str, mode: str):
        if mode not in ("max", "min"):
            raise ValueError(f"task.mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode

    def pair(self, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        raise NotImplementedError

    def predict(self, model, inputs, output) -> Any:
        return output.float()

    def loss_view(self, output, target, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        """What the training loss compares: the output and the target as they are."""
        return output, target

    def metrics(self, prediction, inputs, target) -> dict[str, torch.Tensor]:
        """Per-example validation metrics, each shaped (batch,)."""
        raise NotImplementedError

    def summarise(self, means: dict[str, float]) -> dict[str, float]:
        return means

    def examples(self, inputs, prediction, target, count: int) -> list[dict[str, Any]]:
        """The first `count` examples of a batch, on the host, for TensorBoard."""
        return []

    def worst(self) -> float:
        """The value a failed or diverged run reports: never NaN, always the worst."""
        return float("-inf") if self.mode == "max" else float("inf")

    def improved(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        if best is None:
            return True
        return value > best + min_delta if self.mode == "max" else value < best - min_delta


class AudioTask(Task):
    """Audio in, audio out (enhancement, super-resolution). Besides the task's own metrics
    it reports `clip_frac` and `hf_excess_db`, and the configured slow metrics."""

    def __init__(
        self,
        monitor: str,
        mode: str,
        sample_rate: int = 16000,
        clip_threshold: float = 0.99,
        hf_cutoff_hz: float | None = None,
        slow_metrics: Sequence[str] = (),
    ):
        super().__init__(monitor, mode)
        unknown = set(slow_metrics) - set(SLOW_METRICS)
        if unknown:
            raise ValueError(f"task.slow_metrics: unknown {sorted(unknown)}; known: {sorted(SLOW_METRICS)}")
        if monitor in SLOW_METRICS:
            raise ValueError(
                f"task.monitor={monitor!r} is a slow metric (computed on a subset only); monitor a per-epoch metric"
            )
        self.sample_rate = sample_rate
        self.clip_threshold = clip_threshold
        self.hf_cutoff_hz = hf_cutoff_hz if hf_cutoff_hz is not None else 0.75 * sample_rate / 2
        if not 0 < self.hf_cutoff_hz < sample_rate / 2:
            raise ValueError(f"task.hf_cutoff_hz must lie in (0, {sample_rate / 2}), got {self.hf_cutoff_hz}")
        self.slow = list(slow_metrics)

    # Task metrics that compare the output with the input, or describe the input alone: a
    # per-file score (trainer.evaluate) has one column for each, the others an _in and an _out.
    input_relative: tuple[str, ...] = ()

    def task_metrics(self, output: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss_view(self, output, target, batch):
        """Output and target below each row's `loss_cutoff_hz` where the batch carries one:
        an input band-limited by augmentation (`bandlimit_target: masked`), so the loss does
        not ask for the band the input lost."""
        if "loss_cutoff_hz" not in batch:
            return output, target
        cutoff = batch["loss_cutoff_hz"]
        return below(output, cutoff, self.sample_rate), below(target, cutoff, self.sample_rate)

    def metrics(self, prediction, inputs, target):
        out = self.task_metrics(prediction, inputs, target)
        out["clip_frac"] = M.clipping_fraction(prediction, self.clip_threshold)
        out["hf_excess_db"] = M.high_band_excess_db(prediction, target, self.sample_rate, self.hf_cutoff_hz)
        return out

    def slow_metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
        """The configured slow metrics for each example (NaN where one cannot score it)."""
        out, ref = output.float().cpu(), target.float().cpu()
        return {name: [SLOW_METRICS[name](r, o, self.sample_rate) for r, o in zip(ref, out)] for name in self.slow}

    def examples(self, inputs, prediction, target, count):
        return [
            {"input": inputs[i].float().cpu(), "output": prediction[i].cpu(), "target": target[i].float().cpu()}
            for i in range(min(count, len(prediction)))
        ]


class Denoise(AudioTask):
    """Noisy mixture in, clean speech out; SI-SDR and its improvement over the input."""

    input_relative = ("si_sdri",)

    def __init__(self, monitor: str = "si_sdr", mode: str = "max", **kwargs):
        super().__init__(monitor, mode, **kwargs)

    def pair(self, batch):
        return batch["noisy"], batch["clean"]

    def task_metrics(self, output, inputs, target):
        out = M.si_sdr(output, target)
        return {"si_sdr": out, "si_sdri": out - M.si_sdr(inputs, target)}


_KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


class SuperResolution(AudioTask):
    """Band-limited speech in, full-band speech out.

    The input is made here, on the device, from the clean signal of any dataset: resampled
    down to `input_rate` and back up to `sample_rate` (torchaudio's windowed-sinc
    resampler with a Kaiser window), so everything above `input_rate / 2` is gone and the model must regenerate
    it. Metrics: log-spectral distance over the full band and the regenerated band (LSD,
    lower is better), SI-SDR, and LSD of the input itself for reference.
    """

    input_relative = ("lsd_input",)

    def __init__(
        self,
        input_rate: int = 8000,
        monitor: str = "lsd",
        mode: str = "min",
        sample_rate: int = 16000,
        lsd_n_fft: int = 2048,
        lsd_hop: int = 512,
        **kwargs,
    ):
        if not 0 < input_rate < sample_rate:
            raise ValueError(f"task.input_rate must be below the data's sample rate {sample_rate}, got {input_rate}")
        kwargs.setdefault("hf_cutoff_hz", input_rate / 2)
        super().__init__(monitor, mode, sample_rate=sample_rate, **kwargs)
        self.input_rate, self.n_fft, self.hop = input_rate, lsd_n_fft, lsd_hop
        gcd = math.gcd(sample_rate, input_rate)
        self._down, self._up = sample_rate // gcd, input_rate // gcd

    def band_limit(self, x: torch.Tensor) -> torch.Tensor:
        # librosa's "kaiser_best" filter: torchaudio's default (a short Hann sinc) leaks
        # ~-30 dB above the edge, which a model would learn to amplify instead of generate.
        low = AF.resample(x, self._down, self._up, **_KAISER_BEST)
        return AF.resample(low, self._up, self._down, **_KAISER_BEST)[..., : x.shape[-1]]

    def pair(self, batch):
        clean = batch["clean"]
        return self.band_limit(clean), clean

    def task_metrics(self, output, inputs, target):
        sr, n_fft, hop, edge = self.sample_rate, self.n_fft, self.hop, self.input_rate / 2
        return {
            "lsd": M.lsd(output, target, sr, n_fft, hop),
            "lsd_high": M.lsd(output, target, sr, n_fft, hop, low_hz=edge),
            "lsd_input": M.lsd(inputs, target, sr, n_fft, hop),
            "si_sdr": M.si_sdr(output, target),
        }


class TokenRecognition(Task):
    """Audio in, a token sequence out (the transducer task). The model's forward pass gives
    the joint lattice for the loss; validation decodes greedily (`model.decode`) and scores
    token error rate `ter` (edit distance over reference tokens, pooled over the set),
    sentence error rate `ser`, and the mean hypothesis/reference length ratio `len_ratio`.
    """

    def __init__(
        self,
        monitor: str = "ter",
        mode: str = "min",
        sample_rate: int = 16000,
        alphabet: str = "abcdefghijklmnopqrstuvwxyz",
    ):
        super().__init__(monitor, mode)
        self.sample_rate, self.alphabet = sample_rate, alphabet

    def pair(self, batch):
        target = {"tokens": batch["tokens"], "token_lengths": batch["token_lengths"]}
        return {"audio": batch["audio"], "audio_lengths": batch["audio_lengths"], **target}, target

    def predict(self, model, inputs, output) -> list[list[int]]:
        return model.decode(output)

    @staticmethod
    def references(target) -> list[list[int]]:
        return [row[:n] for row, n in zip(target["tokens"].tolist(), target["token_lengths"].tolist())]

    def metrics(self, prediction, inputs, target):
        refs = self.references(target)
        errors = torch.tensor([float(AF.edit_distance(r, h)) for r, h in zip(refs, prediction)])
        lengths = torch.tensor([float(len(r)) for r in refs])
        hyp_lengths = torch.tensor([float(len(h)) for h in prediction])
        return {"token_errors": errors, "ref_tokens": lengths, "ser": (errors > 0).float(), "hyp_tokens": hyp_lengths}

    def summarise(self, means):
        # pooled over the set (errors / reference tokens), not a mean of per-utterance rates
        means["ter"] = means["token_errors"] / max(means["ref_tokens"], 1e-12)
        means["len_ratio"] = means.pop("hyp_tokens") / max(means["ref_tokens"], 1e-12)
        return means

    def text(self, tokens: list[int]) -> str:
        return "".join(self.alphabet[k - 1] if 0 < k <= len(self.alphabet) else f"<{k}>" for k in tokens)

    def examples(self, inputs, prediction, target, count):
        refs = self.references(target)
        return [
            {
                "input": inputs["audio"][i, : int(inputs["audio_lengths"][i])].float().cpu(),
                "text": f"ref: {self.text(refs[i])}  \nhyp: {self.text(prediction[i])}",
            }
            for i in range(min(count, len(refs)))
        ]
