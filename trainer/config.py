"""Typed schemas for the config and their validation. Start-up stores them in Hydra's
ConfigStore (trainer/launch/startup.py); this module imports nothing from the project.

Hydra checks types and unknown keys of the typed nodes (`trainer`, `precision`, `compile`)
when it composes. Two holes remain, closed by `validate`, which runs from a Hydra callback
(trainer/launch/callbacks.py) before any run directory exists:
  * `+trainer.lrr=0.1` adds a key even to a typed node (Hydra opens the node for `+`);
  * the `_target_` groups (model, optim, sched, loss, task, data, augment) have no schema, so a
    misspelt argument would only fail deep inside the run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value or key the trainer refuses; the message names the key."""


class Progress(Enum):
    auto = "auto"  # a bar on a terminal, log lines otherwise
    bar = "bar"
    log = "log"
    none = "none"


class Dtype(Enum):
    float32 = "float32"  # autocast off
    bfloat16 = "bfloat16"
    float16 = "float16"


class MatmulPrecision(Enum):
    # torch.set_float32_matmul_precision: "high" allows TF32 (or bf16x3) for fp32 matmuls.
    highest = "highest"
    high = "high"
    medium = "medium"


class CompileMode(Enum):
    default = "default"
    reduce_overhead = "reduce-overhead"  # CUDA graphs
    max_autotune = "max-autotune"  # Triton autotuning + CUDA graphs
    max_autotune_no_cudagraphs = "max-autotune-no-cudagraphs"


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    patience: int = 5  # validations without improvement of the task's monitored metric
    min_delta: float = 0.0


@dataclass
class ValidationConfig:
    # PESQ / STOI (the task's `slow_metrics`) are slow on CPU: a subset, at a cadence.
    slow_every: int = 1  # epochs between slow-metric passes; 0 = never
    slow_examples: int = 8  # the first N validation examples (a fixed subset)
    # The val writer gets audio clips and spectrogram images of the first N examples:
    # inputs and targets once, outputs at every media epoch. 0 = none.
    media_examples: int = 3
    media_every: int = 1
    spectrogram: str = "stft"  # stft (log-magnitude, linear frequency) | mel
    # At most this many validation examples per validation, spread evenly over the set (the
    # same ones every epoch and seed); null = all. A real corpus's full test set is for
    # `python -m trainer.evaluate`; during training a fixed subset keeps epochs short.
    max_examples: Optional[int] = None


@dataclass
class DiagnosticsConfig:
    # Gradient diagnostics (trainer/loop/diagnostics.py, docs/guide/gradients.md); 0 turns a part off.
    terms_every: int = 100  # steps between per-loss-term gradient analyses (an extra backward per term)
    layers_every: int = 50  # steps between per-layer gradient norms, update/weight ratios, weight norms
    histograms_every: int = 500  # steps between weight and gradient histograms
    depth: int = 2  # module-path depth that defines a layer group (rnn.lstm, encoder.0, ...)
    alerts: bool = True
    zero_checks: int = 3  # alert when a group's gradient is zero at this many consecutive layer checks
    spike_factor: float = 10.0  # alert when the global norm exceeds this multiple of its running median
    spike_window: int = 200  # steps in that running median
    spike_min_history: int = 20  # steps seen before spikes are judged
    clip_alert_fraction: float = 0.9  # alert when more than this share of a log window's steps is clipped
    clip_alert_after: int = 50  # ...counting steps after this one: the first steps' large gradients are expected


@dataclass
class DebugConfig:
    # torch.autograd anomaly detection for the whole run: the error names the backward op
    # that produced a NaN (and where its forward ran). Slow: for locating a bug only.
    detect_anomaly: bool = False


