"""What this machine's kernels can run in reduced precision, probed once per process.

PyTorch runs `nn.LSTM` on the CPU through oneDNN. oneDNN has a bfloat16 LSTM only where the
CPU has native bf16 (AVX-512 BF16, AMX); on an AVX2-only CPU (many laptops and cloud
machines) the same call under bf16 autocast raises "could not create a primitive
descriptor for the LSTM forward propagation primitive". Neither the CPU flags nor
`torch.backends` say in advance which kernels oneDNN will pick (it also honours
`ONEDNN_MAX_CPU_ISA`), so the only reliable test is to ask: one tiny LSTM, forward and
backward and an inference forward, under bf16 autocast, compared with float32. An error
or a result off by more than bf16's rounding both mean "run the recurrence in float32".

`TRAINER_BF16_LSTM=native|float32` forces the answer (tests, or a machine where the probe
is wrong); the verdict is cached: `reset()` after changing it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

ENV = "TRAINER_BF16_LSTM"
# bf16 keeps 8 bits of mantissa (~0.4% per rounding); a few steps of a small LSTM stay well
# within this. A wrong kernel (garbage, zeros, a transposed weight) is far outside it.
_TOLERANCE = 0.05


@dataclass(frozen=True)
class Verdict:
    native: bool  # oneDNN runs the LSTM in bf16 here
    reason: str  # one line for the log and summary.json


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _probe() -> Verdict:
    gen = torch.Generator().manual_seed(0)
    lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.empty_like(p).uniform_(-0.25, 0.25, generator=gen))
    x = torch.randn(3, 12, 8, generator=gen)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            reference_x = x.clone().requires_grad_()
            reference, _ = lstm(reference_x)
            reference.sum().backward()
            low_x = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low, _ = lstm(low_x)
                with torch.no_grad():  # inference uses another primitive than training
                    inference, _ = lstm(x)
            low.float().sum().backward()
    except RuntimeError as err:
        log.debug("bf16 LSTM probe: %s", err)
        return Verdict(False, "bf16 LSTM not supported by this CPU's oneDNN")
    errors = {
        "output": _relative_error(low, reference),
        "inference output": _relative_error(inference, reference),
        "input gradient": _relative_error(low_x.grad, reference_x.grad),
    }
    worst = max(errors, key=errors.get)
    if not all(torch.isfinite(t).all() for t in (low, inference, low_x.grad)) or errors[worst] > _TOLERANCE:
        return Verdict(
            False, f"bf16 LSTM on this CPU gives wrong results ({worst} off by {errors[worst]:.1%} from float32)"
        )
    return Verdict(True, "bf16 LSTM runs natively on this CPU (oneDNN)")


_VERDICT: dict[str, Verdict] = {}  # this process's verdict, once probed


def cpu_bf16_lstm() -> Verdict:
    """Whether `nn.LSTM` can run in bf16 on this CPU; probed once per process, logged once."""
    verdict = _VERDICT.get("cpu")
    if verdict is None:
        if torch.compiler.is_compiling():
            # first asked inside a graph being traced: never trace the probe; float32 is always
            # safe (the trainer probes before it compiles, so this is a bare model's first call)
            return Verdict(False, "bf16 LSTM not probed yet (first call under torch.compile)")
        verdict = _VERDICT["cpu"] = _decide()
    return verdict


def reset() -> None:
    """Forget the verdict (after changing `TRAINER_BF16_LSTM`); the next call probes again."""
    _VERDICT.clear()


def _decide() -> Verdict:
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in ("native", "float32"):
            raise ValueError(f"{ENV}={forced!r}: expected 'native' or 'float32'")
        verdict = Verdict(forced == "native", f"bf16 LSTM path forced by {ENV}={forced}")
    else:
        state = torch.random.get_rng_state()  # nn.LSTM's own init draws from it: leave the caller's stream as it was
        try:
            verdict = _probe()
        finally:
            torch.random.set_rng_state(state)
    if verdict.native:
        log.info("%s", verdict.reason)
    else:
        log.warning("%s: recurrence in float32", verdict.reason)
    return verdict
