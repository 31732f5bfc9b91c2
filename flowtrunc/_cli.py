"""The `flowtrunc` command line: `compare` (the main job), `report`, `demo`.

Exit codes: 0 done; 2 bad input or files (nothing lost; the message says what to fix);
3 the run finished but no seed succeeded (its results are meaningless); 130 interrupted.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import sys

from . import _compile_cache as compile_cache
from ._config import DATA_FIXED, CompareConfig, describe_setting, setting_kind

NO_SEED_OK = 3
# settings the command line takes from other flags (or that the CLI fixes itself)
_SPECIAL = ("data",)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_config_texts: dict = {}  # a pipe (`--config <(echo ...)`) can be read only once


def _read_config_file(path: str) -> dict:
    if os.path.isdir(path):
        raise ValueError(f"--config {path!r} is a directory; give a JSON file.")
    if path not in _config_texts:
        try:
            with open(path) as f:
                _config_texts[path] = f.read()
        except FileNotFoundError:
            raise ValueError(f"--config {path!r} does not exist.") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--config {path!r} cannot be read ({error}).") from None
    try:
        values = json.loads(_config_texts[path])
    except json.JSONDecodeError as error:
        raise ValueError(f"--config {path!r} is not valid JSON ({error}).") from error
    if not isinstance(values, dict):
        raise ValueError(f'--config {path!r} must hold a JSON object of settings, e.g. {{"lr": 0.01}}.')
    values.pop("provenance", None)  # a run's config.json may be reused as --config
    return values


def resolve_config(args, defaults: dict | None = None) -> CompareConfig:
    """Built-in defaults (updated by `defaults`), then `--config` (relative paths from
    its folder), then flags."""
    values, base_dir = dict(defaults or {}), None
    if args.config is not None:
        values.update(_read_config_file(args.config))
        values.pop("sweep", None)
        # relative paths from the file's folder (from the working directory for a pipe)
        folder = os.path.dirname(os.path.abspath(args.config))
        base_dir = folder if os.path.isfile(args.config) else os.getcwd()
        config = CompareConfig.from_dict(values, base_dir=base_dir)  # errors name the file's keys
        values = {k: v for k, v in config.to_dict().items() if k in values}
    elif values:
        values = CompareConfig.from_dict(values).to_dict()
    for field in dataclasses.fields(CompareConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name not in _SPECIAL:
            values[field.name] = given
    if args.data is not None:
        values["data"] = os.path.abspath(args.data)
    fixed = [name for name in DATA_FIXED if name in values and name not in (defaults or {})]
    if values.get("data") is not None and fixed:
        raise ValueError(
            f"--data fixes the dimension, point count and classes (read from the file); drop "
            f"{', '.join(f'--{name} (or the config key {name!r})' for name in fixed)}."
        )
    return CompareConfig.from_dict(values)


def join_processes(args) -> None:
    """Joins a JAX multi-process run when asked: `--coordinator`, `--num-processes`,
    `--process-id`, or `--distributed` alone (JAX detects SLURM, Open MPI and the like).
    On CPU the processes talk through gloo."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and all(value is None for value in given):
        check_platform()
        return
    check_process_flags(args.num_processes, args.process_id)
    if args.coordinator is not None and args.process_id not in (None, 0):
        _wait_for_coordinator(args.coordinator, args.connect_timeout)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.connect_timeout,
        )
    except Exception as error:  # JAX raises RuntimeError/ValueError/XlaRuntimeError here
        raise ValueError(
            f"could not join the multi-process run (coordinator {args.coordinator or 'auto-detected'}, "
            f"waited up to {args.connect_timeout} s): {str(error).splitlines()[0][:300]}. Check "
            "--coordinator HOST:PORT, --num-processes and --process-id, and that process 0 runs."
        ) from None
    check_platform()  # only now: jax.distributed.initialize must come before any device use


