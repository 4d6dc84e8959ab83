"""Shared fixtures: the real config composed with a tiny model and data on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from trainer.launch.startup import compose
from trainer.loop.loggers import read_scalars

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small enough that a whole run takes a second or two on 2 cores.
TINY = [
    "trainer.epochs=2",
    "trainer.steps_per_epoch=3",
    "trainer.batch_size=2",
    "trainer.val_batch_size=4",
    "trainer.num_workers=0",
    "trainer.log_every=1",
    "trainer.progress=log",
    "data.segment_seconds=0.25",
    "data.val_size=4",
    "data.corpus_size=4",
    "data.noise_corpus_size=4",
    "data.families=[white,coloured,hum,clicks]",
    "model.hidden=4",
    # the default job's speed augmentation has its own tests (tests/test_augment.py); the
    # engine's tests and golden records keep their data free of it
    "augment=none",
    # PESQ/STOI and TensorBoard media have their own tests (tests/test_audio_depth.py)
    "trainer.validation.slow_examples=0",
    "trainer.validation.media_examples=0",
]

# The transducer task's counterpart of TINY (its data and model have other keys).
TINY_TRANSDUCER = [
    "task=transducer",
    *[o for o in TINY if o.startswith("trainer.")],
    "data.val_size=4",
    "data.vocab=3",
    "model.hidden=4",
    "model.layers=1",
    "model.joint=8",
]

# One pytest-xdist worker per core already fills the machine: more threads per worker only
# oversubscribe it (OpenMP threads then spin against each other). CLI runs get the same.
THREADS = str(max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
torch.set_num_threads(int(THREADS))
# Rendered corpora go to a folder of this test process, never to the checkout's outputs/
# (CLI runs inherit it; tests of the cache pass their own folder).
os.environ["TRAINER_CACHE_DIR"] = tempfile.mkdtemp(prefix="trainer-test-cache-")
# Runs (and the runs index) that a test does not place itself go to a folder of this test
# process too: a developer's own outputs/ must never be found as an existing experiment.
os.environ["TRAINER_OUTPUTS"] = tempfile.mkdtemp(prefix="trainer-test-outputs-")


# The longest tests (pytest --durations), started first: with one worker per core, a long
# test picked up last keeps the whole suite waiting for it alone.
LONG_FIRST = (
    "test_compiled_model_trains_on_cpu",
    "test_the_default_job_and_a_search_print_no_warning",
    "test_a_reused_run_has_the_sweeps_name_everywhere",
    "test_rerun_continues_the_study_without_repeating_or_overwriting",
    "test_export_cli_streams_a_gtcrn",
    "test_sigkill_and_resume_reproduces_every_step",
    "test_short_run_improves_si_sdr_on_espeak_speech",
    "test_search_killed_mid_trial_and_rerun_completes_without_repeats",
    "test_precision_sweep_on_cpu_and_its_report",
    "test_a_two_job_multirun_runs_in_other_processes_and_both_results_are_collected",
    "test_two_workers_share_one_postgresql_study",
    "test_two_workers_share_one_sqlite_study",
    "test_a_truncated_file_stops_the_run_naming_it_or_is_skipped",
    "test_torchrun_two_ranks_equal_one_process_stop_together_and_resume",
    "test_crashing_and_diverging_trials_fail_with_reasons_while_the_sweep_finishes",
    "test_a_multirun_renders_once_and_its_relaunch_reads_the_cache",
    "test_run_writes_tensorboard_checkpoints_history_and_summary",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(getattr(item, "originalname", item.name), len(rank)))  # stable for the rest


def compose_cfg(*overrides: str):
    return compose(list(overrides))


def tiny(*overrides: str):
    """The real config with the TINY job, plus a test's own overrides."""
    return compose_cfg(*TINY, *overrides)


def summary_json(run_dir: Path) -> dict:
    """A run's summary.json exactly as on disk (plain JSON: `status` a string, inf as "inf")."""
    path = Path(run_dir) / "summary.json"
    assert path.is_file(), f"{path}: no summary written"
    return json.loads(path.read_text())


@pytest.fixture
def tiny_run(tmp_path):
    """Run the TINY job (plus overrides) in this process; returns (run dir, summary.json)."""
    from trainer.run import run

    def go(*overrides: str, name: str = "run") -> tuple[Path, dict]:
        run_dir = tmp_path / name
        run(tiny(*overrides), run_dir)
        return run_dir, summary_json(run_dir)

    return go


@pytest.fixture
def checkpoint(tiny_run):
    """The run folder of a finished TINY denoise run (its checkpoints/best.pt)."""
    run_dir, summary = tiny_run()
    assert summary["status"] == "completed"
    return run_dir


def cli(*args: str, timeout: float = 300, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m trainer ...` from the repo root, as a user would (in `env`, default ours)."""
    env = {**(os.environ if env is None else env), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": THREADS}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def before_and_after_one_epoch(cfg) -> tuple[dict[str, float], dict[str, float]]:
    """Validation metrics of a freshly built run, then after one epoch of plain steps."""
    from trainer.loop.engine import train_step
    from trainer.loop.validation import validate
    from trainer.run import assemble

    parts = assemble(cfg)
    before, _ = validate(parts)
    parts.feed.sampler.set_position(0, 0)
    for batch in parts.feed.train_loader:
        train_step(parts, [batch], cfg.trainer.grad_clip)
        parts.optim.schedule.after_step()
    after, _ = validate(parts)
    return before, after


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


scalars = read_scalars  # all scalar series of a TensorBoard writer's directory


@pytest.fixture
def tiny_cfg():
    return tiny


def use_bf16_lstm(path: str, monkeypatch) -> None:
    """Put the CPU's bf16 LSTM on `path`: "float32" (the fallback, forced: runs on every
    machine) or "native" (oneDNN's bf16 kernel, where this CPU has one; the test is skipped,
    saying why, elsewhere). Nothing a test asserts then depends on the CPU it runs on."""
    from models import kernels

    monkeypatch.delenv(kernels.ENV, raising=False)
    kernels.reset()
    if path == "native" and not (verdict := kernels.cpu_bf16_lstm()).native:
        pytest.skip(f"no native bf16 LSTM on this CPU ({verdict.reason}); its float32 path is tested")
    monkeypatch.setenv(kernels.ENV, path)
    kernels.reset()


# every precision a CPU run can ask for, with both paths of bf16's LSTM
CPU_PRECISIONS = {
    "fp32": (None, None),
    "bf16-float32": (torch.bfloat16, "float32"),
    "bf16-native": (torch.bfloat16, "native"),
    "fp16": (torch.float16, None),
}


@pytest.fixture
def cpu_precision(request, monkeypatch):
    """Indirect parametrisation with a `CPU_PRECISIONS` key: the autocast dtype (None: fp32),
    the bf16 LSTM put on its path first."""
    from models import kernels

    dtype, path = CPU_PRECISIONS[request.param]
    if path is not None:
        use_bf16_lstm(path, monkeypatch)
    yield dtype
    kernels.reset()
