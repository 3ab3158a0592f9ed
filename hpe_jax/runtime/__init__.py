"""What training, evaluation and the other commands share at run time.

Sharding over the device mesh, multi-host start-up, preemption, Orbax
checkpoints, workdir storage (local or bucket), the metric writer, a run's
saved config and loading a trained run. Nothing here depends on what a
task computes.
"""
