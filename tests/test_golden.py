"""Refactors change no result: a fixed short job of each task reproduces its golden record
(tests/golden/, written by `python -m tests.golden` before a refactor, rewritten only when a
change is meant to move the results)."""

from __future__ import annotations

import json

import pytest

from tests.golden import HERE, JOBS, record

# Bit-identical on the CPU the records were taken on. Another CPU's kernels (AVX2 instead of
# AVX-512, another oneDNN path) round differently, and 8 optimizer steps carry that forward:
# the tolerance covers it and nothing more (a changed formula moves a loss by far more).
RTOL = 1e-4
# The input's log-spectral distance takes logs of the empty high band of the band-limited
# input, where rounding is all there is: 4e-4 apart between a Xeon (AMX) and a Zen 4. It does
# not depend on the model, so no refactor of the loop can move it.
LOOSE = {"metrics/lsd_input": 2e-3}


@pytest.mark.parametrize("task", sorted(JOBS))
def test_a_fixed_job_reproduces_its_golden_record(task, tmp_path):
    want = json.loads((HERE / f"{task}.json").read_text())
    got = record(task, tmp_path / task)
    assert got["status"] == want["status"] == "completed"
    assert got["overrides"] == want["overrides"]
    assert len(got["train_loss"]) == len(want["train_loss"])
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=RTOL)
    assert sorted(got["final_val"]) == sorted(want["final_val"])
    for tag, value in want["final_val"].items():
        if not tag.startswith("perf/"):
            assert got["final_val"][tag] == pytest.approx(value, rel=LOOSE.get(tag, RTOL), abs=1e-6), tag
