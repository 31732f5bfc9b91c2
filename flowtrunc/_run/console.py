"""What a finished run or sweep prints: the summary table, the failures with their fix,
the use of the compilation cache."""

import json
import os
import sys

from . import compile_cache

# exit code of a run that finished with no seed ok (its results are meaningless)
NO_SEED_OK = 3


def data_cast(config) -> str:
    """`" (data x: float32 cast to float64)"` when the data file holds another type."""
    if config.data is None:
        return ""
    import numpy as np

    with np.load(config.data) as archive:
        stored = archive["x"].dtype
    wanted = np.dtype(f"float{config.precision}")
    return "" if stored == wanted else f" (data x: {stored} cast to {wanted})"


def print_cache_use(folder) -> None:
    if folder is None:
        return
    used = compile_cache.counts()
    print(
        f"compilation cache: {used['hits']} of {used['requests']} compiled programs loaded, "
        f"{used['writes']} compiled and saved; {used['loaded']} traced programs loaded, "
        f"{used['saved']} traced and saved ({folder})",
        file=sys.stderr,
    )


def print_summary(out_dir) -> int:
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    seeds, ok = summary["seeds"], summary["ok_seeds"]
    print(
        f"{ok} of {seeds} seeds ok ({summary['flow_failures']} flow failures, "
        f"{summary['training_divergences']} training failures)"
    )
    if ok:
        print(f"  {'metric':22s} {'median':>10s} {'90%':>10s}   worst (seed)")
        for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement"):
            q, worst = summary.get(name), summary["worst"].get(name)
            if q and worst:
                print(
                    f"  {name:22s} {q['q50']:10.3g} {q['q90']:10.3g}   {worst['value']:.3g} ({worst['seed']})"
                )
        departures = [
            (name, label)
            for name, label, active in (
                ("start_distance", "distance from the adapted family at t = 0", summary.get("off_adapted")),
                ("metric_condition", "condition number of G (max over t)", summary.get("cost") == "output"),
                ("target_motion", "motion of the pulled-back targets ȳ", summary.get("cost") == "output"),
            )
            if active and summary.get(name)
        ]
        for name, label in departures:  # the size of each departure next to the errors
            q = summary[name]
            print(f"  {name:22s} {q['q50']:10.3g} {q['q90']:10.3g}   (departure: {label})")
        print(
            f"  a class collapses by t1 in {summary['seeds_with_collapse_flow']} of {ok} ok seeds (flow), "
            f"{summary['seeds_with_collapse_train']} (training); "
            f"{summary['seeds_collapsed_at_start']} had a class collapsed already at t = 0 (counted apart)"
        )
    if ok:
        flow, train = summary["kinds_flow"], summary["kinds_train"]
        print(
            "  kinds of solution (seed × coordinate), flow / training: "
            + ", ".join(f"{k} {flow[k]}/{train[k]}" for k in flow)
            + f"; differ in {summary['seeds_kinds_differ']} of {ok} seeds"
        )
    for failure in summary["failures"]:
        print(
            f"  {failure['seeds']} of {seeds} seeds: {failure['part']} {failure['what']};"
            f" fix: {failure['fix']}"
        )
    print(f"results: {out_dir}/summary.json, seeds.npz, figures/")
    if not ok:
        print(
            "flowtrunc: error: no seed succeeded, so these results are meaningless; apply the "
            "fix above and run again in a new --out directory.",
            file=sys.stderr,
        )
        return NO_SEED_OK
    return 0


def print_sweep(out_dir) -> int:
    from .._run.sweep import table_rows

    keys, rows = table_rows(out_dir)
    print(
        "  ".join(f"{k:>12s}" for k in keys) + f"  {'ok seeds':>12s}  {'median θ err':>12s}  {'collapse':>8s}"
    )
    for row in rows:
        median = row["threshold_error_q50"]
        print(
            "  ".join(f"{str(row[k]):>12s}" for k in keys)
            + f"  {row['ok_seeds']:>5d} of {row['seeds']:<4d}  {median:12.3g}"
            + f"  {row['fraction_with_collapse_flow']:8.2f}"
        )
    print(f"results: {out_dir}/table.csv, figures/, points/")
    if not any(row["ok_seeds"] for row in rows):
        print(
            "flowtrunc: error: no seed succeeded at any grid point; see points/*/summary.json for the fixes.",
            file=sys.stderr,
        )
        return NO_SEED_OK
    return 0
