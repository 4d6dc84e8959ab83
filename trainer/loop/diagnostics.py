"""Gradient diagnostics: which loss term drives learning, where gradients vanish or explode.

The loop asks `GradientDiagnostics.probe(step)` for a `Probe` on the steps where something
is due (the component decides its own cadence) and gets None otherwise, so ordinary steps
pay nothing. On a probed step `train_step` hands the probe:

* the loss terms before backward (`terms`): each weighted term's own gradient on the
  shared parameters via `torch.autograd.grad` (the graph is kept for the real backward),
  their norms, pairwise cosine similarities, and each term's share of the total gradient
  (its projection on the total, g_i . g / |g|^2: the shares sum to 1, a negative share is
  a term pulling against the rest);
* the true (unscaled, unclipped) gradients (`gradients`): the norm per layer group, and
  a snapshot of the weights;
* the updated weights (`updated`): update-to-weight ratio |dW| / |W| per group, weight
  norms, and at a lower cadence weight and gradient histograms.

Alerts are log lines: a group whose gradient is exactly zero at `zero_checks` consecutive
probes, a global norm far above its running median, and clipping on most steps of a log
window. The per-step global norms reach the host only at log cadence (`check_window`).
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections import deque
from collections.abc import Mapping

import torch
from torch import nn

log = logging.getLogger("trainer")


def layer_groups(model: nn.Module, depth: int) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters grouped by the first `depth` parts of their module path
    (`rnn.lstm.weight_ih_l0` -> `rnn.lstm` at depth 2); a top-level parameter is its own group."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            parts = name.split(".")[:-1] or [name]
            groups.setdefault(".".join(parts[:depth]), []).append(param)
    return groups


def _norm(tensors) -> torch.Tensor:
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.float().reshape(-1) for g in grads])


def term_contributions(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], params: list[nn.Parameter], scale: float = 1.0
) -> dict[str, float]:
    """Gradient norm of each weighted term alone, pairwise cosines, and shares of the total.

    `scale` is the fp16 loss scale: gradients are taken of the scaled term (no underflow)
    and divided back. Parameters a term does not reach count as zero gradient.
    """
    flat: dict[str, torch.Tensor] = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(
            term * (weights.get(name, 1.0) * scale), params, retain_graph=True, allow_unused=True
        )
        flat[name] = _flat(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)) / scale
    total = sum(flat.values())
    total_sq = total.dot(total).clamp_min(1e-30)
    out: dict[str, float] = {}
    for name, g in flat.items():
        out[f"grad_terms/norm/{name}"] = g.norm().item()
        out[f"grad_terms/share/{name}"] = (g.dot(total) / total_sq).item()
    for a, b in itertools.combinations(flat, 2):
        denom = (flat[a].norm() * flat[b].norm()).clamp_min(1e-30)
        out[f"grad_terms/cosine/{a}__{b}"] = (flat[a].dot(flat[b]) / denom).item()
    return out


class Probe:
    """What one probed step measures; built by `GradientDiagnostics.probe`."""

    def __init__(self, owner: GradientDiagnostics, step: int, terms: bool, layers: bool, histograms: bool):
        self.owner, self.step = owner, step
        self.do_terms, self.do_layers, self.do_histograms = terms, layers, histograms
        self.scalars: dict[str, float] = {}
        self.hist: dict[str, torch.Tensor] = {}
        self._before: dict[str, list[torch.Tensor]] = {}

    def terms(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], scale: float = 1.0) -> None:
        if self.do_terms and len(terms) > 1:  # one term is the whole gradient: nothing to compare
            params = [p for ps in self.owner.groups.values() for p in ps]
            self.scalars.update(term_contributions(terms, weights, params, scale))

    def gradients(self) -> None:
        """Called with the true gradients (unscaled, before clipping), before the update."""
        if not (self.do_layers or self.do_histograms):
            return
        for name, params in self.owner.groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if self.do_layers:
                norm = _norm(grads).item()
                self.scalars[f"grad_layers/{name}"] = norm
                self.owner.count_zero(name, norm, self.step)
            if self.do_histograms and grads:
                self.hist[f"grad_hist/{name}"] = _flat(grads).cpu()
            if self.do_layers:
                self._before[name] = [p.detach().clone() for p in params]

    def updated(self) -> None:
        """Called after the optimizer step."""
        for name, params in self.owner.groups.items():
            if self.do_layers:
                weight = _norm(p.detach() for p in params)
                delta = _norm(p.detach() - b for p, b in zip(params, self._before[name]))
                self.scalars[f"update_ratio/{name}"] = (delta / weight.clamp_min(1e-12)).item()
                self.scalars[f"weight_norm/{name}"] = weight.item()
            if self.do_histograms:
                self.hist[f"weight_hist/{name}"] = _flat(p.detach() for p in params).cpu()
        self._before.clear()


class GradientDiagnostics:
    def __init__(self, cfg, model: nn.Module):
        self.cfg = cfg
        self.groups = layer_groups(model, cfg.depth)
        self.zero_counts: dict[str, int] = {}
        self.norms: deque[float] = deque(maxlen=cfg.spike_window)
        self.alerts: list[str] = []
        self._clip_alerted = -(10**9)

    def probe(self, step: int) -> Probe | None:
        """A probe when something is due at optimizer step `step` (1-based), else None."""

        def due(every: int) -> bool:
            return every > 0 and step % every == 0

        c = self.cfg
        terms, layers, hist = due(c.terms_every), due(c.layers_every), due(c.histograms_every)
        return Probe(self, step, terms, layers, hist) if (terms or layers or hist) else None

    def alert(self, message: str) -> None:
        self.alerts.append(message)
        log.warning("gradient alert: %s", message)

    def count_zero(self, name: str, norm: float, step: int) -> None:
        self.zero_counts[name] = self.zero_counts.get(name, 0) + 1 if norm == 0.0 else 0
        if self.cfg.alerts and self.zero_counts[name] == self.cfg.zero_checks:
            self.alert(
                f"layer {name!r} has had a zero gradient at {self.cfg.zero_checks} consecutive checks "
                f"(every {self.cfg.layers_every} steps, up to step {step}): frozen, dead or disconnected from the loss?"
            )

    def check_window(self, norms: list[float], clip: float | None, step: int) -> None:
        """Global gradient norms of the steps since the last log point (host floats); the
        last one is step `step`. Non-finite norms (fp16 overflow) are the scaler's business."""
        if not self.cfg.alerts or not norms:
            return
        c, first = self.cfg, step - len(norms) + 1
        for i, norm in enumerate(norms):
            if not math.isfinite(norm):
                continue
            if len(self.norms) >= c.spike_min_history:
                median = statistics.median(self.norms)
                if median > 0 and norm > c.spike_factor * median:
                    self.alert(
                        f"global gradient norm {norm:.4g} at step {first + i} is {norm / median:.1f}x "
                        f"its running median {median:.4g}"
                    )
            self.norms.append(norm)
        # Clipping is judged after the first steps only: a fresh initialisation's gradients are
        # far larger at first (the default job's norm is ~50x its later median at step 10)
        # and clipping them is the clip's job, not a sign of a bad setting.
        judged = [n for i, n in enumerate(norms) if first + i > c.clip_alert_after]
        if clip is not None and judged:
            clipped = sum(n > clip for n in judged) / len(judged)
            # once per spike_window steps: saturation lasts, one line says it
            if clipped > c.clip_alert_fraction and step - self._clip_alerted >= c.spike_window:
                self._clip_alerted = step
                since = max(first, c.clip_alert_after + 1)
                self.alert(
                    f"gradient clipped on {clipped:.0%} of steps {since}-{step} (trainer.grad_clip={clip}): "
                    "the clip sets the step size; raise it or lower the learning rate"
                )
