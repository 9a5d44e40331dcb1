"""Knowledge distillation: tasks over a frozen teacher (logit, feature, token), the KD losses, what a student trains
beside itself, and the teacher cache."""
