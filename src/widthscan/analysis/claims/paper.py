"""The claims of the paper's ten experiments: statistics of a loaded sweep and thresholds.

Thresholds are stated with the claim and chosen before looking at results: a log-log slope
< -0.2 means "falls with width at least as fast as N^-0.2" (finite-width theory predicts
N^-1/2 for single-network fluctuations and N^-1 for the mean); ratios > 1 mean "larger than
in the other parameterization"; relative gaps use 10% unless the claim says otherwise.
Each claim names the *part* (one sweep) it is judged on; the sweeps themselves live in
``widthscan.sweep.reproduce`` (``widthscan reproduce``). docs/reproduce.md lists every
claim with its figure.
"""

from __future__ import annotations

from widthscan.analysis.claims import stats
from widthscan.analysis.claims.verdicts import Claim, ClaimSet

SLOPE = -0.2


def _claim(id: str, text: str, figures: str, part: str, statistic: str, op: str,
           threshold: float, measure: stats.Measure, why: str = "") -> Claim:
    return Claim(id, text, figures, part, statistic, op, threshold, measure, why)  # type: ignore[arg-type]


def _consistency_claims(part: str, figures: str) -> tuple[Claim, ...]:
    return (
        _claim(f"{part}-wider-better", f"{part}: wider networks reach a lower loss", figures,
               part, "slope of final probe loss vs log2(width)", "<", 0.0,
               stats.width_trend("probe_loss")),
        _claim(f"{part}-curves-converge",
               f"{part}: loss curves of narrower widths approach the widest's", figures, part,
               "log-log slope of the probe-loss curve's relative RMS distance to the widest "
               "vs width", "<", SLOPE, stats.curve_distance_slope("probe_loss")),
        _claim(f"{part}-early-agreement",
               f"{part}: early in training the wide networks agree", figures, part,
               "largest relative probe-loss gap to the widest over the upper half of widths "
               "at 10% of training", "<", 0.1,
               stats.gap_to_widest("probe_loss", at=0.1)),
    )


LOSS_CURVES = ClaimSet(
    name="loss-curves",
    title="Online loss curves are consistent across widths",
    figures="Figs. 1, 2",
    summary="Loss curves agree across widths early on, wider is better, and narrower widths "
            "approach the widest (ResNet-18 on CIFAR-5M, transformer on text, MLP on "
            "Gegenbauer).",
    claims=(*_consistency_claims("mlp", "Fig. 2 (MLP stand-in)"),
            *_consistency_claims("resnet", "Figs. 1a, 2a"),
            *_consistency_claims("transformer", "Figs. 1c, 2c")),
)


def _logit_claims(part: str, figures: str) -> tuple[Claim, ...]:
    return (
        _claim(f"{part}-distance", f"{part}: RMS distance of the logits to the widest falls "
               "with width", figures, part,
               "log-log slope of the scaled RMS logit distance to the widest (per seed, last "
               "step) vs width", "<", SLOPE, stats.distance_slope("logits")),
        _claim(f"{part}-successive", f"{part}: differences between successive widths fall",
               "Fig. 4", part, "log-log slope of scaled successive-width logit differences "
               "(per seed, last step) vs width", "<", SLOPE,
               stats.distance_slope("logits", metric="successive")),
        _claim(f"{part}-one-point", f"{part}: one test point's logits over training approach "
               "the widest's", figures, part,
               "log-log slope of the RMS over training of the first probe example's "
               "ensemble-mean logits minus the widest's vs width", "<", SLOPE,
               stats.point_logit_slope()),
    )


LOGITS_EXPERIMENT = ClaimSet(
    name="logits",
    title="Pointwise predictions converge with width",
    figures="Figs. 3, 4, 13",
    summary="A test point's correct logit over training agrees across widths; the RMS "
            "distance to the widest network's logits and successive-width differences fall.",
    claims=(*_logit_claims("resnet", "Figs. 3a, 3d"),
            *_logit_claims("transformer", "Figs. 3c, 3f, 13")),
)


REPRESENTATIONS = ClaimSet(
    name="representations",
    title="Representations converge with width",
    figures="Fig. 5 (and Figs. 11, 12)",
    summary="Feature kernels, preactivation distributions and attention maps of narrower "
            "widths approach the widest's.",
    claims=(
        _claim("kernel", "feature kernels approach the widest's", "Figs. 5b, 5c", "resnet",
               "log-log slope of 1 - CKA to the widest's kernel (per seed, mean over layers, "
               "last step) vs width", "<", SLOPE, stats.distance_slope("kernel", metric="cka")),
        _claim("preactivations", "preactivation distributions approach the widest's",
               "Figs. 5a, 5c", "resnet",
               "log-log slope of the Wasserstein-1 distance of preactivation histograms to the "
               "widest's (per seed, mean over layers, last step) vs width", "<", SLOPE,
               stats.distance_slope("preact_hist", metric="w1")),
        _claim("attention", "attention maps approach the widest's", "Figs. 1d, 5d-f",
               "transformer", "log-log slope of the scaled RMS attention-map distance to the "
               "widest (per seed, mean over layers, last step) vs width", "<", SLOPE,
               stats.distance_slope("attention")),
    ),
)


