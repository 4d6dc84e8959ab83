"""Golden records of a fixed short job of each task: the per-step training losses and the
final validation metrics, taken before a refactor so that tests/test_golden.py can show
the refactor changed nothing.

    python -m tests.golden           # rewrite the records (only when a change is meant to move them)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.conftest import TINY, TINY_TRANSDUCER, compose_cfg, scalars

HERE = Path(__file__).resolve().parent / "golden"
# Deterministic kernels and one thread, so a record depends on the code and the CPU's kernels only.
FIXED = ["trainer.deterministic=true", "trainer.epochs=2", "trainer.steps_per_epoch=4"]
JOBS = {
    "denoise": [*TINY, *FIXED],
    # L1 alone: the multi-resolution STFT loss takes logs of the empty high band, where other
    # kernels' rounding moves a step by 1e-3 (a test of refactors, not of that loss)
    "superres": [*TINY, "task=superres", "model=conv", "model.hidden=8", "loss=l1", *FIXED],
    "transducer": [*TINY_TRANSDUCER, *FIXED],
}


def record(task: str, run_dir: Path) -> dict:
    """Run the task's job in this process; what the golden file holds."""
    import torch

    from trainer.run import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(compose_cfg(*JOBS[task]), run_dir)
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((run_dir / "summary.json").read_text())
    val = scalars(run_dir / "tb" / "val")
    return {
        "overrides": JOBS[task],
        "status": summary["status"],
        "train_loss": [v for _, v in scalars(run_dir / "tb" / "train")["loss/total"]],
        "final_val": {tag: series[-1][1] for tag, series in sorted(val.items())},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for task in JOBS:
            path = HERE / f"{task}.json"
            path.write_text(json.dumps(record(task, Path(tmp) / task), indent=1) + "\n")
            print("wrote", path)


if __name__ == "__main__":
    main()
    sys.exit(0)