def check_process_flags(num_processes, process_id) -> None:
    """`--num-processes` at least 1 and `--process-id` in 0..N-1, before anything starts."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {num_processes}.")
    if process_id is not None and process_id < 0:
        raise ValueError(f"--process-id must be 0 or more, got {process_id}.")
    if None not in (num_processes, process_id) and process_id >= num_processes:
        raise ValueError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
            f"number the processes 0..{num_processes - 1}."
        )


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Waits until process 0's coordinator accepts connections (JAX itself aborts the
    process with a stack trace when it cannot register in time)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator {address!r} must be HOST:PORT, e.g. localhost:12345.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"no coordinator answered at {address} within {timeout} s ({error.strerror or error}); "
                    "start process 0 (--process-id 0) with the same --coordinator first, or raise "
                    "--connect-timeout."
                ) from None
            time.sleep(0.5)


def gpu_fallback_notice(backend: str, installed: list[str]) -> str | None:
    """One line when a GPU build of JAX (`installed`: its plugin packages) is present but
    JAX runs on `backend` 'cpu' (no GPU visible): the run goes on, on the CPU."""
    if backend != "cpu" or not installed:
        return None
    return (
        f"flowtrunc: note: a GPU build of JAX is installed ({', '.join(installed)}) but no GPU is "
        "visible; running on the CPU (set JAX_PLATFORMS=cpu to silence this note)."
    )


def _gpu_plugins() -> list[str]:
    """JAX's GPU plugin packages installed here (the `cuda12`/`cuda13` extras bring them)."""
    import importlib.metadata

    names = {dist.metadata["Name"] or "" for dist in importlib.metadata.distributions()}
    return sorted(n for n in names if n.lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm")))


class _PluginErrorFilter(logging.Filter):
    """Drops JAX's multi-line "Jax plugin configuration error" traceback (a CUDA plugin
    that finds no driver); `_print_device_notice` says it in one line instead."""

    def filter(self, record):
        return not str(record.msg).startswith("Jax plugin configuration error")


def _quiet_gpu_plugin_without_gpu() -> None:
    """Before JAX looks for devices: a GPU plugin installed on a host with no NVIDIA
    device node would log a traceback while JAX falls back to the CPU."""
    if any(os.path.exists(d) for d in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        return
    if _gpu_plugins():
        logging.getLogger("jax._src.xla_bridge").addFilter(_PluginErrorFilter())


def _print_device_notice() -> None:
    import jax

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return
    notice = gpu_fallback_notice(jax.default_backend(), _gpu_plugins())
    if notice:
        print(notice, file=sys.stderr)


def _compare(args) -> int:
    config = resolve_config(args)
    join_processes(args)
    from ._output import settle_device_settings

    config = settle_device_settings(config, args.out, args.resume)  # precision, chunk size
    _print_device_notice()
    # precision must be set before JAX computes anything
    import jax

    jax.config.update("jax_enable_x64", config.precision == 64)
    cache = compile_cache.enable(compile_cache.chosen_folder(args.compile_cache))
    from ._compare import resolve_data
    from ._output import run_compare

    resolved, _ = resolve_data(config)
    print(
        f"flowtrunc compare: {resolved.seeds} seeds, L={resolved.depth} M={resolved.dim} "
        f"N={resolved.points} Q={resolved.clusters}, lr={resolved.lr}, t1={resolved.t1}, "
        f"mode={resolved.mode}{' (weights frozen)' if resolved.freeze_weights else ''}, "
        f"{resolved.parameterisation} parameterisation, {resolved.cost} cost, "
        f"float{resolved.precision}{_data_cast(resolved)}, {jax.device_count()} device(s) -> {args.out}",
        file=sys.stderr,
    )
    try:
        run_compare(resolved, args.out, resume=args.resume, stall_timeout=args.stall_timeout)
        _print_cache_use(cache)
    except KeyboardInterrupt:
        saved = os.path.isfile(os.path.join(args.out, "config.json"))
        print(
            f"\ninterrupted; finished chunks are saved in {args.out}. Continue with the same "
            "command plus --resume."
            if saved
            else "\ninterrupted before the first chunk; nothing was kept.",
            file=sys.stderr,
        )
        return 130
    if jax.process_index() != 0:
        print(
            f"process {jax.process_index()} done; process 0 wrote the results to {args.out}", file=sys.stderr
        )
        return 0
    return _print_summary(args.out)


def _data_cast(config) -> str:
    """`" (data x: float32 cast to float64)"` when the data file holds another type."""
    if config.data is None:
        return ""
    import numpy as np

    with np.load(config.data) as archive:
        stored = archive["x"].dtype
    wanted = np.dtype(f"float{config.precision}")
    return "" if stored == wanted else f" (data x: {stored} cast to {wanted})"


def _print_cache_use(folder) -> None:
    if folder is None:
        return
    used = compile_cache.counts()
    print(
        f"compilation cache: {used['hits']} of {used['requests']} compiled programs loaded, "
        f"{used['writes']} compiled and saved; {used['loaded']} traced programs loaded, "
        f"{used['saved']} traced and saved ({folder})",
        file=sys.stderr,
    )


def _print_summary(out_dir) -> int:
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


def _report(args) -> int:
    from ._report import write_report
    from ._sweep import SWEEP, write_table

    try:
        if os.path.isfile(os.path.join(args.dir, SWEEP)):
            write_table(args.dir)
            return _print_sweep(args.dir)
        write_report(args.dir)
    except KeyError as missing:
        raise ValueError(
            f"{args.dir!r} was written by another flowtrunc version (it lacks {missing}); run it "
            "again with this version in a new --out directory."
        ) from None
    return _print_summary(args.dir)


def _sweep(args) -> int:
    from ._sweep import DEFAULT_GRID, SWEEP_DEFAULTS, parse_grid, run_sweep, settle_sweep_settings

    items = list(args.grid or [])
    if args.config is not None:
        section = _read_config_file(args.config).get("sweep", {})
        if not isinstance(section, dict):
            raise ValueError(f"--config {args.config!r}: `sweep` must map keys to lists of values.")
        items = [
            f"{k}={','.join(str(v) for v in (vs if isinstance(vs, list) else [vs]))}"
            for k, vs in section.items()
        ] + items
    grid = parse_grid(items) if items else DEFAULT_GRID
    base = resolve_config(args, defaults=SWEEP_DEFAULTS)
    join_processes(args)
    base = settle_sweep_settings(base, args.out, args.resume)
    _print_device_notice()
    import jax

    jax.config.update("jax_enable_x64", base.precision == 64)
    cache = compile_cache.enable(compile_cache.chosen_folder(args.compile_cache))
    from ._compare import resolve_data

    base, _ = resolve_data(base)
    points = 1
    for values in grid.values():
        points *= len(values)
    print(
        f"flowtrunc sweep: {points} points over {', '.join(grid)}, {base.seeds} seeds each -> {args.out}",
        file=sys.stderr,
    )
    try:
        run_sweep(base, grid, args.out, resume=args.resume, stall_timeout=args.stall_timeout)
        _print_cache_use(cache)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished points are kept. Continue with the same command plus --resume.",
            file=sys.stderr,
        )
        return 130
    if jax.process_index() != 0:
        print(f"process {jax.process_index()} done; process 0 wrote the sweep to {args.out}", file=sys.stderr)
        return 0
    return _print_sweep(args.out)


def _print_sweep(out_dir) -> int:
    from ._sweep import table_rows

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


def _check_demo(args) -> None:
    for name in ("depth", "dim", "points", "clusters"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    if args.points < args.clusters:
        raise ValueError(f"--points ({args.points}) must be >= --clusters ({args.clusters}).")
    if not (math.isfinite(args.t1) and args.t1 > 0):
        raise ValueError(f"--t1 must be a finite positive time, got {args.t1}.")
    if not 0 <= args.seed < 2**32:  # jax.random.key takes a 32-bit seed (64 with x64)
        raise ValueError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}.")


def _demo(args) -> int:
    _check_demo(args)
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", args.precision == 64)
    import jax.numpy as jnp

    from ._data import make_clusters
    from ._end_state import END_KINDS, end_state
    from ._events import EVENT_KINDS
    from ._flow import solve_effective
    from ._network import AdaptedReLUNet
    from ._results import describe

    key = jax.random.key(args.seed)
    net = AdaptedReLUNet.random(key, args.depth, args.dim, scale_spread=0.3, bias_scale=0.6)
    data = make_clusters(
        jax.random.fold_in(key, 1),
        num_points=args.points,
        num_clusters=args.clusters,
        dim=args.dim,
        target_offset=0.4,
    )
    sol = solve_effective(net, data, ts=jnp.linspace(0.0, args.t1, 9), train_weights=not args.freeze_weights)
    print(
        f"flowtrunc demo: effective flow, L={args.depth} M={args.dim} N={args.points} "
        f"Q={args.clusters}, weights {'frozen' if args.freeze_weights else 'trained'}"
    )
    print(f"{'t':>8} {'cost':>12}  truncated points per frame coordinate")
    for t, cost, counts in zip(np.asarray(sol.ts), np.asarray(sol.cost), np.asarray(sol.n_truncated)):
        print(f"{t:8.3f} {cost:12.6f}  {counts.tolist()}")
    print(f"{int(sol.num_events)} events of the whole flow (t in [0, inf)), orbit-clock solver:")
    for i in range(min(int(sol.num_events), len(sol.event_times))):
        point = int(sol.event_points[i])
        what = f"of point {point}" if point >= 0 else f"(active layer {int(sol.event_layers[i]) + 1})"
        print(
            f"  t={float(sol.event_times[i]):.5f} coordinate {int(sol.event_coords[i])} "
            f"{EVENT_KINDS[int(sol.event_kinds[i])]} {what}"
        )
    end = end_state(net, data, train_weights=not args.freeze_weights)
    for k in range(args.dim):
        when = float(end.end_time[k])
        print(
            f"coordinate {k} ends: {END_KINDS[int(end.kind[k])]} at θ* = {float(end.theta_star[k]):.5f}"
            + (f" (from t = {when:.5f})" if np.isfinite(when) else " (as t → ∞)")
        )
    message = describe(sol.result)[0]
    print("result:", message or "successful")
    return 0 if not message else 1


def _version() -> str:
    from . import __version__

    return f"flowtrunc {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowtrunc",
        description="Effective gradient flow of deep ReLU networks. Exit codes: 0 done, 2 bad input "
        "(nothing written or lost), 3 no seed succeeded, 4 a chunk stalled (see --stall-timeout), "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare",
        help="effective flow against real training over many seeds (the main job)",
        description="Runs the effective flow and gradient-descent training side by side over "
        "many seeds and writes config.json, summary.json, seeds.npz and figures/ to --out. "
        "Settings: built-in defaults, then --config, then the flags given. Every flag below is "
        "also a key of --config (and of config.json), with '-' written '_'.",
    )
    compare.add_argument("--out", required=True, help="output directory: new or empty (or a run to --resume)")
    compare.add_argument(
        "--config", help="JSON file of settings, keys as the flags below; relative paths from its folder"
    )
    compare.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _add_run_flags(compare)
    _add_process_flags(compare)
    _add_settings(compare)
    compare.set_defaults(run=_compare)

    sweep = commands.add_parser(
        "sweep",
        help="a comparison at every point of a grid of settings",
        description="Runs `compare` at every point of the product of the --grid values and writes "
        "table.csv (one row per point: settings, counts, quantiles of every metric), figures/ "
        "and points/NNNN/ (each point's full run) to --out. Without --grid: the built-in sweep "
        "lr = 0.02, 0.01 × separation = 1.0, 2.5 with 256 seeds and 50 saves per point (a few minutes on 2 "
        "CPU cores). Other settings as for compare (defaults, --config, flags); a `sweep` object "
        "in the --config file maps keys to lists of values.",
    )
    sweep.add_argument("--out", required=True, help="output directory: new or empty (or a sweep to --resume)")
    sweep.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2,...",
        help="a swept setting and its values; repeat for a product grid (default: the built-in sweep)",
    )
    sweep.add_argument("--config", help="JSON file of settings, and an optional `sweep` object of grids")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    _add_run_flags(sweep)
    _add_process_flags(sweep)
    _add_settings(sweep)
    sweep._option_string_actions["--seeds"].help = "seeds per grid point [count] (default: 256)"
    sweep._option_string_actions[
        "--saves"
    ].help = "snapshots after t = 0; must divide t1/lr [count] (default: 50)"
    sweep.set_defaults(run=_sweep)
    _add_report_and_demo(commands)
    return parser