SHARPNESS = ClaimSet(
    name="sharpness",
    title="Edge of stability and large-learning-rate effects are consistent in muP, not in SP",
    figures="Fig. 6, App. E (Figs. 15, 16)",
    summary="Sharpness grows to a plateau and agrees across widths; the batch-noise and "
            "large-lr fluctuations of the loss agree across widths early on in muP, not in SP.",
    claims=(
        _claim("sharpness-grows", "muP: sharpness grows and settles (edge of stability)",
               "Fig. 6a", "eos", "final sharpness / its minimum during training, widest muP "
               "network", ">", 1.5, stats.sharpness_stat("growth"),
               why="measured from the minimum: at a large lr the initial sharpness can be "
                   "above 2/lr, and a catapult brings it down before it grows back"),
        _claim("sharpness-agrees", "muP: the settled sharpness agrees across wide widths",
               "Fig. 6a", "eos", "(max - min) / mean of the final sharpness over the upper "
               "half of widths", "<", 0.25, stats.sharpness_stat("spread")),
        _claim("mlp-mup-fluctuations", "muP: batch-noise fluctuations of the training loss "
               "agree across widths early on", "Figs. 15a, 15b", "mlp",
               "log-log slope of the early (first 30%) train-loss curve's relative RMS "
               "distance to the widest vs width", "<", SLOPE,
               stats.curve_distance_slope("loss", until=0.3)),
        _claim("mlp-sp-inconsistent", "SP: the same fluctuations are inconsistent across "
               "widths", "Fig. 15c", "mlp", "SP / muP ratio of the narrowest width's early "
               "train-loss curve distance to the widest (SP divergence counts as +inf)", ">",
               1.0, stats.curve_distance_ratio("loss", "sp", "mup", until=0.3)),
        _claim("resnet-mup-fluctuations", "muP: large-lr, small-batch loss fluctuations agree "
               "across widths early on", "Fig. 6b", "resnet",
               "log-log slope of the early (first 30%) train-loss curve's relative RMS "
               "distance to the widest vs width", "<", SLOPE,
               stats.curve_distance_slope("loss", until=0.3)),
        _claim("resnet-sp-inconsistent", "SP: they do not", "Fig. 16", "resnet",
               "SP / muP ratio of the narrowest width's early train-loss curve distance "
               "(SP divergence counts as +inf)", ">", 1.0,
               stats.curve_distance_ratio("loss", "sp", "mup", until=0.3)),
    ),
)


BIAS_VARIANCE = ClaimSet(
    name="bias-variance",
    title="Online: bias dominates at narrow widths, a wide net beats narrow ensembles",
    figures="Fig. 7",
    summary="At large width single networks and ensembles agree; at narrow widths the bias "
            "of narrower width is larger than the variance, and a single wide network beats "
            "an ensemble of narrow ones.",
    claims=(
        _claim("bias-over-variance", "narrow widths are bias-limited", "Fig. 7", "vision",
               "width bias / variance of the probe loss at the narrowest width", ">", 1.0,
               stats.bias_variance_stat("bias_over_variance", "ce")),
        _claim("wide-beats-ensemble", "a single wide network beats an ensemble of narrow "
               "ones", "Fig. 7", "vision", "ensemble loss of the narrowest width minus "
               "single-network loss of the widest", ">", 0.0,
               stats.bias_variance_stat("narrow_ensemble_minus_wide_single", "ce")),
        _claim("variance-small-wide", "variance dominates nowhere at large width", "Fig. 7",
               "vision", "(single - ensemble loss) / single loss at the widest width", "<",
               0.1, stats.bias_variance_stat("variance_share_widest", "ce")),
    ),
)


OFFLINE = ClaimSet(
    name="offline",
    title="Offline: training loss does not converge with width; noisy labels overfit",
    figures="Fig. 8, Fig. 19",
    summary="With repeated data the training loss keeps differing between wide widths; with "
            "50% noisy labels networks overfit and some narrower ensembles beat wider ones.",
    claims=(
        _claim("train-loss-not-converged", "the training loss does not converge with width",
               "Fig. 8a", "clean", "|log| ratio of the final train loss of the two widest "
               "widths", ">", 0.1, stats.top_two_gap("loss")),
        _claim("noisy-overfits", "with noisy labels, the test loss rises after its minimum",
               "Fig. 8f", "noisy", "final / minimum probe loss - 1 at the widest width", ">",
               0.05, stats.rise_after_minimum()),
        _claim("narrow-ensemble-wins", "some ensembled narrower width beats a wider one",
               "Fig. 8f", "noisy", "largest increase of the ensemble probe loss from a "
               "narrower to a wider width", ">", 0.0,
               stats.bias_variance_stat("wider_ensemble_worse", "ce")),
    ),
)


