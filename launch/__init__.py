"""Launchers: ablation sweeps (`launch.sweep`) and multi-process runs on this
machine (`launch.local`), a Cloud TPU VM slice (`launch.tpu_pod`) or a SLURM
GPU cluster (`launch.slurm`)."""