@dataclass
class TrainerConfig:
    # The default job is sized to finish in under 3 minutes on 2 CPU cores (docs/guide/
    # default-job.md). Batch 16 rather than 32: 0.6x the time, and over seeds 0-2 in-domain
    # SI-SDRi -0.20 dB, espeak-ng speech SI-SDRi -0.05 dB, PESQ-WB gain -0.01. 10 epochs
    # rather than 6, with augment=speed, by a sweep over seeds 0-2: speech SI-SDRi +0.37 dB,
    # PESQ-WB gain +0.03, STOI change +0.006 (docs/measurements/recipe-speech-cpu-2026-12-07.md).
    epochs: int = 10
    steps_per_epoch: Optional[int] = 300  # optimizer steps; null = one pass over a finite dataset
    batch_size: int = 16
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    grad_clip: Optional[float] = 5.0  # max global grad norm; null = no clipping (norm still logged)
    val_batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto = cuda when present, else cpu; or cpu, cuda, cuda:1, ...
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    num_workers: int = 0  # 0 is fastest on few cores: mixing is cheap, worker IPC is not (docs/guide/performance.md)
    # Mixing and augmentation as batched ops on the training device, after the copy; the
    # loader only draws and reads (trainer/data/staged.py). For a GPU the CPU cannot feed.
    data_on_device: bool = False
    log_every: int = 25  # optimizer steps between train-writer points (and host syncs)
    checkpoint_every: int = 0  # optimizer steps between mid-epoch `last` saves; 0 = per epoch only
    progress: Progress = Progress.auto
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    # Steps at the start of each process (compilation, autotuning, CUDA-graph capture, the
    # cold data corpus) kept out of the throughput figures and reported as warm-up time.
    warmup_steps: int = 10
    target: Optional[float] = None  # a value of the monitored metric: the run records when it first reaches it


@dataclass
class PrecisionConfig:
    dtype: Dtype = Dtype.float32  # autocast dtype for the forward pass
    grad_scaler: bool = False  # loss scaling; required for float16, pointless otherwise
    matmul: MatmulPrecision = MatmulPrecision.highest
    # cuDNN convolutions ignore `matmul`; their TF32 switch is this one (PyTorch's default: on).
    cudnn_tf32: bool = True
    cudnn_benchmark: bool = False  # autotune conv algorithms per input shape


@dataclass
class CompileConfig:
    enabled: bool = False
    mode: CompileMode = CompileMode.default
    fullgraph: bool = False
    dynamic: Optional[bool] = False  # False: specialise on shapes (what CUDA graphs need)


@dataclass
class ProfilerConfig:
    # torch.profiler schedule, in optimizer steps: skip `wait`, trace but discard `warmup`,
    # record `active`; the trace goes to <run>/tb/profile and the top operators to the log.
    wait: int = 5
    warmup: int = 2
    active: int = 5
    record_shapes: bool = False
    profile_memory: bool = False
    with_stack: bool = False
    row_limit: int = 15


@dataclass
class OptunaConfig:
    """The link between a job and its Optuna trial. The search presets (conf/search/) set
    `pruner` and `objectives`; the sweeper sets the rest, per trial."""

    storage: Optional[str] = None
    study_name: Optional[str] = None
    trial_id: Optional[int] = None
    trial_number: Optional[int] = None
    pruner: Any = None  # e.g. {_target_: optuna.pruners.MedianPruner, n_warmup_steps: 1}
    # what the job returns to the sweeper: summary keys, in the order of the study's
    # directions; empty = the task's monitored metric alone
    objectives: List[str] = field(default_factory=list)


@dataclass
class Config:
    task: Any = MISSING
    data: Any = MISSING
    augment: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    sched: Any = MISSING
    loss: Any = MISSING
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: Optional[str] = None  # a checkpoint to start from when the run dir has none
    debug: DebugConfig = field(default_factory=DebugConfig)
    profile: bool = False  # record a torch.profiler trace (schedule in `profiler`); no cost when off
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    # Where runs, multiruns and the runs index live (conf/config.yaml: $TRAINER_OUTPUTS or outputs).
    outputs: str = "outputs"
    # A relaunched sweep skips experiments that failed or diverged; true runs them again,
    # each in a fresh folder (trainer/experiments/plan.py).
    retry_failed: bool = False
    # A sweep or search prints what it would do with each job (new, done, resume, ...; the
    # slot it would get) and launches nothing.
    dry_run: bool = False


_INSTANTIATE_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


# The config groups, in the order a run builds them; the first seven name components by
# `_target_` (checked by `validate`), all of them are a run's choices (hparams, reports).
COMPONENT_GROUPS = ("task", "data", "augment", "model", "optim", "sched", "loss")
GROUPS = (*COMPONENT_GROUPS, "precision", "compile")

# Settings that change where or how visibly a run happens, not what it computes: they do
# not change a run's directory name (conf/config.yaml `exclude_keys`, through the
# `result_neutral` resolver) and may differ when a checkpoint is resumed (checkpoint.py).
# They are also left out of an experiment's identity (trainer/identity.py).
RESULT_NEUTRAL = (
    "resume", "trainer.device", "trainer.num_workers", "trainer.progress", "data.cache_dir", "outputs", "retry_failed",
    "dry_run",
)  # fmt: skip