POWER_LAW = ClaimSet(
    name="power-law",
    title="The loss follows a power law in width",
    figures="Fig. 9",
    summary="L(N) = a N^-alpha + c fits the loss across widths with R^2 above 0.99, with an "
            "exponent clearly above 0.",
    claims=(
        _claim("r2", "a power law in width fits the final loss", "Fig. 9", "main",
               "R^2 of L(N) = a N^-alpha + c on the seed-mean final probe loss", ">", 0.9,
               stats.power_law_stat("r2"),
               why="the paper reports R^2 > 0.99 on 2 epochs of ImageNet / 1 of Wikitext; "
                   "CPU runs have 4 seeds and short training, hence 0.9"),
        _claim("alpha", "the exponent is clearly positive (convergence as N grows)", "Fig. 9",
               "main", "alpha (90% interval of analysis.fit_power_law)", ">", 0.1,
               stats.power_law_stat("alpha")),
    ),
)


SPECTRAL = ClaimSet(
    name="spectral",
    title="eNTK spectra are consistent across widths; task alignment is not",
    figures="Fig. 10",
    summary="In a lazy (NTP) MLP, the ensembled eNTK's eigenvalues barely change with width, "
            "while narrower kernels put less of the task in their top eigenspaces and so "
            "learn it more slowly under kernel flow.",
    claims=(
        _claim("spectrum", "the ensembled eNTK spectrum is consistent across widths",
               "Figs. 10b, 10e", "mlp", "mean |log(lambda_narrowest / lambda_widest)| over "
               "the top 10 eigenvalues of the trace-normalized ensembled eNTK at "
               "initialization", "<", 0.5,
               stats.spectral_stat("spectrum_deviation", param="ntp", index=0)),
        _claim("alignment", "narrower kernels put less task power in their top eigenspaces",
               "Figs. 10c, 10f", "mlp", "mean over all k of C_widest(k) - C_narrowest(k) "
               "(the area between the cumulative task-power curves)",
               ">", 0.0, stats.spectral_stat("alignment_gap", param="ntp", index=0, top=None)),
        _claim("flow", "kernel flow with the wider after-kernel converges faster", "Fig. 10d",
               "mlp", "relative excess flow loss of the narrowest kernel when the widest's "
               "has halved", ">", 0.0, stats.spectral_stat("flow_gap", param="ntp", index=0)),
    ),
)


PARAMETERIZATIONS = ClaimSet(
    name="parameterizations",
    title="muP is consistent at realistic widths; NTP and SP are not",
    figures="App. D (Fig. 14), App. E (Figs. 15-17)",
    summary="In NTP wider networks train more slowly and approach their limit later; muP "
            "networks approach it faster. SP's fluctuations are inconsistent across widths.",
    claims=(
        _claim("ntp-wider-worse", "NTP: wider networks train more slowly and end worse",
               "Fig. 14", "mlp", "NTP slope of final probe loss vs log2(width)", ">", 0.0,
               stats.width_trend("probe_loss", param="ntp")),
        _claim("mup-wider-better", "muP: wider networks are better", "Fig. 14", "mlp",
               "muP slope of final probe loss vs log2(width)", "<", 0.0,
               stats.width_trend("probe_loss")),
        _claim("ntp-farther", "NTP approaches its limit more slowly than muP", "Fig. 14",
               "mlp", "NTP / muP ratio of the narrowest width's scaled logit distance to the "
               "widest (last step)", ">", 1.0, stats.logit_distance_ratio("ntp", "mup")),
        _claim("sp-farther", "SP is less consistent than muP", "Figs. 15-17", "mlp",
               "SP / muP ratio of the narrowest width's scaled logit distance to the widest "
               "(last step)", ">", 1.0, stats.logit_distance_ratio("sp", "mup")),
    ),
)


ENSEMBLE_SIZE = ClaimSet(
    name="ensemble-size",
    title="Small ensembles suffice",
    figures="App. H (Fig. 18)",
    summary="The marginal value of an ensemble member falls quickly: by 3-4 members the "
            "ensemble loss is close to that of the largest ensemble at every width.",
    claims=(
        _claim("plateau", "the variance reduction from ensembling plateaus by 4 members",
               "Fig. 18a", "vision", "(L(4) - L(M)) / (L(1) - L(M)) of the k-member ensemble "
               "loss, each difference summed over widths", "<", 0.35,
               stats.ensemble_size_stat("remaining_gain", "ce"),
               why="with variance falling as 1/k and M = 8 the ratio is 1/7 = 0.14"),
        _claim("k3-close", "loss vs width is nearly the same for ensembles of 3 or more",
               "Fig. 18b", "vision", "largest relative difference |L(3) - L(M)| / L(M) over "
               "widths", "<", 0.1, stats.ensemble_size_stat("k3_vs_full", "ce")),
    ),
)


CLAIM_SETS: dict[str, ClaimSet] = {c.name: c for c in (
    LOSS_CURVES, LOGITS_EXPERIMENT, REPRESENTATIONS, SHARPNESS, BIAS_VARIANCE, OFFLINE,
    POWER_LAW, SPECTRAL, PARAMETERIZATIONS, ENSEMBLE_SIZE)}
"""Experiment name -> its claims."""
