"""Assertions for a user's own test suite.

    from widthscan.testing import assert_width_consistent

    def test_my_model_transfers():
        assert_width_consistent(my_factory, base_width=32, widths=[32, 64, 128])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
from torch import nn

from widthscan.check import TOL, check


def assert_width_consistent(
    factory: Callable[[int], nn.Module],
    base_width: int,
    widths: Sequence[int] = (32, 64, 128, 256),
    param: str = "mup",
    optimizer: str = "sgd",
    steps: int = 3,
    tol: float = TOL,
    *,
    lr: float | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    dynamics_steps: int = 10,
    task: str | None = None,
    input_shape: Sequence[int] | None = None,
    roles: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Run ``widthscan.check.check`` and raise AssertionError (with the roles and per-layer
    tables and the likely cause) unless ``factory`` is width-consistent under ``param``.

    ``tol`` is the largest tolerated |log-log slope - prediction| of a layer's activation
    scale against width. Returns the per-layer table (``CheckResult.frame()``) on success.
    """
    result = check(factory, base_width, widths, param, optimizer, lr, seeds, steps,
                   dynamics_steps, task, input_shape, roles, tol)
    if not result.ok:
        raise AssertionError(f"not width-consistent: {result.cause()}\n\n{result.text()}")
    return result.frame()
