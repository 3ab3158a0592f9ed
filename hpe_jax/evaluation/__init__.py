"""Metrics and the evaluation loop every task's evaluator shares."""
