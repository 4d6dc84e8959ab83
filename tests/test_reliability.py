"""Reliability: every restored piece matters for an exact resume, hostile and broken
checkpoints are refused, a failing save keeps the previous checkpoint, non-finite
gradients end the run as documented."""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, THREADS, TINY, cli, compose_cfg, summary_json, tiny
from tests.helpers import poison_step, train_quietly
from trainer.checkpoint import CheckpointError, load, restore
from trainer.loop.checkpointer import Checkpointer
from trainer.loop.engine import train
from trainer.run import assemble
from trainer.run_state import RunState

# dropout makes the RNG matter, cosine the schedule, Adam the optimizer state; the scaler
# is checked under fp16 (where, on CPU, overflow skips most steps: too few for the others)
EXACT = [*TINY, "trainer.epochs=2", "trainer.steps_per_epoch=4", "model.dropout=0.5", "trainer.deterministic=true"]
CONFIGS = {"fp32": compose_cfg(*EXACT), "fp16": compose_cfg(*EXACT, "precision=amp_fp16")}


class StopAt:
    """Stands in for a SIGTERM arriving during step `step`."""

    def __init__(self, state_ref, step: int):
        self.state_ref, self.step, self.signal_name = state_ref, step, "SIGTERM"

    @property
    def requested(self) -> bool:
        return self.state_ref[0].step >= self.step

    def agreed(self, dist) -> bool:  # one process: nothing to agree on
        return self.requested


