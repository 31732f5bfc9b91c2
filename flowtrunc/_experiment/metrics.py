"""Every per-seed metric of a comparison, defined once: its name, a short name, the formula
the figures put on their axes, its unit, the description `summary.json` gives, and which end
of it is worst. The summary, the figures, the sweep's table and figures and the console read
these; none spells a metric out again."""

from typing import NamedTuple


class Metric(NamedTuple):
    short: str  # a few words (sweep figures)
    formula: str  # what a per-seed figure puts on its axis
    unit: str  # "1" (a ratio or fraction), "flow time" (= steps × lr)
    description: str  # summary.json `descriptions`
    worst: str | None  # "max" or "min": the end `worst` reports; None: not an error

    @property
    def label(self) -> str:
        """Axis label: the formula and its unit."""
        return f"{self.formula} [{self.unit}]"


METRICS = {
    "threshold_error": Metric(
        "threshold error",
        "max |θ*_train − θ*_flow| / max|θ|",
        "1",
        "max over saves, layers, coordinates of |θ_train − θ_flow| / max|θ_flow|",
        "max",
    ),
    "cost_error": Metric(
        "cost error",
        "max |C_train − C_flow| / C(0)",
        "1",
        "max over saves of |C_train − C_flow| / C_flow(0) (usual cost: C_flow times the clock c = tr G/M)",
        "max",
    ),
    "truncation_agreement": Metric(
        "truncation agreement",
        "fraction of saves where all n_k agree",
        "1",
        "fraction of saves where every coordinate's truncated count agrees",
        "min",
    ),
    "crossing_time_error": Metric(
        "crossing-time error",
        "max crossing-time error",
        "flow time",
        "max |t_train − t_flow| over data coordinates θ* crosses by t1",
        "max",
    ),
    "num_events": Metric(
        "events",
        "events of the whole flow",
        "count",
        "events of the whole effective flow (t in [0, ∞); the usual cost's own flow: by t1)",
        None,
    ),
    "unmatched_crossings": Metric(
        "unmatched crossings",
        "crossings of the flow missing in training",
        "count",
        "crossings of the flow by t1 that training does not make by t1",
        "max",
    ),
    "extra_crossings": Metric(
        "extra crossings",
        "crossings of training missing in the flow",
        "count",
        "crossings training makes that the flow does not make by t1",
        "max",
    ),
    "collapse_time_error": Metric(
        "collapse-time error",
        "max collapse-time error",
        "flow time",
        "max |collapse time train − flow| over classes both collapse",
        "max",
    ),
    "drift": Metric(
        "drift",
        "max drift from the adapted family over [0, t1]",
        "1",
        "max distance of the trained weights from the adapted family (0 when adapted)",
        None,
    ),
    "start_distance": Metric(
        "start distance",
        "distance from the nearest adapted net at t = 0",
        "1",
        "departure at the start: max over layers of ‖W_l − Ŵ_l‖_F/‖Ŵ_l‖_F from the nearest adapted net "
        "(0 unless off_adapted > 0)",
        None,
    ),
    "metric_condition": Metric(
        "condition of G",
        "max condition number of G over [0, t1]",
        "1",
        "max over saves of the condition number of the cost's metric G = (W_o W^(L))ᵀ(W_o W^(L)) "
        "in training (1 for the input-layer cost)",
        None,
    ),
    "target_motion": Metric(
        "target motion",
        "max |ȳ(t) − ȳ(0)| / max|ȳ(0)| over [0, t1]",
        "1",
        "max over saves, classes, coordinates of |ȳ(t) − ȳ(0)| / max|ȳ(0)|: how far the pulled-back "
        "targets move in training (0 for the input-layer cost)",
        None,
    ),
    "baseline_threshold_error": Metric(
        "pull-back threshold error",
        "max |θ*_train − θ*_pull-back| / max|θ|",
        "1",
        "with an adapted output layer: the threshold error of the baseline, the input-layer flow on the "
        "t = 0 pull-back (docs/theory.md §6), on the same seeds (NaN otherwise)",
        "max",
    ),
    "output_departure": Metric(
        "output departure",
        "max ‖QᵀW_o − diag‖_F/‖diag‖ over [0, t1]",
        "1",
        "with an adapted output layer: max over saves of the trained output weight's distance from the "
        "family Q diag(d_o), ‖QᵀW_o − diag(QᵀW_o)‖_F/‖diag(QᵀW_o)‖ (0 while adapted; NaN otherwise)",
        None,
    ),
    "stability_bound": Metric(
        "stability bound",
        "2/λ_max at the start",
        "flow time",
        "2/λ_max of gradient descent at the start; lr above it fails",
        "min",
    ),
    "stability_bound_run": Metric(
        "stability bound along the run",
        "min(2/λ_max, min_t 2/κ_max(t))",
        "flow time",
        "the smaller of that and min over saves of 2/κ_max(t), κ = Γ_{ℓ*ℓ*} n/N on the flow's state: "
        "the bound along the run; lr above it fails",
        "min",
    ),
}
