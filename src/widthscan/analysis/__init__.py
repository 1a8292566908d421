"""widthscan.analysis: pure functions over the Dataset that ``ws.load`` returns.

Consistency across widths (distances to the widest network, consistency width),
bias and variance over seeds, power laws in width and infinite-width
extrapolation, and the spectral view of the eNTK; ``claims``: the paper's claims as
statistics with thresholds and verdicts. Nothing here reads files.
"""

from widthscan.analysis import claims
from widthscan.analysis.bias_variance import bias_variance, variance_vs_ensemble_size
from widthscan.analysis.consistency import (
    consistency_width,
    distance_to_widest,
    histogram_wasserstein,
    kernel_distance,
    preactivation_distance,
    successive_differences,
)
from widthscan.analysis.dims import reference_width, step_dim
from widthscan.analysis.kernels import cka, relative_frobenius
from widthscan.analysis.scaling import extrapolate, fit_power_law, varpro_fit
from widthscan.analysis.spectral import (
    entk_flow_loss,
    entk_spectrum,
    kernel_flow_loss,
    learning_time,
    task_power,
)

__all__ = [
    "bias_variance",
    "cka",
    "claims",
    "consistency_width",
    "distance_to_widest",
    "entk_flow_loss",
    "entk_spectrum",
    "extrapolate",
    "fit_power_law",
    "histogram_wasserstein",
    "kernel_distance",
    "kernel_flow_loss",
    "learning_time",
    "preactivation_distance",
    "reference_width",
    "relative_frobenius",
    "step_dim",
    "successive_differences",
    "task_power",
    "variance_vs_ensemble_size",
    "varpro_fit",
]