def poison_when_scale_above(parts, limit: float, calls: dict) -> None:
    """An overflow at step 2, then whenever the loss scale is above `limit`: the scaler's
    state then decides which steps are skipped. `calls` counts steps across a resume."""
    scaler = parts.optim.precision.scaler

    def hook(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 2 or (calls["n"] > 2 and scaler.get_scale() > limit) else grad

    next(parts.network.raw.parameters()).register_hook(hook)


def run(tmp, parts, state, stop=None):
    holder = [state]
    stopper = StopAt(holder, stop) if stop else None
    trainer_cfg = CONFIGS["fp32"].trainer
    return train(
        parts, trainer_cfg, state, checkpointer=Checkpointer(tmp / "ckpt"), history=tmp / "history.json", stop=stopper
    )


def final_weights(tmp, precision: str, omit: str | None, interrupt: bool) -> dict[str, torch.Tensor]:
    cfg, calls = CONFIGS[precision], {"n": 0}

    def build():
        parts = assemble(cfg)
        if precision == "fp16":
            poison_when_scale_above(parts, 40000.0, calls)
        return parts

    parts = build()
    state = run(tmp, parts, RunState(), stop=6 if interrupt else None)
    if interrupt:
        assert state.status == "interrupted" and state.step == 6
        fresh = build()  # a new process: everything rebuilt from config
        ckpt = load(tmp / "ckpt" / "last.pt")
        untouched = {
            "optimizer": fresh.optim.optimizer,
            "schedule": fresh.optim.schedule,
            "scaler": fresh.optim.precision.scaler,
        }
        if omit in untouched:  # left out = the freshly built object's own state
            ckpt[omit] = untouched[omit].state_dict()
        if omit == "rng":
            torch.manual_seed(123)
            ckpt["rng"]["torch"] = torch.get_rng_state()
        saved = restore(
            ckpt,
            tmp / "ckpt" / "last.pt",
            fresh.network.raw,
            fresh.optim.optimizer,
            fresh.optim.schedule,
            fresh.optim.precision.scaler,
            fresh.config,
        )
        state = RunState.from_dict(saved)
        if omit == "data position":
            state.step -= state.step % fresh.feed.steps_per_epoch  # the epoch restarts from its first batch
        state.status = "running"
        state = run(tmp, fresh, state)
        parts = fresh
    assert state.status == "completed", (state.status, state.reason)
    return {k: v.clone() for k, v in parts.network.raw.state_dict().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return {p: final_weights(tmp_path_factory.mktemp(p), p, None, interrupt=False) for p in CONFIGS}


@pytest.mark.parametrize(
    "precision,omit",
    [
        ("fp32", None),
        ("fp32", "optimizer"),
        ("fp32", "schedule"),
        ("fp32", "rng"),
        ("fp32", "data position"),
        ("fp16", None),
        ("fp16", "scaler"),
    ],
)
def test_exact_resume_needs_every_restored_piece(reference, tmp_path, precision, omit):
    """An in-process stop at step 6 (mid-epoch 2), then a rebuilt run restored from `last`."""
    want, got = reference[precision], final_weights(tmp_path, precision, omit, interrupt=True)
    same = all(torch.equal(want[k], got[k]) for k in want)
    assert same == (omit is None), f"leaving out {omit!r} should {'not ' if omit is None else ''}change the result"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_MARK']}",))


def test_hostile_truncated_and_foreign_checkpoints_are_refused(tmp_path, monkeypatch):
    mark = tmp_path / "code-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": 1, "model": Payload()}, hostile)  # torch.save pickles the payload
    with pytest.raises(CheckpointError, match="refusing to load .*hostile.pt"):
        load(hostile)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="raw.pt"):
        load(raw)
    assert not mark.exists(), "the payload ran"

    parts = assemble(tiny())
    good = tmp_path / "good.pt"
    from trainer.checkpoint import snapshot

    torch.save(
        snapshot(parts.network.raw, parts.optim.optimizer, parts.optim.schedule, None, RunState(), parts.config), good
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: truncated or corrupt"):
        load(truncated)
    other = assemble(tiny("model=conv"))
    with pytest.raises(CheckpointError, match="does not match this model"):
        restore(
            load(good),
            good,
            other.network.raw,
            other.optim.optimizer,
            other.optim.schedule,
            other.optim.precision.scaler,
            parts.config,
        )
    # the CLI: a hostile `resume=` file ends the run with the message, and no code runs
    proc = cli(*TINY, f"resume={hostile}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0 and "refusing to load" in proc.stderr and not mark.exists()


def test_failed_save_names_the_path_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(ckpt.last, {"format": 1, "model": {"w": torch.ones(3)}, "n": 1})

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=f"could not write {ckpt.last}: No space left on device"):
        ckpt.save(ckpt.last, {"format": 1, "model": {"w": torch.zeros(3)}, "n": 2})
    monkeypatch.undo()
    assert load(ckpt.last)["n"] == 1
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.pt"]  # no temporary left


def test_file_size_limit_during_a_run_exits_non_zero_keeping_last(tmp_path):
    """A real write failure (RLIMIT_FSIZE: what a full quota looks like to the process)."""
    run_dir = tmp_path / "run"
    cli(*TINY, "trainer.epochs=1", f"hydra.run.dir={run_dir}", check=True)
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    limit = len(before) // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *TINY, "trainer.epochs=2", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
        env={**os.environ, "OMP_NUM_THREADS": THREADS},
    )
    assert proc.returncode != 0
    assert f"could not write {run_dir / 'checkpoints' / 'last.pt'}" in proc.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before  # the epoch-1 state, intact
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert summary_json(run_dir)["status"] == "failed"


KILLER = """
import sys, torch
from trainer.loop.checkpointer import Checkpointer
c = Checkpointer(sys.argv[1])
big = {"format": 1, "model": {"w": torch.randn(2_000_000)}}
print("ready", flush=True)
i = 0
while True:
    i += 1
    big["n"] = i
    c.save(c.last, big)
"""


def test_kill_during_saves_always_leaves_a_loadable_last(tmp_path):
    import random
    import signal
    import time

    rng = random.Random(0)
    directory = tmp_path / "ckpt"
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(directory)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (directory / "last.pt").exists():
            assert load(directory / "last.pt")["model"]["w"].numel() == 2_000_000
        Checkpointer(directory)  # the next start cleans up
        assert not list(directory.glob(".tmp-*"))
    assert load(directory / "last.pt")["n"] >= 1


def test_inf_gradient_ends_an_fp32_run_as_diverged(tmp_path):
    cfg = tiny("trainer.epochs=1", "trainer.steps_per_epoch=4")
    parts = assemble(cfg)
    poison_step(parts, 2)
    state = train_quietly(parts, cfg.trainer, tmp_path)
    assert state.status == "diverged" and "non-finite" in state.reason
    assert not (tmp_path / "ckpt" / "last.pt").exists()  # nothing non-finite was saved


