"""sweeps/gpu_goals.py on the committed H200 report: each GPU throughput goal (bf16 + compile
>= 2.5x fp32 eager, bf16 eager >= 1.0x, data wait <= 2%, MFU >= 25%, fp32's quality) beside
its measured figure, and whether it is met."""

from __future__ import annotations

import csv
from pathlib import Path

from sweeps import gpu_goals

REPORT = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "gpu-h200-2026-11-26" / "report.csv"


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


def test_folder_mix_rows_get_their_own_data_wait_and_stay_out_of_the_speedups(tmp_path):
    header = ["run", "status", "samples/s", "speedup", "step ms", "data wait", "peak MB", "warm-up s", "compile s",
              "best si_sdr", "MFU"]  # fmt: skip
    rows = [
        ["compile=none,precision=fp32 (baseline)", "completed", "1000", "1.00x", "1", "1.0%", "1", "0", "0", "7.0",
         "5%"],
        ["compile=reduce_overhead,precision=amp_bf16,trainer.data_on_device=true", "completed", "3000", "3.00x", "1",
         "0.5%", "1", "1", "1", "7.0", "15%"],
        ["compile=reduce_overhead,data=folder_mix,precision=amp_bf16", "completed", "9000", "9.00x", "1", "30.0%",
         "1", "1", "1", "2.0", "45%"],
    ]  # fmt: skip
    with open(tmp_path / "report.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    found = {goal: (measured, met) for goal, _, measured, met in gpu_goals.goals(gpu_goals.read(tmp_path))}
    assert found["bf16 + compile vs fp32 eager"] == ("3.00x (compile=reduce_overhead,precision=amp_bf16,"
                                                     "trainer.data_on_device=true)", True)  # fmt: skip
    assert (
        found["data wait at the fastest setting"][0].startswith("0.5% (")
        and found["data wait at the fastest setting"][1]
    )
    assert found["data wait at the fastest setting (folder_mix)"] == (
        "30.0% (compile=reduce_overhead,data=folder_mix,precision=amp_bf16)", False)  # fmt: skip
    assert found["MFU"][0] == "5.0% to 15.0%"  # the folder row's figures are not the conv goal's
    # one fp32 row has no spread to judge a quality difference against: not judged
    assert found["quality (si_sdr) vs fp32 eager"] == ("worst +0.000; one fp32 row, no spread", None)
