"""The training loop (`engine.train`, `engine.train_step`) and the components that decide
their own cadence: metrics window, validation, stop policy, checkpointer, time ledger,
gradient diagnostics, loggers, graceful stop on signals."""
