"""Benchmark: what the loader pays per sample, with the data finished in the loader or on the device.

    python -m benchmarks.device_data [--batch 256] [--augment none default strong] [--files 200]

For the embedded synthetic data (the default config's corpus) and a `folder_mix` corpus
written to a temporary folder, with each augmentation option, it times the two stages of
a training batch (trainer/data/staged.py) in this process:

* `trainer.data_on_device=false` (the default): the loader draws, reads, crops, mixes and
  augments; the row is its CPU time per sample.
* `trainer.data_on_device=true`: the loader only draws and reads (its CPU time per sample),
  and the training device finishes the batch after the copy (device time per sample,
  synchronised; CUDA when there is one, else the CPU).

"supply" is what one loader process can feed, in samples/s (1 / loader time). Batches
are the training batch size; one torch thread, as in a loader worker. Markdown output;
nothing here is a test. The GPU figures come from `benchmarks/recipes/gpu_precision_sweep.sh`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import write_corpus
from trainer.data.folder import FolderMix
from trainer.data.staged import training_set
from trainer.data.synthetic import SyntheticSpeech
from trainer.loop.validation import to_device
from trainer.provenance import cpu

CONF = Path(__file__).resolve().parents[1] / "conf"
SR = 16000


def augment(option: str):
    cfg = OmegaConf.create({"data": {"sample_rate": SR}, "trainer": {"seed": 0}})
    cfg.augment = OmegaConf.load(CONF / "augment" / f"{option}.yaml")
    return instantiate(cfg.augment)


def seconds_per_batch(fn, batches: int, sync) -> float:
    fn(0)  # warm-up: caches, the corpus on the device, FFT plans
    sync()
    start = time.perf_counter()
    for i in range(1, batches + 1):
        fn(i)
    sync()
    return (time.perf_counter() - start) / batches


def measure(source, aug, batch: int, batches: int, device: torch.device) -> tuple[float, float, float]:
    """(loader us/sample finishing in the loader, loader us/sample with data on the
    device, device us/sample of the finish)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    keys = lambda i: list(range(i * batch, (i + 1) * batch))  # noqa: E731
    finished, _ = training_set(source, aug, on_device=False)
    staged, finish = training_set(source, aug, on_device=True)
    collate = torch.utils.data.default_collate
    in_loader = seconds_per_batch(lambda i: collate(finished.__getitems__(keys(i))), batches, sync)
    drawn = seconds_per_batch(lambda i: staged.__getitems__(keys(i)), batches, sync)
    ready = [to_device(staged.__getitems__(keys(i)), device) for i in range(batches + 1)]
    on_device = seconds_per_batch(lambda i: finish(dict(ready[i])), batches, sync)
    return tuple(1e6 * s / batch for s in (in_loader, drawn, on_device))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--augment", nargs="+", default=["none", "default", "strong"])
    parser.add_argument("--files", type=int, default=200, help="folder_mix corpus: speech and noise files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-device-data-") as tmp:
        write_corpus(Path(tmp), args.files)
        sources = {
            "synthetic": SyntheticSpeech(cache_dir=str(Path("outputs/cache"))),
            "folder_mix": FolderMix(str(Path(tmp) / "speech"), str(Path(tmp) / "noise"), cache_dir=None),
        }
        for name, source in sources.items():
            for option in args.augment:
                rows.append((name, option, *measure(source, augment(option), args.batch, args.batches, device)))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu()["model"]
    print(f"Data stages per sample, batch {args.batch} x 1 s, loader on {cpu()['model']} (1 thread), "
          f"device: {where}\n")  # fmt: skip
    print("| data | augment | in the loader: loader us | supply/s | on the device: loader us | supply/s | device us |")
    print("|---|---|---|---|---|---|---|")
    for name, option, loader, drawn, dev in rows:
        supply, ingredients = 1e6 / loader, 1e6 / drawn
        print(f"| {name} | {option} | {loader:.1f} | {supply:.0f} | {drawn:.1f} | {ingredients:.0f} | {dev:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
