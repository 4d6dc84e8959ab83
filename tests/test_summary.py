"""summary.json: one writer, one reader, a Status that reads and writes as its value."""

from __future__ import annotations

import json

import torch

from trainer import summary
from trainer.run_state import RunState
from trainer.status import Status


def test_status_is_its_value_in_json_logs_and_checkpoints(tmp_path):
    assert json.dumps({"s": Status.EARLY_STOPPED}) == '{"s": "early_stopped"}'
    assert f"{Status.FAILED:8s}|" == "failed  |" and "%s" % Status.PRUNED == "pruned"
    assert [s for s in Status if s.finished] == [Status.COMPLETED, Status.EARLY_STOPPED, Status.PRUNED, Status.DIVERGED]
    assert [s for s in Status if s.bad] == [Status.DIVERGED, Status.INTERRUPTED, Status.FAILED]
    state = RunState(status=Status.INTERRUPTED)
    torch.save(state.to_dict(), tmp_path / "s.pt")  # checkpoints load with weights_only=True
    back = RunState.from_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back.status is Status.INTERRUPTED and not back.finished


def test_a_written_summary_reads_back_and_a_damaged_one_reads_as_none(tmp_path, tiny_run):
    run_dir, on_disk = tiny_run("trainer.epochs=1")
    assert run_dir == tmp_path / "run" and on_disk["status"] == "completed"
    s = summary.read(run_dir)
    assert s["status"] is Status.COMPLETED and s["epochs"] == 1 and s["steps"] == 3
    assert set(s) <= set(summary.Summary.__annotations__), set(s) - set(summary.Summary.__annotations__)  # typed keys
    assert json.loads((tmp_path / "run" / summary.FILE).read_text())["status"] == "completed"
    (tmp_path / "run" / summary.FILE).write_text('{"status": "comp')
    assert summary.read(tmp_path / "run") is None
    (tmp_path / "run" / summary.FILE).write_text('{"status": "exploded"}')
    assert summary.read(tmp_path / "run") is None
    assert summary.read(tmp_path / "nowhere") is None
