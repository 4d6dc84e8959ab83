"""Benchmark: the training step under each choice for a faster reduced-precision step.

    python -m benchmarks.step [--steps 20] [--blocks 5] [--variant "OVERRIDES" ...] [-- overrides...]

Times `trainer.loop.engine.train_step` (the real step: autocast, loss, backward, clipping,
optimizer) on batches held on the device, so the figure is the model's and the
optimizer's, not the loader's. Each variant is a set of overrides on the run's config;
the defaults are the candidates for a faster reduced-precision step on the conv U-Net:

* precision fp32 against bf16 autocast;
* `model.channels_last`: 1-D convs as 2-D channels-last convs (no cuDNN layout transposes);
* `model.norm_float32`: BatchNorm in float32 under autocast (cuDNN's kernels);
* `optim.fused`: one fused optimizer kernel instead of a loop over the parameters;
* all of them together, and a larger batch (`--batch2`).

Variants run in alternating blocks (fp32, bf16, ..., fp32, bf16, ...) so that a drift in
machine speed hits all of them; a variant's figure is its median block. Prints Markdown
with samples/s, each variant against fp32 eager at the same batch, and MFU where the
device's peak is known (sweeps/report.py). Nothing here is a test; on CPU the figures
describe the CPU (named in the output), not a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from omegaconf import OmegaConf

from sweeps.report import flops_per_example, peak_flops
from trainer.launch.startup import compose
from trainer.loop.engine import train_step
from trainer.loop.validation import to_device
from trainer.provenance import cpu
from trainer.run import assemble

BASE = ["precision=fp32"]
CHOICES = {
    "fp32 eager": [],
    "bf16 eager": ["precision=amp_bf16"],
    "bf16 + channels_last": ["precision=amp_bf16", "model.channels_last=true"],
    "bf16 + norm_float32": ["precision=amp_bf16", "model.norm_float32=true"],
    "bf16 + fused optimizer": ["precision=amp_bf16", "optim.fused=true"],
    "bf16 + all three": [
        "precision=amp_bf16",
        "model.channels_last=true",
        "model.norm_float32=true",
        "optim.fused=true",
    ],
    "fp32 + channels_last + fused": ["model.channels_last=true", "optim.fused=true"],
}


class Variant:
    """One choice: its parts (built once) and a few batches already on the device."""

    def __init__(self, name: str, overrides: list[str]):
        self.name, self.overrides = name, overrides
        self.cfg = compose(["trainer.num_workers=0", "trainer.progress=none", *overrides])
        self.parts = assemble(self.cfg)
        feed, device = self.parts.feed, self.parts.place.device
        feed.sampler.set_position(0, 0)
        loader = iter(feed.train_loader)
        self.batches = [feed.finish(to_device(next(loader), device)) for _ in range(4)]
        self.batch_size = self.cfg.trainer.batch_size
        self.times: list[float] = []

    def block(self, steps: int) -> None:
        sync = torch.cuda.synchronize if self.parts.place.device.type == "cuda" else lambda: None
        sync()
        start = time.perf_counter()
        for i in range(steps):
            train_step(self.parts, [self.batches[i % len(self.batches)]], self.cfg.trainer.grad_clip)
        sync()  # the step only queues device work: wait for it
        self.times.append((time.perf_counter() - start) / steps)

    def samples_per_second(self) -> float:
        return self.batch_size / statistics.median(self.times)

    def mfu(self) -> float | None:
        config = OmegaConf.to_container(self.cfg, resolve=True)
        device = self.parts.place.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        flops, peak = flops_per_example(config), peak_flops(name, config)
        return flops * self.samples_per_second() / peak if flops and peak else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant (one more warms up)")
    parser.add_argument("--batch2", type=int, default=0, help="also run fp32 eager and bf16 + all at this batch")
    parser.add_argument("--variant", action="append", default=[], help='"name=OVERRIDES" (space-separated)')
    parser.add_argument("overrides", nargs="*", help="overrides for every variant, e.g. model.hidden=64")
    args = parser.parse_args(argv)
    choices = dict(CHOICES)
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        choices[name] = overrides.split()
    if args.batch2:
        b2 = f"trainer.batch_size={args.batch2}"
        choices[f"fp32 eager, batch {args.batch2}"] = [b2]
        choices[f"bf16 + all three, batch {args.batch2}"] = [*choices["bf16 + all three"], b2]
    variants = [Variant(name, [*BASE, *args.overrides, *extra]) for name, extra in choices.items()]
    for block in range(args.blocks + 1):  # block 0 warms up (kernel selection, compilation) and is dropped
        for v in variants:
            v.block(args.steps)
            if block == 0:
                v.times.clear()

    device = variants[0].parts.place.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu()['model']} (CPU)"
    print(f"## Training step by choice on {where}\n")
    print(f"{type(variants[0].parts.network.raw).__name__}, overrides: {' '.join(args.overrides) or 'none'}; "
          f"{args.blocks} blocks of {args.steps} steps, median block; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")  # fmt: skip
    print("| variant | batch | step ms | samples/s | vs fp32 eager | MFU |\n|---|---|---|---|---|---|")
    bases = {v.batch_size: v for v in variants if v.name.startswith("fp32 eager")}  # same batch: same work
    for v in variants:
        base, mfu = bases.get(v.batch_size, variants[0]), v.mfu()
        print(f"| {v.name} | {v.batch_size} | {1e3 * statistics.median(v.times):.1f} | {v.samples_per_second():.0f} "
              f"| {v.samples_per_second() / base.samples_per_second():.2f}x | "
              f"{'—' if mfu is None else f'{100 * mfu:.1f}%'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
