"""The one training loop and what it stands on: the setup a run is built from, tasks (classification here), the
micro-batches, the optimizer and schedule, meters and the log, the loop state, checkpoints and preemption."""
