"""Hyperparameter sweeps over Optuna: the space, the engine, the report."""