def _add_run_flags(parser) -> None:
    """How a run is carried out (its results do not depend on these)."""
    from ._output import DEFAULT_STALL_TIMEOUT

    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=DEFAULT_STALL_TIMEOUT,
        metavar="SECONDS",
        help="stop the run (exit 4, finished chunks kept) when one chunk, compilation included, "
        f"takes longer than this; 0 waits forever (default: {DEFAULT_STALL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="folder of compiled programs reused by later runs, or 'off' (default: "
        f"${compile_cache.ENVIRONMENT} if set, else {compile_cache.default_folder()})",
    )


def _add_process_flags(parser) -> None:
    """`--coordinator`, `--num-processes`, `--process-id`, `--distributed`, `--connect-timeout`."""
    processes = parser.add_argument_group(
        "multi-process runs",
        "start one process per host (or per GPU) with the same options; seeds are "
        "split across all processes' devices and process 0 writes every file",
    )
    processes.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address (default: none, one process)"
    )
    processes.add_argument("--num-processes", type=int, help="processes in the run (default: none)")
    processes.add_argument("--process-id", type=int, help="this process's index, 0..N-1 (default: none)")
    processes.add_argument(
        "--distributed",
        action="store_true",
        help="join with JAX's cluster detection, e.g. under SLURM (default: off)",
    )
    processes.add_argument(
        "--connect-timeout",
        type=int,
        default=60,
        help="seconds to wait for the other processes (default: 60)",
    )


