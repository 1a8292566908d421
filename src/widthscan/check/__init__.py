"""Width consistency of a user's own model in one call: roles, coordinate check, dynamics.

    import widthscan as ws
    result = ws.check.check(my_factory, base_width=64, widths=[64, 128, 256])
    print(result)        # roles table, per-layer slopes and verdicts, hints
    result.ok            # True when width-consistent
"""

from widthscan.check.data import UsageError
from widthscan.check.result import CheckResult
from widthscan.check.run import WIDTHS, check
from widthscan.check.verdict import TOL

__all__ = ["TOL", "WIDTHS", "CheckResult", "UsageError", "check"]
