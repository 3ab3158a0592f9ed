"""Serving trained models outside the training code: loading exports
(`load`, jax and numpy only), the HTTP / WebSocket server and its client."""

from hpe_jax.serving.exported import ExportError
from hpe_jax.serving.exported import ExportedPredictor
from hpe_jax.serving.exported import load

__all__ = ['ExportError', 'ExportedPredictor', 'load']
