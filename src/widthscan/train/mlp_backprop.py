"""Moved to ``widthscan.stack.mlp_backprop`` (the MLP backend: forward, backward, HVP)."""

from widthscan.stack.mlp_backprop import Saved, backward, forward, loss_and_grad, supports

__all__ = ["Saved", "backward", "forward", "loss_and_grad", "supports"]
