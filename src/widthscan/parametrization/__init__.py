"""Width roles and the muP / SP / NTP / mean-field rule table (kept in a table, not on tensors)."""

from widthscan.parametrization.parametrized import (
    Parametrized,
    ScaledModule,
    param_groups,
    parametrize,
    rule_table,
    scale_params,
    scaled_call,
)
from widthscan.parametrization.roles import ROLES, ParamShape, WidthError, infer_roles, infer_shapes
from widthscan.parametrization.rules import OPTIMIZERS, PARAMS, Scales, attention_scale, scales

__all__ = [
    "OPTIMIZERS",
    "PARAMS",
    "ROLES",
    "ParamShape",
    "Parametrized",
    "ScaledModule",
    "Scales",
    "WidthError",
    "attention_scale",
    "infer_roles",
    "infer_shapes",
    "param_groups",
    "parametrize",
    "rule_table",
    "scale_params",
    "scaled_call",
    "scales",
]
