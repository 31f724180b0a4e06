"""The runtime: storage, study creation, workers that claim and tell trials, the launcher,
signals, heartbeat and retries (Optuna's internals sit behind `optuna_compat`)."""
