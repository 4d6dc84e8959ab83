"""Deliberate bugs, one at a time: each is applied to the code, the tests that claim to
cover it run, they must fail, and the code is restored (also on Ctrl-C).

    python -m tests.deliberate_bugs          # prints CAUGHT or SURVIVED per bug; exit 1 if any survived

Each row is a bug a review once found that the suite let through; keep the list growing
when a test is written for a claim that nothing checked."""

# ruff: noqa: E501  (the rows quote code verbatim)
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (name, file, the correct code, the bug, the tests that must fail)
BUGS = [
    (
        "accum x2",
        "trainer/loop/engine.py",
        "scaler.scale(total / accum).backward()",
        "scaler.scale(total / accum * 2).backward()",
        ["tests/test_perf.py::test_accumulation_matches_one_big_batch"],
    ),
    (
        "accum /3",
        "trainer/loop/engine.py",
        "scaler.scale(total / accum).backward()",
        "scaler.scale(total / accum / 3).backward()",
        ["tests/test_perf.py::test_accumulation_matches_one_big_batch"],
    ),
    (
        "hard cut",
        "trainer/inference/enhance.py",
        "            w[:lead] = crossfade(lead)",
        "            w[:lead] = (torch.arange(lead) >= lead // 2).float()",
        ["tests/test_enhance.py::test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam"],
    ),
    (
        "hard cut tail",
        "trainer/inference/enhance.py",
        "            w[chunk - tail :] = 1 - crossfade(tail)",
        "            w[chunk - tail :] = (torch.arange(tail) < tail // 2).float()",
        ["tests/test_enhance.py::test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam"],
    ),
    (
        "BN no float",
        "models/layers.py",
        "return super().forward(x.float()).to(x.dtype)",
        "return super().forward(x).to(x.dtype)",
        ["tests/test_step_choices.py"],
    ),
    (
        "si_sdr no cast",
        "losses/functional.py",
        "    estimate = estimate.float()\n    reference = reference.float()\n",
        "",
        ["tests/test_losses.py"],
    ),
    (
        "l1 no cast",
        "losses/waveform.py",
        "(estimate.float() - target.float())",
        "(estimate - target)",
        ["tests/test_losses.py"],
    ),
    (
        "mrstft no guard",
        "losses/spectral.py",
        "        with torch.autocast(estimate.device.type, enabled=False):\n            estimate, target = estimate.float(), target.float()\n",
        "        if True:\n            pass\n",
        ["tests/test_losses.py"],
    ),
    (
        "plateau never",
        "trainer/schedules.py",
        'ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold), "epoch"',
        "ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold), None",
        ["tests/test_options.py"],
    ),
    (
        "onecycle x10",
        "trainer/schedules.py",
        'peaks = [group["lr"] for group in optimizer.param_groups]',
        'peaks = [10 * group["lr"] for group in optimizer.param_groups]',
        ["tests/test_options.py"],
    ),
]


def main() -> int:
    survived = 0
    for name, path, correct, bug, tests in BUGS:
        file = ROOT / path
        text = file.read_text()
        assert correct in text, f"{name}: {path} no longer holds the code this bug changes"
        file.write_text(text.replace(correct, bug, 1))
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                  cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        finally:
            file.write_text(text)
        caught = proc.returncode != 0
        survived += not caught
        print(f"{name:16s} {'CAUGHT' if caught else 'SURVIVED'}  {proc.stdout.strip().splitlines()[-1:]}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
