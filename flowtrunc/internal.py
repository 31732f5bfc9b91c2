"""flowtrunc's internals in one namespace, for its own tests and benchmarks and for anyone
who needs to look under the public API (as `equinox.internal` is for Equinox).

Not the public API: no deprecation promise, and any name here may change in any version.
Modules are exported by what they define (`comparison`, `orbit`, `sweep`, ...) so that a
test can patch a name inside one; the other names are the functions and tables the tests
call directly. Everything public is `flowtrunc.*` and is not repeated here.
"""

from . import _program_cache as program_cache
from ._cli import build_parser as build_parser
from ._cli import main as main
from ._experiment import comparison as comparison
from ._experiment.comparison import _compare_batch as compare_batch
from ._experiment.comparison import compare_seed as compare_seed
from ._experiment.comparison import float_dtype as float_dtype
from ._experiment.comparison import output_layers as output_layers
from ._experiment.comparison import resolve_data as resolve_data
from ._experiment.comparison import run_chunk as run_chunk
from ._experiment.comparison import seed_problem as seed_problem
from ._experiment.comparison import split_values as split_values
from ._experiment.config import DEVICE_CHOSEN as DEVICE_CHOSEN
from ._experiment.config import DEVICE_DEFAULTS as DEVICE_DEFAULTS
from ._experiment.kinds import KIND as KIND
from ._experiment.kinds import SOLUTION_KINDS as SOLUTION_KINDS
from ._experiment.kinds import solution_kinds as solution_kinds
from ._experiment.metrics import METRICS as METRICS
from ._experiment.summary import DESCRIPTIONS as DESCRIPTIONS
from ._experiment.summary import failure_fix as failure_fix
from ._experiment.summary import summarise as summarise
from ._flow import clock as clock
from ._flow import orbit as orbit
from ._flow import solve as flow_solve
from ._flow.coordinate_end import END as END
from ._flow.events import crossing_root_finder as crossing_root_finder
from ._flow.field import gamma_column as gamma_column
from ._flow.field import start_layer as start_layer
from ._flow.orbit_clock import orbit_tools as orbit_tools
from ._flow.solve import prepare_inputs as prepare_inputs
from ._flow.usual_cost import solve as usual_cost_solve
from ._linalg import orthonormal_columns as orthonormal_columns
from ._linalg import polar_factor as polar_factor
from ._linalg import solve as solve
from ._linalg import symmetric_eigen as symmetric_eigen
from ._run import compare_run as compare_run
from ._run import compile_cache as compile_cache
from ._run import directory as directory
from ._run import files as files
from ._run import processes as processes
from ._run import report as report
from ._run import sweep as sweep
from ._run import watchdog as watchdog
from ._run.chunks import check_chunks as check_chunks
from ._run.chunks import chunk_name as chunk_name
from ._run.chunks import finished_ranges as finished_ranges
from ._run.chunks import load_metrics as load_metrics
from ._run.chunks import pending_chunks as pending_chunks
from ._run.chunks import run_fingerprint as run_fingerprint
from ._run.compare_run import run_compare as run_compare
from ._run.compare_run import settle_device_settings as settle_device_settings
from ._run.console import NO_SEED_OK as NO_SEED_OK
from ._run.console import print_summary as print_summary
from ._run.files import OutputError as OutputError
from ._run.processes import gpu_fallback_notice as gpu_fallback_notice
from ._run.report import figures as figures
from ._run.report import load_run as load_run
from ._run.settings import resolve_config as resolve_config
from ._run.sweep import DEFAULT_GRID as DEFAULT_GRID
from ._run.sweep import SWEEP as SWEEP
from ._run.sweep import SWEEP_DEFAULTS as SWEEP_DEFAULTS
from ._run.sweep import grid_points as grid_points
from ._run.sweep import parse_grid as parse_grid
from ._run.sweep import read_table as read_table
from ._run.sweep import run_sweep as run_sweep
from ._run.sweep_figures import one_key as one_key
from ._training import training as training
from ._training.training import rebuild as rebuild
from ._training.training import trainable_params as trainable_params

__all__ = [
    "DEFAULT_GRID",
    "DESCRIPTIONS",
    "DEVICE_CHOSEN",
    "DEVICE_DEFAULTS",
    "END",
    "KIND",
    "METRICS",
    "NO_SEED_OK",
    "OutputError",
    "SOLUTION_KINDS",
    "SWEEP",
    "SWEEP_DEFAULTS",
    "build_parser",
    "check_chunks",
    "chunk_name",
    "clock",
    "compare_batch",
    "compare_run",
    "compare_seed",
    "comparison",
    "compile_cache",
    "crossing_root_finder",
    "directory",
    "failure_fix",
    "figures",
    "files",
    "finished_ranges",
    "float_dtype",
    "flow_solve",
    "gamma_column",
    "gpu_fallback_notice",
    "grid_points",
    "load_metrics",
    "load_run",
    "main",
    "one_key",
    "orbit",
    "orbit_tools",
    "orthonormal_columns",
    "output_layers",
    "parse_grid",
    "pending_chunks",
    "polar_factor",
    "prepare_inputs",
    "print_summary",
    "processes",
    "program_cache",
    "read_table",
    "rebuild",
    "report",
    "resolve_config",
    "resolve_data",
    "run_chunk",
    "run_compare",
    "run_fingerprint",
    "run_sweep",
    "seed_problem",
    "settle_device_settings",
    "solution_kinds",
    "solve",
    "split_values",
    "start_layer",
    "summarise",
    "sweep",
    "symmetric_eigen",
    "trainable_params",
    "training",
    "usual_cost_solve",
    "watchdog",
]
