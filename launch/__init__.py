"""Launchers: ablation sweeps (`launch.sweep`); multi-host launchers to come."""
