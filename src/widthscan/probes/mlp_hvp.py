"""Moved to ``widthscan.stack.mlp_hvp`` (the MLP backend: forward, backward, HVP)."""

from widthscan.stack.mlp_hvp import mlp_hvp, supports

__all__ = ["mlp_hvp", "supports"]
