"""`CompareConfig`: every setting of a comparison run, with its type, unit and help.

The fields' metadata is the one source for validation, the command-line flags and their
help text, and `config.json`.
"""

import dataclasses
import math
import os
import typing

from .._flow.solvers import EventLoop
from .._model.parameterisation import PARAMETERISATIONS
from .._training.training import COSTS, MODES, check_mode

# Settings that, when not given, suit the device the run is on (`CompareConfig.on_device`):
# float64 and small chunks on a CPU; float32 (fast on every GPU) and chunks large enough to
# fill an accelerator (measured: benchmarks/README.md, "GPU") elsewhere.
DEVICE_DEFAULTS = {
    "cpu": {"precision": 64, "chunk_size": 256},
    "accelerator": {"precision": 32, "chunk_size": 4096},
}
DEVICE_CHOSEN = tuple(DEVICE_DEFAULTS["cpu"])


def _setting(default, help: str, unit: str = "", choices=None):
    return dataclasses.field(default=default, metadata=dict(help=help, unit=unit, choices=choices))


# seeds are int32 in the compiled program; a run's per-seed metrics are gathered in memory
MAX_SEEDS = 10**9
# settings a data file fixes (read from it)
DATA_FIXED = ("dim", "points", "clusters")
# the output layer of the usual cost: general (predicted by the t = 0 pull-back) or adapted
# to a frame (predicted by the usual cost's own flow, docs/theory.md §9)
OUTPUT_LAYERS = ("general", "adapted")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that defines a comparison run (saved as `config.json`).

    Scenario (ignored for the sizes a `data` file fixes): `depth` L, `dim` M, `points` N,
    `clusters` Q, and the staircase parameters `spread`, `separation`, `jitter`,
    `target_offset` (see `make_staircase`). Initialisation: `scale_spread`, `bias_scale`
    (see `AdaptedReLUNet.random`). Dynamics: gradient descent step `lr` up to `t1`,
    `saves` snapshots after t = 0 (`t1/lr` steps must be a multiple of `saves`),
    `mode` of training, `freeze_weights` (biases only, in both flow and training),
    `parameterisation` (steps and flow on d or on log d), `off_adapted` ε (training starts
    from the adapted net plus a perturbation of relative size ε, see `off_adapted`; the
    flow from the adapted net nearest to that start), `cost` (the input-layer cost, or the
    usual cost after an output layer drawn with condition number `output_condition`; the
    output targets are the image of the scenario's targets, so the prediction's pulled-back
    targets at t = 0 are the scenario's own; `freeze_output` keeps that layer fixed;
    `output_layer` "adapted" draws it as `Q diag(d_o)` instead, predicted by the usual cost's
    own flow with the pull-back as the baseline, and `output_departure` ε starts training
    from that weight plus a perturbation of relative size ε, the flow from the nearest
    adapted layer),
    `precision` 32 or 64 (unset: from the device, see `on_device`), flow tolerances
    `rtol`/`atol` and step cap `max_steps`, `check_stability` (seeds whose `lr` exceeds
    the stability bound fail). Execution: `seeds` (count), `chunk_size` seeds per chunk
    (unset: from the device), `keep` seeds whose trajectories are saved for figures.
    Each field's help and unit: `describe_setting(name)`.
    """

    seeds: int = _setting(8192, "number of seeds; each draws its own adapted net (and data)", "count")
    depth: int = _setting(3, "hidden layers L", "count")
    dim: int = _setting(2, "input width M (fixed by --data when given)", "count")
    points: int = _setting(60, "data points N (fixed by --data when given)", "count")
    clusters: int = _setting(3, "classes Q (fixed by --data when given)", "count")
    spread: float = _setting(0.25, "within-cluster standard deviation", "input units")
    separation: float = _setting(2.5, "step between cluster centres along the frame diagonal", "input units")
    jitter: float = _setting(0.3, "standard deviation of the random shift of each centre", "input units")
    target_offset: float = _setting(1.0, "each class target sits this far above its centre", "input units")
    scale_spread: float = _setting(0.1, "spread of log(diagonal weights) at the start", "log units")
    bias_scale: float = _setting(0.1, "standard deviation of the initial biases", "input units")
    lr: float = _setting(0.01, "gradient-descent step size (= flow time per step)", "flow time")
    t1: float = _setting(5.0, "final time; training takes t1/lr steps", "flow time")
    saves: int = _setting(100, "snapshots after t = 0; must divide t1/lr", "count")
    mode: str = _setting("adapted", "training: weights kept adapted, or unconstrained", choices=MODES)
    freeze_weights: bool = _setting(False, "train biases only (flow and training)")
    off_adapted: float = _setting(
        0.0,
        "relative size ε of a random perturbation of every start weight (unconstrained training)",
        "relative Frobenius size",
    )
    parameterisation: str = _setting(
        "direct", "gradient steps and flow on the diagonal weights d, or on log d", choices=PARAMETERISATIONS
    )
    cost: str = _setting(
        "input",
        "training cost: the input-layer cost, or the usual cost after a trainable output layer",
        choices=COSTS,
    )
    freeze_output: bool = _setting(False, "keep the output layer at its initial value (cost output)")
    output_condition: float = _setting(
        1.0, "condition number of the initial output layer (cost output; 1: orthogonal)", "ratio"
    )
    output_layer: str = _setting(
        "general",
        "output layer (cost output): general, predicted by the t = 0 pull-back; or adapted, Q diag(d_o), "
        "predicted by the usual cost's own flow",
        choices=OUTPUT_LAYERS,
    )
    output_departure: float = _setting(
        0.0,
        "relative size ε of a random perturbation of the adapted output weight (unconstrained training)",
        "relative Frobenius size",
    )
    precision: int | None = _setting(None, "floating-point bits", "bits", choices=(32, 64))
    rtol: float = _setting(1e-7, "relative tolerance of the flow's ODE solver")
    atol: float = _setting(1e-9, "absolute tolerance of the flow's ODE solver", "input units")
    max_steps: int = _setting(
        64,
        "ODE solver steps allowed per orbit (all its segments); per segment of the usual cost's "
        f"event loop, at least {EventLoop.max_steps}",
        "count",
    )
    check_stability: bool = _setting(True, "fail seeds whose lr exceeds the stability bound 2/λ_max")
    chunk_size: int | None = _setting(None, "seeds computed (and saved) together", "count")
    keep: int = _setting(4, "seeds whose trajectories are saved for the figures", "count")
    data: str | None = _setting(None, ".npz file with x (N, M), labels (N,), optional targets (Q, M)")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_type(field, getattr(self, field.name))
        for name in ("seeds", "depth", "dim", "points", "clusters", "saves", "chunk_size", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive int, got {getattr(self, name)!r}.")
        if self.keep < 0:
            raise ValueError(f"`keep` must be an int >= 0, got {self.keep!r}.")
        if self.seeds > MAX_SEEDS:
            raise ValueError(
                f"`seeds` = {self.seeds} is more than one run can hold (at most {MAX_SEEDS}: seeds "
                "are 32-bit, and every seed's metrics are gathered at the end); split the work into "
                "runs over fewer seeds."
            )

        for name in ("spread", "lr", "t1", "rtol", "atol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be a positive number, got {getattr(self, name)!r}.")
        for name in ("separation", "jitter", "scale_spread", "bias_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {getattr(self, name)!r}.")
        if self.mode == "unconstrained" and self.freeze_weights:
            raise ValueError(
                "`mode='unconstrained'` contradicts `freeze_weights`: with frozen weights the "
                "net stays adapted. Drop one of the two."
            )
        if not 0 <= self.off_adapted < 1:
            raise ValueError(
                f"`off_adapted` (ε, the relative size of the start perturbation) must be in [0, 1), "
                f"got {self.off_adapted!r}; e.g. 0.05."
            )
        if self.off_adapted > 0 and self.mode != "unconstrained":
            raise ValueError(
                f"`off_adapted` = {self.off_adapted} starts training off the adapted family, which "
                "adapted training cannot represent; add mode='unconstrained' (--mode unconstrained)."
            )
        check_mode(self.mode, self.parameterisation)
        if not self.output_condition >= 1:
            raise ValueError(
                f"`output_condition` (of the initial output layer) must be >= 1, got "
                f"{self.output_condition!r}; 1 draws an orthogonal layer."
            )
        if self.output_condition != 1 and self.cost != "output":
            raise ValueError(
                f"`output_condition` = {self.output_condition} sets the output layer, which only the "
                "usual cost has; add cost='output' (--cost output)."
            )
        if self.freeze_output and self.cost != "output":
            raise ValueError(
                "`freeze_output` freezes the output layer, which only the usual cost has; add "
                "cost='output' (--cost output), or drop freeze_output."
            )
        self._check_output_layer()
        if self.data is None and self.points < self.clusters:
            raise ValueError(f"`points` ({self.points}) must be >= `clusters` ({self.clusters}).")
        steps = self.t1 / self.lr
        if not steps < 1e9:
            raise ValueError(f"t1/lr = {steps:g} steps is too many; raise `lr` or lower `t1`.")
        if abs(steps - round(steps)) > 1e-9 * steps or round(steps) % self.saves or round(steps) < 1:
            raise ValueError(
                f"t1/lr = {steps:g} steps must be an integer multiple of `saves` = {self.saves}; "
                "adjust `t1`, `lr` or `saves`."
            )

    def _check_output_layer(self) -> None:
        if self.output_layer == "adapted":
            contradiction = {
                self.cost != "output": "needs cost='output' (--cost output): only the usual cost has "
                "an output layer",
                self.output_condition != 1: f"contradicts output_condition = {self.output_condition}: an "
                "adapted layer Q diag(d_o) has the condition of d_o; drop output_condition",
                self.freeze_output: "contradicts freeze_output: its flow trains the output layer; "
                "drop freeze_output",
            }
            for bad, message in contradiction.items():
                if bad:
                    raise ValueError(f"`output_layer='adapted'` {message}.")
        if not 0 <= self.output_departure < 1:
            raise ValueError(
                f"`output_departure` (ε, the relative size of the output weight's perturbation) must "
                f"be in [0, 1), got {self.output_departure!r}; e.g. 0.05."
            )
        if self.output_departure > 0 and (self.output_layer != "adapted" or self.mode != "unconstrained"):
            raise ValueError(
                f"`output_departure` = {self.output_departure} perturbs an adapted output layer and "
                "trains its full weight: add output_layer='adapted' and mode='unconstrained' "
                "(--output-layer adapted --mode unconstrained)."
            )

    @property
    def steps(self) -> int:
        return int(round(self.t1 / self.lr))

    @classmethod
    def from_dict(cls, values: dict, *, base_dir: str | None = None) -> "CompareConfig":
        """Builds a config from a dict of settings (as in `config.json`). A relative `data`
        path resolves against `base_dir` (the folder of the file the settings came from)."""
        if not isinstance(values, dict):
            raise ValueError(f"settings must be a JSON object / dict, got {type(values).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(known)}.")
        values = dict(values)
        path = values.get("data")
        if base_dir is not None and isinstance(path, str) and not os.path.isabs(path):
            values["data"] = os.path.normpath(os.path.join(base_dir, path))
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def on_device(self, saved: dict | None = None, backend: str | None = None) -> "CompareConfig":
        """Fills the settings left unset (`None`) that depend on the device: first from
        `saved` (the settings a resumed run began with), then from `DEVICE_DEFAULTS` for
        `backend` (default: JAX's default backend; 'cpu' or an accelerator). In a process
        that already runs JAX with x64 enabled, an unset precision is 64 on every device."""
        unset = [name for name in DEVICE_CHOSEN if getattr(self, name) is None]
        if not unset:
            return self
        chosen = {name: saved[name] for name in unset if saved and saved.get(name) is not None}
        if len(chosen) < len(unset):
            x64 = False
            if backend is None:
                import jax

                backend, x64 = jax.default_backend(), jax.config.jax_enable_x64
            table = DEVICE_DEFAULTS["cpu" if backend == "cpu" else "accelerator"]
            table = {**table, "precision": 64} if x64 else table
            chosen = {name: table[name] for name in unset} | chosen
        return dataclasses.replace(self, **chosen)


def event_loop_steps(config: CompareConfig) -> int:
    """Solver steps per segment of the usual cost's event loop: `max_steps`, and at least
    the event loop's own default (its segments run to the next event or t1; an orbit's
    steps are a few dozen in all, its budget sized for that)."""
    return max(config.max_steps, EventLoop.max_steps)


def describe_setting(name: str) -> str:
    """Help text of a setting: what it is, its unit and default."""
    field = {f.name: f for f in dataclasses.fields(CompareConfig)}[name]
    unit = f" [{field.metadata['unit']}]" if field.metadata["unit"] else ""
    default = field.default
    if name in DEVICE_CHOSEN:
        cpu, other = DEVICE_DEFAULTS["cpu"][name], DEVICE_DEFAULTS["accelerator"][name]
        default = f"from the device: {cpu} on a CPU, {other} on a GPU or TPU"
    return f"{field.metadata['help']}{unit} (default: {default})"


def setting_kind(field) -> type:
    """The base type of a field: int, float, bool or str."""
    args = [a for a in typing.get_args(field.type) if a is not type(None)]
    return args[0] if args else field.type


def _check_type(field, value) -> None:
    kind, name = setting_kind(field), field.name
    got = f"{value!r} ({type(value).__name__})"
    if value is None and field.default is None:
        return
    if kind is bool:
        ok = isinstance(value, bool)
        need = "true or false"
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        need = "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        need = "a finite number"
    else:
        ok = isinstance(value, str) and (kind is not str or value.strip() != "")
        need = "a path (string)" if name == "data" else "a string"
    choices = field.metadata["choices"]
    if ok and choices is not None and value not in choices:
        ok, need = False, f"one of {list(choices)}"
    if not ok:
        raise ValueError(f"`{name}` must be {need}, got {got}. {describe_setting(name)}.")
