"""Data-parallel training under torchrun (gloo on CPU): two processes train exactly what one
process trains with the same global batch; one run directory; rank 0 alone writes; a
SIGTERM that reaches one rank stops both at the same step and the run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, TINY, compose_cfg, scalars, summary_json
from trainer.data.loader import EpochSampler, train_loader, valid_loader

pytest.importorskip("torch.distributed.run")

# Global batch 4 (2 per rank), 2 micro-batches per step: no_sync on the first. The default
# SI-SDR loss: MR-STFT's log magnitudes on this tiny model amplify rounding differences
# (the ranks sum the gradient mean in another order) to 1e-3 within a few steps.
DDP = [*TINY, "trainer.epochs=2", "trainer.steps_per_epoch=6", "trainer.batch_size=4", "trainer.grad_accum=2",
       "trainer.checkpoint_every=2", "trainer.deterministic=true", "data.val_size=6"]  # fmt: skip


def _rank_pid(agent: subprocess.Popen, rank: int) -> int:
    """The worker process torchrun started for `rank` (read from its environment)."""
    children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no rank {rank} among torchrun's workers {children}")


def _torchrun(*args: str, signal_rank_at_step: int | None = None) -> tuple[int, str]:
    """`torchrun --nproc_per_node=2 -m trainer ...` through the c10d rendezvous (what a
    multi-node launch uses); optionally SIGTERM one rank when rank 0 logs that step."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", "-m", "trainer", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    agent = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in agent.stdout:
        lines.append(line)
        if signal_rank_at_step is not None and f" step {signal_rank_at_step} " in line:
            os.kill(_rank_pid(agent, 1), signal.SIGTERM)  # rank 1 only: rank 0 must learn it from rank 1
            signal_rank_at_step = None
    agent.wait(timeout=120)
    return agent.returncode, "".join(lines)


def test_torchrun_two_ranks_equal_one_process_stop_together_and_resume(tmp_path):
    from trainer.run import run

    reference = tmp_path / "one_process"
    run(compose_cfg(*DDP), reference)

    # ${now:...%f}: two processes composing on their own would make two directories
    code, out = _torchrun(*DDP, f"hydra.run.dir={tmp_path}/runs/" + "${now:%H-%M-%S-%f}", signal_rank_at_step=5)
    assert code != 0, out[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()  # one run directory for both ranks
    stopped = summary_json(run_dir)
    assert stopped["status"] == "interrupted", out[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["state"]["step"] == stopped["steps"] >= 5

    code, out = _torchrun(*DDP, f"hydra.run.dir={run_dir}")
    assert code == 0, out[-3000:]
    assert "resumed from" in out
    summary = summary_json(run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 12

    # same steps, same losses (float tolerance: the gradient mean is summed in another order)
    want, got = scalars(reference / "tb" / "train"), scalars(run_dir / "tb" / "train")
    assert [s for s, _ in got["loss/total"]] == list(range(1, 13))  # no step twice, none missing
    for tag in ("loss/total", "opt/grad_norm", "opt/lr"):  # measured: within 1e-6 relative
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-5), tag
    history = lambda d: json.loads((d / "history.json").read_text())  # noqa: E731
    assert [h["si_sdr"] for h in history(run_dir)] == pytest.approx([h["si_sdr"] for h in history(reference)], abs=1e-3)
    a = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)

    # rank 0 alone writes: one event file per writer and launch, one Hydra config
    for writer in ("train", "val"):
        assert len(list((run_dir / "tb" / writer).glob("events.out.tfevents.*"))) == 2
    assert len(list(run_dir.glob("**/config.yaml"))) == 1


def _batches(sampler: EpochSampler, per_rank: int) -> list[list[int]]:
    keys = list(sampler)
    assert len(keys) == len(sampler)
    return [keys[i : i + per_rank] for i in range(0, len(keys), per_rank)]


@pytest.mark.parametrize("infinite", [False, True])
def test_ranks_share_out_each_global_batch_including_after_a_resume(infinite):
    one = EpochSampler(10, 24, seed=3, infinite=infinite, batch=6)
    ranks = [EpochSampler(10, 24, seed=3, infinite=infinite, batch=6, rank=r, world=3) for r in range(3)]
    for epoch, start in [(0, 0), (2, 12)]:  # a resume mid-epoch starts at a global example number
        for s in (one, *ranks):
            s.set_position(epoch, start)
        whole = _batches(one, 6)
        parts = [_batches(s, 2) for s in ranks]
        assert len(whole) == (24 - start) // 6
        for i, batch in enumerate(whole):  # rank r holds the r-th third of each global batch
            assert [k for p in parts for k in p[i]] == batch


def test_validation_shares_are_contiguous_and_cover_the_set_once():
    data = list(range(7))
    shares = [[int(x) for b in valid_loader(data, 2, r, 3) for x in b] for r in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]  # rank 0 starts where one process starts
    with pytest.raises(ValueError, match="fewer than the 8 processes"):
        valid_loader(data, 2, 0, 8)


def test_a_global_batch_that_does_not_split_among_ranks_is_refused():
    with pytest.raises(ValueError, match="trainer.batch_size=5 is the global batch.*3 processes"):
        train_loader(list(range(20)), False, 5, None, 0, 0, False, rank=0, world=3)


def test_multirun_and_help_under_torchrun_are_refused_with_the_reason(monkeypatch):
    from trainer import distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="torchrun runs one job: drop -m"):
        distributed.join_run_dir(["trainer", "-m", "optim=adamw,sgd"])
    with pytest.raises(SystemExit, match="run --cfg/--help/--info as plain"):  # rank 1 would wait for a run dir forever
        distributed.join_run_dir(["trainer", "--cfg", "job"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torchrun_on_cuda_nccl_with_compile_and_bf16_matches_one_process(tmp_path):
    """NCCL for the gradients, gloo for the CPU stop flags, DDP under CUDA graphs: one rank
    per GPU (on a one-GPU machine, a world of one still runs every DDP code path)."""
    from trainer.run import run

    n = min(torch.cuda.device_count(), 2)
    args = [*DDP, f"trainer.batch_size={2 * n}", "trainer.deterministic=false", "trainer.device=cuda",
            "precision=amp_bf16", "compile=reduce_overhead", "model=conv"]  # fmt: skip
    run(compose_cfg(*args), tmp_path / "one")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        "-m",
        "trainer",
        *args,
        f"hydra.run.dir={tmp_path / 'ddp'}",
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    want, got = scalars(tmp_path / "one" / "tb" / "train"), scalars(tmp_path / "ddp" / "tb" / "train")
    assert [v for _, v in got["loss/total"]] == pytest.approx([v for _, v in want["loss/total"]], rel=0.05)  # bf16
