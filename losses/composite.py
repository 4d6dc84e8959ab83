"""Weighted sum of named loss terms."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class Composite(nn.Module):
    """`total = sum(weights[name] * terms[name](estimate, target))`.

    Returns the total and every unweighted term, so each is logged under its own name.
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None):
        super().__init__()
        terms = dict(terms)
        weights = {name: 1.0 for name in terms} if weights is None else {k: float(v) for k, v in dict(weights).items()}
        if not terms:
            raise ValueError("loss.terms is empty: give at least one named term")
        if set(weights) != set(terms):
            raise ValueError(f"loss.weights keys {sorted(weights)} must match loss.terms keys {sorted(terms)}")
        self.terms = nn.ModuleDict(terms)
        self.weights = weights

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(estimate, target) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, values
