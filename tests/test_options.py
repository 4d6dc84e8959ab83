"""Every option of the schedule, optimizer, loss and precision groups takes effect: the
learning rate at chosen steps against the schedule's formula, the optimizer's class and
hyper-parameters, the loss's terms and weights, the precision's autocast dtype and flags.
(tests/test_config.py checks that each option composes and trains a step; this checks
that it does what its file says.)"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import compose_cfg, options
from trainer.build import build_loss, build_optimizer, build_schedule
from trainer.placement import setup

STEPS = 100


def lr_after(schedule, optimizer, steps: int) -> float:
    for _ in range(steps):
        optimizer.step()
        schedule.after_step()
    return optimizer.param_groups[0]["lr"]


def fresh(sched: str, lr: float = 1.0, steps: int = STEPS):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    return optimizer, build_schedule(compose_cfg(f"sched={sched}").sched, optimizer, steps, "max")


# warm-up steps (odd and even), the decay, the end and past it; runs shorter than one
# warm-up step (10 steps: warm-up 0.5 steps, taken as 1) and than the decay (1 step)
@pytest.mark.parametrize(
    "total,step", [(STEPS, s) for s in (0, 1, 2, 3, 4, 5, 30, 52, 99, 100, 120)] + [(10, 0), (10, 1), (10, 5), (1, 2)]
)
def test_cosine_follows_its_formula(total, step):
    cfg = compose_cfg("sched=cosine").sched
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        expected = (step + 1) / warm
    else:
        progress = min(1.0, (step - warm) / max(1, total - warm))
        expected = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    optimizer, schedule = fresh("cosine", steps=total)
    assert lr_after(schedule, optimizer, step) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("total", [STEPS, STEPS + 1])
def test_one_cycle_starts_low_peaks_at_the_optimizer_lr_and_ends_near_zero(total):
    cfg = compose_cfg("sched=onecycle").sched
    optimizer, schedule = fresh("onecycle", lr=0.3, steps=total)
    seen = [optimizer.param_groups[0]["lr"]] + [lr_after(schedule, optimizer, 1) for _ in range(total)]
    assert seen[0] == pytest.approx(0.3 / cfg.div_factor)
    peak = max(seen)
    assert peak == pytest.approx(0.3, rel=1e-3) and abs(seen.index(peak) - cfg.pct_start * (total + 1)) <= 1
    assert seen[-1] < 0.3 / cfg.div_factor / 100  # annealed towards initial / final_div_factor


def test_plateau_halves_the_rate_after_patience_validations_without_improvement():
    cfg = compose_cfg("sched=plateau").sched
    optimizer, schedule = fresh("plateau")
    assert lr_after(schedule, optimizer, STEPS) == 1.0  # steps do not move it
    for metric in (1.0, 1.0 + cfg.threshold / 2):  # the best, then no improvement beyond the threshold
        schedule.after_validation(metric)
    assert optimizer.param_groups[0]["lr"] == 1.0  # within patience
    for _ in range(cfg.patience):
        schedule.after_validation(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.factor)


def test_none_keeps_the_rate():
    optimizer, schedule = fresh("none", lr=0.7)
    lr = lr_after(schedule, optimizer, STEPS)
    schedule.after_validation(0.0)
    assert lr == optimizer.param_groups[0]["lr"] == 0.7


@pytest.mark.parametrize("name", options("sched"))
def test_a_schedule_restored_from_its_state_goes_on_where_it_was(name):
    """What a checkpoint keeps of the schedule: a fresh one given the state of one stepped
    37 times (and validated twice) produces the same rates from there on."""
    optimizer, schedule = fresh(name, lr=0.5)
    lr_after(schedule, optimizer, 37)
    for metric in (1.0, 0.5):
        schedule.after_validation(metric)
    state = schedule.state_dict()
    assert (state == {}) == (name == "none")  # only the constant rate has nothing to keep
    other_optimizer, other = fresh(name, lr=0.5)
    other_optimizer.load_state_dict(optimizer.state_dict())
    other.load_state_dict(state)
    for _ in range(3):
        schedule.after_validation(0.5)
        other.after_validation(0.5)
        assert lr_after(other, other_optimizer, 5) == lr_after(schedule, optimizer, 5)


@pytest.mark.parametrize("name", options("optim"))
def test_optimizer_class_and_hyper_parameters(name):
    cfg = compose_cfg(f"optim={name}").optim
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    optimizer = build_optimizer(cfg, model)
    assert f"{type(optimizer).__module__}.{type(optimizer).__name__}".endswith(cfg._target_.split(".")[-1])
    assert cfg._target_.rsplit(".", 1)[1] == type(optimizer).__name__
    decay, no_decay = optimizer.param_groups
    assert [p.ndim for p in decay["params"]] == [2] and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    for key, value in OmegaConf.to_container(cfg).items():
        if key.startswith("_") or value is None:
            continue
        got = decay[key]
        assert (list(got) if isinstance(got, tuple) else got) == pytest.approx(value), key


@pytest.mark.parametrize("name", [n for n in options("loss") if n != "rnnt"])
def test_loss_terms_and_weights_make_the_total(name):
    cfg = compose_cfg(f"loss={name}").loss
    loss = build_loss(cfg)
    g = torch.Generator().manual_seed(1)
    target = 0.1 * torch.randn(2, 8000, generator=g)
    estimate = target + 0.05 * torch.randn(2, 8000, generator=g)
    total, terms = loss(estimate, target)
    assert set(terms) == set(cfg.terms)
    weights = cfg.get("weights") or {}
    expected = sum(weights.get(k, 1.0) * v for k, v in terms.items())
    assert total.item() == pytest.approx(float(expected), rel=1e-6)
    for key, term in terms.items():  # each term is the loss its config names, computed alone
        term_cfg = OmegaConf.to_container(cfg.terms[key], resolve=True)
        alone = build_loss(OmegaConf.create({"_target_": "losses.Composite", "terms": {key: term_cfg}}))
        assert alone(estimate, target)[1][key].item() == pytest.approx(term.item(), rel=1e-6)


@pytest.mark.parametrize("name", options("precision"))
def test_precision_sets_autocast_the_scaler_and_the_flags(name):
    cfg = compose_cfg(f"precision={name}", "compile=none")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.precision.dtype.value]
    network, _, precision = setup(nn.Linear(8, 8), nn.L1Loss(), cfg.precision, cfg.compile, torch.device("cpu"), False)
    with precision.autocast():
        out = network.trained(torch.randn(2, 8))
    assert out.dtype == dtype
    assert precision.scaler.is_enabled() == cfg.precision.grad_scaler
    assert torch.get_float32_matmul_precision() == cfg.precision.matmul.value
    assert torch.backends.cudnn.allow_tf32 == cfg.precision.cudnn_tf32
    assert torch.backends.cudnn.benchmark == cfg.precision.cudnn_benchmark