def _add_settings(parser) -> None:
    """One flag per `CompareConfig` setting, with its unit and default."""
    for field in dataclasses.fields(CompareConfig):
        kind = setting_kind(field)
        options = dict(dest=field.name, default=None, help=describe_setting(field.name))
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["metavar"] = field.name.upper() if field.name != "data" else "FILE.npz"
        if field.metadata["choices"] is not None:
            options["choices"] = field.metadata["choices"]
            options.pop("metavar", None)
        parser.add_argument(_flag(field.name), **options)


def _add_report_and_demo(commands) -> None:
    report = commands.add_parser("report", help="redraw figures and summary from a finished run or sweep")
    report.add_argument("dir", help="a finished run's (or sweep's) --out directory")
    report.set_defaults(run=_report)

    demo = commands.add_parser("demo", help="integrate the effective flow once and print its events")
    for name, default, text in (
        ("seed", 0, "random seed of the net and data"),
        ("depth", 3, "hidden layers L"),
        ("dim", 2, "input width M"),
        ("points", 30, "data points N"),
        ("clusters", 3, "classes Q"),
    ):
        demo.add_argument(_flag(name), type=int, default=default, help=f"{text} (default: {default})")
    demo.add_argument("--t1", type=float, default=4.0, help="final time [flow time] (default: 4.0)")
    demo.add_argument("--freeze-weights", action="store_true", help="train biases only (default: off)")
    demo.add_argument("--precision", type=int, choices=(32, 64), default=64, help="float bits (default: 64)")
    demo.set_defaults(run=_demo)


