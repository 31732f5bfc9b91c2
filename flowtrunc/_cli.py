"""The `flowtrunc` command line: `compare` (the main job), `report`, `demo`.

Exit codes: 0 done; 2 bad input or files (nothing lost; the message says what to fix);
3 the run finished but no seed succeeded (its results are meaningless); 130 interrupted.
"""

import argparse
import dataclasses
import math
import os
import sys

from ._experiment.config import CompareConfig, describe_setting, setting_kind
from ._run import compile_cache
from ._run.console import data_cast, print_cache_use, print_summary, print_sweep
from ._run.demo import run_demo
from ._run.processes import (
    check_platform,
    join_processes,
    print_device_notice,
    quiet_gpu_plugin_without_gpu,
    set_process_precision,
)
from ._run.settings import read_config_file, resolve_config


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _compare(args) -> int:
    config = resolve_config(args)
    join_processes(args)
    from ._run.compare_run import settle_device_settings

    config = settle_device_settings(config, args.out, args.resume)  # precision, chunk size
    print_device_notice()
    set_process_precision(config.precision)
    import jax

    cache = compile_cache.enable(compile_cache.chosen_folder(args.compile_cache))
    from ._experiment.comparison import resolve_data
    from ._run.compare_run import run_compare

    resolved, _ = resolve_data(config)
    print(
        f"flowtrunc compare: {resolved.seeds} seeds, L={resolved.depth} M={resolved.dim} "
        f"N={resolved.points} Q={resolved.clusters}, lr={resolved.lr}, t1={resolved.t1}, "
        f"mode={resolved.mode}{' (weights frozen)' if resolved.freeze_weights else ''}, "
        f"{resolved.parameterisation} parameterisation, {resolved.cost} cost, "
        f"float{resolved.precision}{data_cast(resolved)}, {jax.device_count()} device(s) -> {args.out}",
        file=sys.stderr,
    )
    try:
        run_compare(resolved, args.out, resume=args.resume, stall_timeout=args.stall_timeout)
        print_cache_use(cache)
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
    return print_summary(args.out)


def _report(args) -> int:
    from ._run.report import write_report
    from ._run.sweep import SWEEP, write_table

    try:
        if os.path.isfile(os.path.join(args.dir, SWEEP)):
            write_table(args.dir)
            return print_sweep(args.dir)
        write_report(args.dir)
    except KeyError as missing:
        raise ValueError(
            f"{args.dir!r} was written by another flowtrunc version (it lacks {missing}); run it "
            "again with this version in a new --out directory."
        ) from None
    return print_summary(args.dir)


def _sweep(args) -> int:
    from ._run.sweep import DEFAULT_GRID, SWEEP_DEFAULTS, parse_grid, run_sweep, settle_sweep_settings

    items = list(args.grid or [])
    if args.config is not None:
        section = read_config_file(args.config).get("sweep", {})
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
    print_device_notice()
    set_process_precision(base.precision)
    import jax

    cache = compile_cache.enable(compile_cache.chosen_folder(args.compile_cache))
    from ._experiment.comparison import resolve_data

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
        print_cache_use(cache)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished points are kept. Continue with the same command plus --resume.",
            file=sys.stderr,
        )
        return 130
    if jax.process_index() != 0:
        print(f"process {jax.process_index()} done; process 0 wrote the sweep to {args.out}", file=sys.stderr)
        return 0
    return print_sweep(args.out)


def _version() -> str:
    from ._version import __version__

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
    from ._run.watchdog import DEFAULT_STALL_TIMEOUT

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
    demo.set_defaults(run=run_demo)


def main(argv=None) -> int:
    code = _main(argv)
    from ._run.watchdog import abandoned_work

    if abandoned_work():  # a stalled or interrupted chunk still runs inside XLA: do not wait
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


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
        quiet_gpu_plugin_without_gpu()
    from ._run.watchdog import StalledRun

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
