"""Every option of every config group composes and builds; bad config is refused early."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY, TINY_TRANSDUCER, cli, compose_cfg, options, tiny
from trainer import config
from trainer.config import ConfigError, validate
from trainer.loop.engine import train_step
from trainer.loop.validation import validate as run_validation
from trainer.run import assemble

GROUPS = [g for g in config.GROUPS if g != "compile"]  # compile's options: tests/test_perf.py
# folder datasets need folders on disk: tests/test_folder_data.py builds them
NEEDS_FILES = {"folder_pairs", "folder_mix"}
# options of the transducer task, built in its context; audio augmentation does not apply to it
TRANSDUCER = {("task", "transducer"), ("data", "tokens"), ("model", "transducer"), ("loss", "rnnt")}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g) if o not in NEEDS_FILES])
def test_option_composes_builds_and_steps(group, option):
    cfg = compose_cfg(*(TINY_TRANSDUCER if (group, option) in TRANSDUCER else TINY), f"{group}={option}")
    validate(cfg)
    parts = assemble(cfg)
    parts.feed.sampler.set_position(0, 0)
    batch = next(iter(parts.feed.train_loader))
    out = train_step(parts, [batch], cfg.trainer.grad_clip)
    assert torch.isfinite(out.loss), (group, option)
    if not out.skipped:
        parts.optim.schedule.after_step()
    metrics, _ = run_validation(parts)
    assert parts.task.monitor in metrics
    parts.optim.schedule.after_validation(metrics[parts.task.monitor])


@pytest.mark.parametrize("option", options("compile"))
def test_compile_option_builds(option):
    cfg = tiny(f"compile={option}")
    parts = assemble(cfg)
    compiled = option != "none"
    assert (parts.network.trained is not parts.network.raw) == compiled
    assert isinstance(parts.network.trained, torch._dynamo.eval_frame.OptimizedModule) == compiled


def test_conv_before_batchnorm_has_no_bias():
    from torch import nn

    model = assemble(tiny("model=conv")).network.raw
    pairs = [(a, b) for seq in model.modules() if isinstance(seq, nn.Sequential) for a, b in zip(seq, list(seq)[1:])]
    conv_bn = [a for a, b in pairs if isinstance(b, nn.BatchNorm1d)]
    assert conv_bn and all(c.bias is None for c in conv_bn)
    kept = assemble(tiny("model=conv", "model.bias_before_norm=true")).network.raw
    assert sum(p.numel() for p in kept.parameters()) > sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.epochs=2.5", "trainer.epochs"),
        ("trainer.epoch=3", "trainer.epoch"),
        ("+trainer.lrr=0.1", "trainer.lrr"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience"),
        ("+optim.lrr=0.1", "optim.lrr"),
        ("+unknown=3", "unknown"),
        ("precision.dtype=float8", "precision.dtype"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("resume=/no/such/checkpoint.pt", "/no/such/checkpoint.pt"),
    ],
)
def test_bad_override_rejected_before_anything_is_written(tmp_path, override, needle):
    run_dir = tmp_path / "run"
    proc = cli(override, f"hydra.run.dir={run_dir}", timeout=60)
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_validate_names_unknown_target_argument():
    cfg = tiny("+model.widht=3")
    with pytest.raises(ConfigError, match=r"model\.widht"):
        validate(cfg)


def test_fp16_requires_scaler():
    with pytest.raises(ConfigError, match="grad_scaler"):
        validate(tiny("precision=amp_fp16", "precision.grad_scaler=false"))


def test_defaults():
    cfg = compose_cfg()
    assert cfg.task._target_.endswith("Denoise") and cfg.model._target_.endswith("LSTMEnhancer")
    assert cfg.data._target_.endswith("SyntheticSpeech")
    assert cfg.precision.dtype.value == "float32" and not cfg.compile.enabled


def test_every_data_source_implements_the_protocol_and_anything_else_is_refused():
    from omegaconf import OmegaConf

    from trainer.build import build_data
    from trainer.data.folder import FolderMix, FolderPairs
    from trainer.data.source import DataSource
    from trainer.data.synthetic import SyntheticSpeech
    from trainer.data.tokens import SyntheticTokens

    for cls in (SyntheticSpeech, SyntheticTokens, FolderPairs, FolderMix):
        assert all(hasattr(cls, name) for name in ("train", "valid", "infinite")), cls
    assert isinstance(build_data(tiny().data), DataSource)
    with pytest.raises(ConfigError, match=r"data._target_=collections.OrderedDict: a OrderedDict is not a data source"):
        build_data(OmegaConf.create({"_target_": "collections.OrderedDict"}))
