"""Performance switches and sweeps: each switch is correct, the sweep report is complete."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os

import pytest
import torch

from tests.conftest import ROOT, TINY, cli, compose_cfg, summary_json, tiny
from tests.helpers import poison_step, train_quietly
from trainer.loop.engine import train_step
from trainer.placement import ISA_CAPS, ShapeGuard, isolate_compile_cache
from trainer.run import assemble
from trainer.run_state import TIME_PARTS

SWEEP_TINY = [*TINY, "trainer.steps_per_epoch=6", "trainer.warmup_steps=2", "trainer.log_every=2"]


def _report(sweep_dir):
    proc = __import__("subprocess").run(
        [__import__("sys").executable, "-m", "sweeps.report", str(sweep_dir)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    with open(sweep_dir / "report.csv") as f:
        return list(csv.DictReader(f)), proc.stdout


def test_precision_sweep_on_cpu_and_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    # the preset's grid with compile fixed to eager: 3 precisions x 2 matmul x 2 cudnn.benchmark
    cli("+sweep=precision", "compile=none", *SWEEP_TINY, f"hydra.sweep.dir={sweep}", check=True, timeout=600)
    rows, printed = _report(sweep)
    assert len(rows) == 12
    assert {r["run"].split(",")[0].removesuffix(" (baseline)") for r in rows} == {
        "precision=amp_bf16", "precision=amp_fp16", "precision=fp32"
    }  # fmt: skip
    for r in rows:
        assert r["status"] == "completed"
        for column in ("samples/s", "step ms", "peak MB", "warm-up s", "best si_sdr"):
            float(r[column])  # a number in every row
        assert r["speedup"].endswith("x")
    baseline = [r for r in rows if r["run"].endswith("(baseline)")]
    assert len(baseline) == 1 and baseline[0]["speedup"] == "1.00x" and "precision=fp32" in baseline[0]["run"]
    for name in ("report.md", "report.html", "throughput.png", "curves.png"):
        assert (sweep / name).stat().st_size > 0
    html = (sweep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # self-contained
    assert "precision=amp_bf16" in printed


def test_report_survives_failed_and_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "model._target_=models.LSTMEnhancer,tests.helpers.Boom", *SWEEP_TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0  # Hydra reports the failed job at the end, after running both
    rows, _ = _report(sweep)
    by_model = {r["run"]: r for r in rows}
    good = next(v for k, v in by_model.items() if "LSTMEnhancer" in k)
    bad = next(v for k, v in by_model.items() if "Boom" in k)
    assert good["status"] == "completed" and float(good["samples/s"]) > 0
    assert bad["status"].startswith("failed") and "boom" in bad["status"] and bad["samples/s"] == "—"
    # a job still running (no summary yet) is listed, not dropped
    (sweep / good["run"].removesuffix(" (baseline)") / "summary.json").unlink()
    rows, _ = _report(sweep)
    assert sorted(r["status"].split(":")[0] for r in rows) == ["failed", "unfinished"]


def test_summary_records_speed_memory_target_and_environment(tmp_path):
    run_dir = tmp_path / "run"
    cli(*SWEEP_TINY, "trainer.target=-100", f"hydra.run.dir={run_dir}", check=True)
    s = summary_json(run_dir)
    for key in ("samples_per_s", "step_ms", "data_wait", "warmup_seconds", "compile_seconds"):
        assert isinstance(s[key], float) and s[key] >= 0, key
    assert s["samples_per_s"] > 0 and s["step_ms"] > 0
    assert s["peak_memory_mb"] > 50  # the process's peak RSS: Python and torch alone take more
    assert s["time_to_target"] > 0 and s["steps_to_target"] == 6  # reached at the first validation
    assert s["device"] and {"torch", "torchaudio", "hydra", "numpy", "python"} <= set(s["versions"])
    # where the time went: every part measured, and the parts inside the job add up to no more than it
    spent = s["seconds"]
    assert tuple(spent) == TIME_PARTS
    assert all(v >= 0 for v in spent.values()) and spent["steps"] > 0 and spent["startup"] > 0
    inside = sum(
        v for k, v in spent.items() if k not in ("startup", "slow_metrics")
    )  # slow metrics are part of validation
    assert inside <= s["job_seconds"] and spent["slow_metrics"] <= spent["validation"]
    history = json.loads((run_dir / "history.json").read_text())
    assert all(h["seconds"] > 0 for h in history)


def test_fp16_skipped_step_does_not_advance_the_schedule(tmp_path):
    cfg = tiny("precision=amp_fp16", "trainer.epochs=1", "trainer.steps_per_epoch=5")
    parts = assemble(cfg)
    poison_step(parts, 2)
    state = train_quietly(parts, cfg.trainer, tmp_path)
    taken = max(int(s["step"]) for s in parts.optim.optimizer.state.values())  # Adam counts real updates
    assert state.step == 5 and state.status == "completed"  # a skipped fp16 step is not divergence
    assert taken <= 4  # the poisoned step (and any overflow) was skipped...
    assert parts.optim.schedule.scheduler.last_epoch == taken  # ...and the LR schedule moved only with real updates


def test_accumulation_matches_one_big_batch():
    """Four micro-batches of 2 make the update of one batch of 8. Plain SGD moves each
    weight by lr times its gradient, so a micro-batch loss not divided by grad_accum (or
    divided twice) shows as an update of the wrong size (Adam's first step, lr * sign(g),
    would hide it)."""

    def update(batch_size, accum):
        cfg = compose_cfg(*TINY, f"trainer.batch_size={batch_size}", f"trainer.grad_accum={accum}",
                          "trainer.grad_clip=null", "optim=sgd", "optim.momentum=0", "optim.nesterov=false",
                          "optim.weight_decay=0")  # fmt: skip
        parts = assemble(cfg)
        before = [p.detach().clone() for p in parts.network.raw.parameters()]
        parts.feed.sampler.set_position(0, 0)
        it = iter(parts.feed.train_loader)
        out = train_step(parts, [next(it) for _ in range(accum)], None)
        return [p.detach() - b for p, b in zip(parts.network.raw.parameters(), before)], out

    (one, out1), (four, out4) = update(8, 1), update(2, 4)
    assert sum(float(d.abs().sum()) for d in one) > 0  # the step moved the weights
    for a, b in zip(one, four):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-8)
    # what the step reports: the mean loss and terms of the whole batch, and its gradient norm
    torch.testing.assert_close(out4.loss, out1.loss, rtol=1e-4, atol=0)
    assert set(out4.terms) == set(out1.terms) and len(out1.terms) >= 1
    for name in out1.terms:
        torch.testing.assert_close(out4.terms[name], out1.terms[name], rtol=1e-4, atol=0)
    torch.testing.assert_close(out4.grad_norm, out1.grad_norm, rtol=1e-3, atol=0)
    # and both are -lr times the gradient of the batch's mean loss, taken here by hand (a loss
    # scaled the same wrong way on both paths would pass the comparison above)
    cfg = compose_cfg(*TINY, "trainer.batch_size=8")
    parts = assemble(cfg)
    parts.feed.sampler.set_position(0, 0)
    inputs, target = parts.task.pair(next(iter(parts.feed.train_loader)))
    total, terms = parts.optim.loss(parts.network.raw(inputs), target)
    torch.testing.assert_close(out1.loss, total.detach(), rtol=1e-5, atol=0)
    for name, value in terms.items():
        torch.testing.assert_close(out4.terms[name], value.detach(), rtol=1e-4, atol=0)
    grads = torch.autograd.grad(total, list(parts.network.raw.parameters()))
    lr = compose_cfg("optim=sgd").optim.lr
    for a, g in zip(one, grads):
        torch.testing.assert_close(a, -lr * g, rtol=1e-3, atol=1e-7)


def test_under_ddp_every_micro_batch_but_the_last_skips_the_gradient_all_reduce():
    """Gradient accumulation under DistributedDataParallel: the first micro-batches run
    inside `no_sync`, the last one outside it, so each optimizer step all-reduces once.
    A stand-in wrapper records, at each backward, whether it ran inside `no_sync`."""
    parts = assemble(compose_cfg(*TINY, "trainer.batch_size=2", "trainer.grad_accum=4"))
    inside, synced = [False], []

    class Wrapper:
        @contextlib.contextmanager
        def no_sync(self):
            inside[0] = True
            try:
                yield
            finally:
                inside[0] = False

    parts.network.ddp = Wrapper()  # type: ignore[assignment]
    first = next(parts.network.raw.parameters())
    first.register_hook(lambda grad: synced.append(not inside[0]))
    parts.feed.sampler.set_position(0, 0)
    it = iter(parts.feed.train_loader)
    train_step(parts, [next(it) for _ in range(4)], None)
    assert synced == [False, False, False, True]


def test_profiler_writes_a_trace_and_prints_top_operators(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(
        *TINY,
        "profile=true",
        "profiler.wait=1",
        "profiler.warmup=1",
        "profiler.active=2",
        f"hydra.run.dir={run_dir}",
        check=True,
    )
    traces = list((run_dir / "tb" / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(str(e.get("name", "")).startswith("aten::") for e in events)
    assert "Self CPU" in proc.stdout + proc.stderr  # the top-operator table went to the log


def test_shape_guard_warns_once_when_shapes_change(caplog):
    guard = ShapeGuard(active=True)
    with caplog.at_level(logging.WARNING):
        for n in (100, 100, 90, 80):
            guard.check({"noisy": torch.zeros(2, n)})
    assert sum("shapes vary" in r.message for r in caplog.records) == 1
    quiet = ShapeGuard(active=False)
    quiet.check({"noisy": torch.zeros(2, 1)})
    quiet.check({"noisy": torch.zeros(2, 3)})
    assert not quiet.warned


def test_a_process_with_capped_cpu_kernels_compiles_into_its_own_cache(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    for k in (*ISA_CAPS, "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    isolate_compile_cache()  # uncapped: inductor's own default
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    dirs = {}
    for cap in ("avx2", "avx512"):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", cap)
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        isolate_compile_cache()
        dirs[cap] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert len({default_cache_dir(), *dirs.values()}) == 3  # one cache per kernel set
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    isolate_compile_cache()  # the user's own choice stands
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)


def test_compiled_model_trains_on_cpu(tmp_path):
    run_dir = tmp_path / "run"
    cli(
        *TINY,
        "model=conv",
        "compile=default",
        "trainer.epochs=1",
        "trainer.warmup_steps=1",
        f"hydra.run.dir={run_dir}",
        check=True,
        timeout=600,
    )
    s = summary_json(run_dir)
    # dynamo captured the model's graphs (forward, and backward through AOTAutograd)
    assert s["status"] == "completed" and s["compile_graphs"] >= 1
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in last["model"])  # checkpoints hold the plain model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "precision,compile_mode", [("amp_bf16", "none"), ("amp_fp16", "none"), ("amp_bf16", "reduce_overhead")]
)
def test_cuda_precision_and_cuda_graphs(tmp_path, precision, compile_mode):
    """On a GPU: a reduced-precision run lands within the spread of two fp32 runs (cuDNN
    autotuning off and on: the fp32 rows' own nondeterminism) plus a margin, and with
    reduce-overhead the graphs are captured and no CUDA-graph capture is skipped."""
    runs = {}
    for name, overrides in (
        ("fp32", ["precision=fp32", "compile=none"]),
        ("fp32-tuned", ["precision=fp32", "compile=none", "precision.cudnn_benchmark=true"]),
        ("asked", [f"precision={precision}", f"compile={compile_mode}"]),
    ):
        run_dir = tmp_path / name
        cli(*SWEEP_TINY, "model=conv", *overrides, "trainer.device=cuda", f"hydra.run.dir={run_dir}", check=True,
            timeout=600)  # fmt: skip
        runs[name] = summary_json(run_dir)
    s = runs["asked"]
    assert s["status"] == "completed" and s["peak_memory_mb"] > 0
    fp32 = sorted(runs[k]["best"] for k in ("fp32", "fp32-tuned"))
    assert fp32[0] - 0.5 - (fp32[1] - fp32[0]) <= s["best"] <= fp32[1] + 0.5 + (fp32[1] - fp32[0])
    if compile_mode != "none":
        assert s["compile_graphs"] >= 1 and s["cudagraph_skips"] == 0
