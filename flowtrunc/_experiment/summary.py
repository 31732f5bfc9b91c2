"""`summary.json` of a comparison run: quantiles, counts, failures with their fixes, the
worst seeds, and a description of every key."""

import numpy as np

from .._results import RESULTS
from .config import CompareConfig
from .kinds import SOLUTION_KINDS
from .metrics import METRICS

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)

DESCRIPTIONS = {
    "seeds": "seeds in the run",
    "ok_seeds": "seeds where the flow succeeded and training neither diverged nor was unstable",
    "flow_failures": "seeds whose effective flow failed (see `failures`)",
    "training_divergences": "seeds whose training diverged or exceeded the stability bound",
    "failures": "per failing part and result code: seeds, what happened, and the fix",
    "lr": "gradient-descent step [flow time]",
    "t1": "final time [flow time]",
    "mode": "training mode (adapted or unconstrained)",
    "freeze_weights": "biases only were trained",
    "off_adapted": "ε: relative size of the random perturbation of the start weights",
    "parameterisation": "gradient steps and flow on the diagonal weights d (direct) or on log d (log)",
    "cost": "training cost: input (the input-layer cost) or output (the usual cost after an output layer)",
    "freeze_output": "the output layer kept its initial value (cost output)",
    "output_condition": "condition number of the initial output layer (cost output)",
    "output_layer": "the output layer (cost output): general, or adapted to a frame (Q diag(d_o))",
    "output_departure_setting": "ε: relative size of the random perturbation of the adapted output weight",
    "seeds_with_collapse_flow": "ok seeds where the flow collapses at least one class by t1 (count)",
    "seeds_with_collapse_train": "ok seeds where training collapses at least one class by t1 (count)",
    "seeds_collapsed_at_start": "ok seeds with a class already collapsed at t = 0 (not counted above)",
    "seeds_final_sets_differ": "ok seeds where flow and training end (at t1) with different truncated points",
    "kinds_flow": "kinds of solution of the flow over [0, t1]: (ok seed, coordinate) pairs per kind, "
    "and `switched_layer` pairs whose active layer changed",
    "kinds_train": "the same, read off training by the same rule",
    "seeds_kinds_differ": "ok seeds where flow and training differ in the kind of any coordinate",
    "collapse_time_flow": "quantiles of the flow's collapse times over collapsing classes [flow time]",
    "worst": "per metric, the worst value over ok seeds and the seed it came from",
    "wall_time_s": "seconds spent computing the chunks (all sessions of a resumed run; no figures)",
    "data_sha256": "sha256 of the data file (null: the built-in staircase scenario)",
    "versions": "versions of flowtrunc, JAX and Python at the run's start",
    "descriptions": "this table",
    **{
        name: f"quantiles q0..q100 over ok seeds of: {metric.description} [{metric.unit}]"
        for name, metric in METRICS.items()
    },
}


def _kind_counts(kinds, switched) -> dict:
    counts = {name: int(np.sum(kinds == index)) for index, name in enumerate(SOLUTION_KINDS)}
    return {**counts, "switched_layer": int(np.sum(switched))}


def quantiles(values) -> dict | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return {f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}


def ok_seeds(metrics: dict) -> np.ndarray:
    return (metrics["flow_result"] == 0) & (metrics["train_result"] == 0)


def failure_fix(part: str, code: int, config: CompareConfig, bounds, data_std) -> str:
    """What to change when `part` ("flow" or "training") fails with `code`; `bounds`: the
    stability bounds of the seeds that failed so (None if not measured)."""
    standardise = ""
    if data_std is not None and not 1e-2 <= data_std <= 1e2:
        standardise = (
            f"; the data's features have standard deviation up to {data_std:.3g}: standardise "
            "them (subtract the mean, divide by the standard deviation)"
        )
    if code in (RESULTS.unstable, RESULTS.diverged):
        finite = np.asarray(bounds if bounds is not None else [], np.float64)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size and finite.min() < config.lr:  # lr is above these seeds' bound
            return (
                f"lower --lr (now {config.lr}) below {finite.min():.3g}, the smallest stability "
                f"bound of these seeds{standardise}"
            )
        # the bound at the start allowed this lr: the run left it later
        return (
            f"lower --lr (now {config.lr}), e.g. to {config.lr / 10:.3g}: these seeds' stability "
            f"bound at the start allowed it, so the run left its stable range later{standardise}"
        )
    if code in (RESULTS.solver_failed, RESULTS.max_segments_reached):
        return f"raise --max-steps (now {config.max_steps}) or loosen --rtol/--atol{standardise}"
    return f"check the data for NaN/inf or extreme scales{standardise}"


