"""sweeps/gpu_goals.py on the committed H200 report: the figures issue 22 quotes."""

from __future__ import annotations

from pathlib import Path

from sweeps import gpu_goals

REPORT = Path(__file__).resolve().parents[1] / "docs" / "gpu-h200-2026-11-26" / "report.csv"


def test_goals_read_off_the_h200_report(capsys):
    rows = gpu_goals.read(REPORT)
    assert len(rows) == 11  # the two profiled rows are not timed
    found = {goal: (measured, met) for goal, _, measured, met in gpu_goals.goals(rows)}
    assert found["bf16 + compile vs fp32 eager"][0].startswith("1.97x (compile=max_autotune")
    assert found["bf16 eager vs fp32 eager"][0].startswith("0.69x")
    assert found["data wait at the fastest setting"][0].startswith("3.8%")
    assert found["MFU"][0] == "2.7% to 12.2%"
    assert [met for _, met in found.values()] == [False, False, False, False, True]
    assert gpu_goals.main([str(REPORT)]) == 0
    assert "| bf16 + compile vs fp32 eager | >= 2.5x | 1.97x" in capsys.readouterr().out