def main(argv=None) -> int:
    code = _main(argv)
    from ._output import abandoned_work

    if abandoned_work():  # a stalled or interrupted chunk still runs inside XLA: do not wait
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def check_platform() -> None:
    """JAX can start the platform it was asked for (`JAX_PLATFORMS`); else one line naming
    it and the way out, instead of JAX's AssertionError from backend selection."""
    import jax

    try:
        jax.devices()
    except Exception as error:  # RuntimeError or AssertionError, by JAX version
        asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "(default)"
        reason = str(error).splitlines()[0][:200] if str(error) else "no such device here"
        raise ValueError(
            f"JAX cannot start the platform asked for (JAX_PLATFORMS={asked}): {reason}. Unset "
            "JAX_PLATFORMS (JAX then uses the best device present) or set JAX_PLATFORMS=cpu; a GPU "
            'run needs a visible GPU and `pip install "jax[cuda12]"`.'
        ) from None


def _check_run_flags(args) -> None:
    timeout = getattr(args, "stall_timeout", 0.0)
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(
            f"--stall-timeout must be a number of seconds >= 0 (0 waits forever), got {timeout}."
        )
    connect = getattr(args, "connect_timeout", 1)
    if connect <= 0:
        raise ValueError(f"--connect-timeout must be a positive number of seconds, got {connect}.")


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("compare", "sweep"):
        _quiet_gpu_plugin_without_gpu()
    from ._output import StalledRun

    try:
        _check_run_flags(args)
        if args.command == "demo":  # compare and sweep check after joining processes
            check_platform()
        return args.run(args)
    except StalledRun as error:
        print(f"\nflowtrunc: error: {error}", file=sys.stderr)
        return 4
    except ValueError as error:
        print(f"flowtrunc: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"flowtrunc: error: {error.strerror or error}: {error.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