def test_one_failing_job_does_not_take_the_multirun_down(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m",
        *TINY,
        "model._target_=tests.helpers.FailsAtWidth",
        "model.hidden=4,5,6",
        f"hydra.sweep.dir={sweep}",
        timeout=300,
    )
    assert proc.returncode != 0  # the sweep says something failed...
    statuses = {job.name: summary_json(job)["status"] for job in sweep.iterdir() if (job / "summary.json").exists()}
    # ...after the other jobs ran to the end and kept their results
    assert statuses == {"model.hidden=4": "completed", "model.hidden=5": "failed", "model.hidden=6": "completed"}
    for ok in ("model.hidden=4", "model.hidden=6"):
        assert (sweep / ok / "checkpoints" / "best.pt").is_file()
    assert "multirun summary: 3 jobs, 2 fine, 1 failed" in proc.stderr
    assert "fails on purpose" in proc.stderr.split("multirun summary")[1]


def test_only_this_trainers_format_with_weights_loads_and_the_refusal_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYLOAD_MARK", str(tmp_path / "code-ran"))

    def saved(name, obj):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    assert load(saved("ok.pt", {"format": 1, "model": {}})) == {"format": 1, "model": {}}
    foreign = [("list.pt", [1, 2]), ("old.pt", {"format": 0, "model": {}}), ("new.pt", {"format": 2, "model": {}}),
               ("empty.pt", {"format": 1})]  # fmt: skip
    for name, obj in foreign:
        with pytest.raises(CheckpointError, match=f"{name} is not a checkpoint written by this trainer"):
            load(saved(name, obj))
    with pytest.raises(CheckpointError) as refused:  # torch's reason, its first line only
        load(saved("hostile.pt", {"format": 1, "model": Payload()}))
    assert "Weights only load failed" in str(refused.value) and "\n" not in str(refused.value)


def test_a_config_change_is_listed_key_by_key_except_what_a_resume_may_change():
    from trainer.checkpoint import config_differences

    saved = {"a": 1, "gone": 1, "outputs": "x", "trainer": {"epochs": 2, "lr": 1, "seed": 0}, "x": {"y": 1}}
    current = {"a": 2, "new": 2, "outputs": "y", "trainer": {"epochs": 9, "lr": 1, "seed": 1}, "x": 5}
    assert config_differences(saved, current) == [
        "a: 1 -> 2", "gone: 1 -> '<missing>'", "new: '<missing>' -> 2", "trainer.seed: 0 -> 1", "x: {'y': 1} -> 5",
    ]  # fmt: skip
    assert config_differences(saved, saved) == []

    def refusal(n):  # the message shows five differences, then "..."
        with pytest.raises(CheckpointError) as err:
            restore({"config": {f"k{i}": 0 for i in range(n)}}, tmp := "ck.pt", None, None, None, None, {})
        assert tmp in str(err.value)
        return str(err.value)

    assert refusal(4).count("-> '<missing>'") == 4 and "; ..." not in refusal(4)
    assert refusal(5).count("-> '<missing>'") == 5 and "; ..." not in refusal(5)
    assert refusal(6).count("-> '<missing>'") == 5 and "; ...)" in refusal(6)


def test_optimizer_or_schedule_state_of_another_shape_is_refused_by_name():
    parts = assemble(tiny())
    from trainer.checkpoint import snapshot

    net, optim = parts.network.raw, parts.optim
    good = snapshot(net, optim.optimizer, optim.schedule, None, RunState(), parts.config)
    for broken in ({**good, "optimizer": {"state": {}, "param_groups": []}},  # ValueError: groups
                   {**good, "optimizer": {"state": {}}}):  # KeyError: no param_groups  # fmt: skip
        with pytest.raises(CheckpointError, match="ck.pt: optimizer/schedule state does not fit this config"):
            restore(broken, "ck.pt", net, optim.optimizer, optim.schedule, None, parts.config)
