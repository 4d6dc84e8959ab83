"""Sweeps as experiments: where each job's folder is, what a launch does with an existing
run (the plan), the job that locks and records a run, the runs index and its CLI
(`python -m trainer.runs`), and a sweep's manifest."""