def summarise(metrics: dict, config: CompareConfig, origin: dict | None = None, seconds=None) -> dict:
    """Quantiles across ok seeds of every scalar metric, counts, failures and worst seeds."""
    origin = origin or {}
    ok = ok_seeds(metrics)
    bounds = metrics.get("stability_bound_run", metrics.get("stability_bound"))
    failures = []
    for part, key in (("flow", "flow_result"), ("training", "train_result")):
        codes, counts = np.unique(metrics[key][metrics[key] != 0], return_counts=True)
        for code, count in zip(codes.tolist(), counts.tolist()):
            failing = None if bounds is None else np.asarray(bounds)[metrics[key] == code]
            failures.append(
                dict(
                    part=part,
                    code=RESULTS(code).name,
                    seeds=count,
                    what=RESULTS(code).message.split(";")[0],
                    fix=failure_fix(part, code, config, failing, origin.get("data_std")),
                )
            )
    worst = {}
    for name, metric in METRICS.items():
        end = metric.worst
        values = np.where(ok, metrics[name], np.nan).astype(np.float64)
        if end is None or not np.isfinite(values).any():
            continue
        index = int(np.nanargmax(values) if end == "max" else np.nanargmin(values))
        worst[name] = {"value": float(values[index]), "seed": int(metrics["seed"][index])}
    flow_times = metrics["collapse_time_flow"][ok]
    summary = {
        "seeds": int(len(metrics["seed"])),
        "ok_seeds": int(ok.sum()),
        "flow_failures": int(np.sum(metrics["flow_result"] != 0)),
        "training_divergences": int(np.sum(metrics["train_result"] != 0)),
        "failures": failures,
        "lr": config.lr,
        "t1": config.t1,
        "mode": config.mode,
        "freeze_weights": config.freeze_weights,
        "off_adapted": config.off_adapted,
        "parameterisation": config.parameterisation,
        "cost": config.cost,
        "output_condition": config.output_condition,
        "freeze_output": config.freeze_output,
        "output_layer": config.output_layer,
        "output_departure_setting": config.output_departure,
        "seeds_with_collapse_flow": int(np.sum(metrics["collapsed_flow"][ok] > 0)),
        "seeds_with_collapse_train": int(np.sum(metrics["collapsed_train"][ok] > 0)),
        "seeds_collapsed_at_start": int(np.sum(metrics["collapsed_at_start"][ok] > 0)),
        "seeds_final_sets_differ": int(np.sum(~metrics["final_sets_agree"][ok])),
        "kinds_flow": _kind_counts(metrics["kind_flow"][ok], metrics["switched_flow"][ok]),
        "kinds_train": _kind_counts(metrics["kind_train"][ok], metrics["switched_train"][ok]),
        "seeds_kinds_differ": int(np.sum(~metrics["kinds_agree"][ok])),
        "collapse_time_flow": quantiles(flow_times.ravel()),
        "worst": worst,
        "wall_time_s": None if seconds is None else round(float(seconds), 3),
        "data_sha256": origin.get("data_sha256"),
        "versions": origin.get("versions"),
    }
    for name in METRICS:
        summary[name] = quantiles(metrics[name][ok])
    summary["descriptions"] = {}
    summary["descriptions"] = {key: DESCRIPTIONS[key] for key in summary}
    return summary
