"""K members of one network run as one: the batched backends and the registry that picks
one per network (see ``backends``)."""

from widthscan.stack.backends import BACKENDS, Backend, find, register

__all__ = ["BACKENDS", "Backend", "find", "register"]
