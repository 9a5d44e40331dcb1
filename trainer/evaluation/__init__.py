"""Evaluation: passes of a model over a split, saved eval predictions, per-class figures, and evaluating a finished
run folder."""
