"""Train audio models with Hydra sweeps in plain PyTorch.

A map of the package, from the entry point down; imports run this way only
(tests/test_architecture.py keeps it so):

    __main__.py     `python -m trainer`: compose the config, run one job
    launch/         Hydra start-up and callbacks
    experiments/    identity-keyed run folders, launch plans, locks, the runs index
    run.py          one run from start to finish: build, resume, train, summarise
    inference/      what uses a checkpoint: evaluate, enhance, export, DNSMOS
    loop/           the training loop and the components that own their cadence
    search/         the job's side of an Optuna search
    data/           embedded synthetic data, audio folders, augmentation, loaders
    the rest        what every folder uses: config schemas (config.py, importing nothing
                    from the project), build.py (the one instantiate site), tasks,
                    metrics, schedules, placement (the performance switches), checkpoint,
                    identity, run state, summary, provenance, files, distributed

`evaluate.py`, `enhance.py`, `export.py` and `runs.py` are the `python -m trainer.<tool>`
entry points of inference/ and experiments/.
"""
