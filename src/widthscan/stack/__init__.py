"""K members of one network run as one: the stacked core (``Stack``) that training and probes
share, the batched backends and the registry that picks one per network (see ``backends``)."""

from widthscan.stack.backends import BACKENDS, Backend, find, register
from widthscan.stack.core import Stack

__all__ = ["BACKENDS", "Backend", "Stack", "find", "register"]
