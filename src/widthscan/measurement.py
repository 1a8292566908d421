"""The value every probe returns: named axes after a leading member axis."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Measurement(NamedTuple):
    """One probe variable for all K members of a run.

    dims: names of the axes after the member axis, e.g. ("example", "output").
    values: array of shape (K, *sizes).
    coords: optional coordinate values for some of those dims (e.g. layer names).
    """

    dims: tuple[str, ...]
    values: np.ndarray
    coords: dict[str, np.ndarray] | None = None