def _locate(target: str) -> Any:
    from hydra.utils import get_method

    try:
        return get_method(target)
    except Exception as err:  # Hydra wraps import errors; keep the message, name the key
        raise ConfigError(str(err)) from None


def _check_targets(node: Any, path: str) -> None:
    """Every key of a `_target_` node must be a parameter of the target (unless **kwargs)."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str):
            fn = _locate(target)
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):
                params = {}
            if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                for key in node.keys():
                    if key not in _INSTANTIATE_KEYS and key not in params:
                        accepted = ", ".join(k for k in params if k not in ("self", "params"))
                        raise ConfigError(
                            f"{path}.{key}: '{key}' is not an argument of {target} (accepted: {accepted})"
                        )
        for key in node.keys():
            _check_targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            _check_targets(node._get_node(i), f"{path}[{i}]")


def _check_dataset_paths(data: DictConfig) -> None:
    """Folder datasets: every `*_dir` key set (when required) and an existing folder,
    checked before a run directory exists. `cache_dir` is written, not read: made when needed."""
    for key in data.keys():
        if not str(key).endswith("_dir") or key == "cache_dir":
            continue
        if OmegaConf.is_missing(data, key):
            raise ConfigError(f"data.{key}: required, not set (give a folder: data.{key}=/path/to/audio)")
        value = data[key]
        if value is not None and not Path(str(value)).expanduser().is_dir():
            raise ConfigError(f"data.{key}: {value} does not exist or is not a folder")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key. Does not resolve `${hydra:...}`."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    try:
        # A fresh schema is closed (struct): keys that `+` slipped into typed nodes fail here.
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(job, resolve=False))
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config: {err}") from None
    for group in COMPONENT_GROUPS:
        _check_targets(job._get_node(group), group)
    t, p = job.trainer, job.precision
    positive = ["epochs", "batch_size", "grad_accum", "val_batch_size", "log_every"]
    if t.warmup_steps < 0:
        raise ConfigError(f"trainer.warmup_steps must be >= 0, got {t.warmup_steps}")
    if job.profile and job.profiler.active < 1:
        raise ConfigError("profiler.active must be >= 1 when profile=true")
    for key in positive:
        if t[key] < 1:
            raise ConfigError(f"trainer.{key} must be >= 1, got {t[key]}")
    if t.steps_per_epoch is not None and t.steps_per_epoch < 1:
        raise ConfigError(f"trainer.steps_per_epoch must be >= 1 or null, got {t.steps_per_epoch}")
    v = t.validation
    for key in ("slow_every", "slow_examples", "media_examples", "media_every"):
        if v[key] < 0:
            raise ConfigError(f"trainer.validation.{key} must be >= 0, got {v[key]}")
    d = t.diagnostics
    for key in ("terms_every", "layers_every", "histograms_every", "zero_checks", "spike_window", "spike_min_history",
                "clip_alert_after"):  # fmt: skip
        if d[key] < 0:
            raise ConfigError(f"trainer.diagnostics.{key} must be >= 0, got {d[key]}")
    if d.depth < 1 or d.spike_factor <= 1:
        raise ConfigError(
            f"trainer.diagnostics.depth must be >= 1 and spike_factor > 1, got {d.depth} and {d.spike_factor}"
        )
    if t.early_stopping.patience < 1:  # 0 would stop every run after its first validation, improved or not
        raise ConfigError(f"trainer.early_stopping.patience must be >= 1, got {t.early_stopping.patience}")
    if v.max_examples is not None and v.max_examples < 1:
        raise ConfigError(f"trainer.validation.max_examples must be >= 1 or null, got {v.max_examples}")
    if v.spectrogram not in ("stft", "mel"):
        raise ConfigError(f"trainer.validation.spectrogram must be 'stft' or 'mel', got {v.spectrogram!r}")
    if t.num_workers < 0 or t.checkpoint_every < 0:
        raise ConfigError("trainer.num_workers and trainer.checkpoint_every must be >= 0")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(f"trainer.grad_clip must be > 0 or null, got {t.grad_clip}")
    if p.grad_scaler and p.dtype != Dtype.float16:
        raise ConfigError(f"precision.grad_scaler=true needs precision.dtype=float16 (got {p.dtype.value})")
    if p.dtype == Dtype.float16 and not p.grad_scaler:
        raise ConfigError("precision.dtype=float16 without precision.grad_scaler=true underflows gradients")
    _check_dataset_paths(job.data)
    if job.resume is not None:
        if not Path(job.resume).is_file():
            raise ConfigError(f"resume: checkpoint file not found: {job.resume}")
