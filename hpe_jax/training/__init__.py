"""Training: the loop and its parts (state, optimizers, checkpoints, logs)."""
