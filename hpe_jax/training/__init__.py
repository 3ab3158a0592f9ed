"""Training: the loop, the train state, optimizers, losses and the base config."""
