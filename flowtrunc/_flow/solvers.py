"""The two solvers of the effective flow as options that carry their own defaults (as
diffrax's step-size controllers do): `OrbitClock` (the default) and `EventLoop` (the
independent cross-check). `solve_effective(..., solver=...)` and `end_state(..., solver=...)`
take them."""

import warnings
from typing import ClassVar

import diffrax
import equinox as eqx
import jax.numpy as jnp

from .._validate import check_positive_int


class OrbitClock(eqx.Module):
    """Each coordinate its own problem: diffrax integrates the data-free orbit in θ* (events
    only at layer switches), the data drive the clock in closed form, and the state at the
    output times follows by inverting the clock (docs/theory.md §7). Its sequential work does
    not grow with the number of points, and it gives the state at t = inf.

    - `ode_solver`: adaptive diffrax solver of the orbit (default `diffrax.Dopri8()`: the
      orbit is smooth between switches, and at these tolerances an 8th-order method takes a
      third of Tsit5's steps, each kept as one slot of the clock).
    - `rtol`, `atol`: its PID tolerances (default 1e-10/1e-12 in float64, 1e-6/1e-7 in float32).
    - `max_steps`: solver steps per orbit, all its segments together, and the slots kept of
      them (default 64; 16 at most were measured on the compare problem, 37 with
      `scale_spread` 0.6). An orbit that needs more reports `RESULTS.solver_failed`.
    """

    ode_solver: diffrax.AbstractAdaptiveSolver = diffrax.Dopri8()
    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 64

    defaults: ClassVar = {"float64": (1e-10, 1e-12), "float32": (1e-6, 1e-7)}

    def tolerances(self, dtype) -> tuple[float, float]:
        return _tolerances(self, dtype)


class EventLoop(eqx.Module):
    """The event-driven segment loop: one diffrax solve per segment, restarted at every
    truncation, release and layer switch (docs/theory.md §5). With frozen weights
    `solve_frozen_exact` is its closed form.

    - `ode_solver`: adaptive diffrax solver (default `diffrax.Tsit5()`).
    - `rtol`, `atol`: PID tolerances (default 1e-8/1e-10 in float64, 1e-5/1e-6 in float32).
    - `max_steps`: solver steps per segment (default 4096).
    - `max_segments`: segments before the final time (default `M (N + L + 1) + 2`, enough
      since θ* is monotone per coordinate).
    """

    ode_solver: diffrax.AbstractAdaptiveSolver = diffrax.Tsit5()
    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 4096
    max_segments: int | None = None

    defaults: ClassVar = {"float64": (1e-8, 1e-10), "float32": (1e-5, 1e-6)}

    def tolerances(self, dtype) -> tuple[float, float]:
        return _tolerances(self, dtype)


def _tolerances(solver, dtype) -> tuple[float, float]:
    """`(rtol, atol)`: those given, else the solver's defaults for `dtype`, checked."""
    default = solver.defaults["float64" if jnp.finfo(dtype).bits >= 64 else "float32"]
    rtol = default[0] if solver.rtol is None else solver.rtol
    atol = default[1] if solver.atol is None else solver.atol
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"`rtol` and `atol` must be positive numbers, got {name} = {value!r}.")
    return float(rtol), float(atol)


def check_solver(solver, allowed: tuple) -> None:
    if not isinstance(solver, allowed):
        names = " or ".join(f"ft.{kind.__name__}()" for kind in allowed)
        raise ValueError(f"`solver` must be {names}, got {type(solver).__name__}.")
    if not isinstance(solver.ode_solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"`ode_solver` must be an adaptive diffrax solver (with an error estimate), e.g. "
            f"diffrax.Tsit5() or diffrax.Dopri8(); got {type(solver.ode_solver).__name__}."
        )
    check_positive_int("max_steps", solver.max_steps)


def from_old_keywords(solver, entry_point: str, **old):
    """`solver` from the keywords of version 0.1 (`method=`, a diffrax solver as `solver=`,
    `rtol=`, `atol=`, `max_steps=`, `max_segments=`), with one DeprecationWarning naming the
    replacement; they are accepted for one version."""
    given = {name: value for name, value in old.items() if value is not None}
    old_solver = isinstance(solver, diffrax.AbstractSolver)  # anything else: check_solver says what
    if not given and not old_solver:
        return OrbitClock() if solver is None else solver
    if isinstance(solver, (OrbitClock, EventLoop)):
        raise ValueError(
            f"`{entry_point}`: give the settings inside `solver` ({type(solver).__name__}(...)), "
            f"not also as {', '.join(f'`{name}=`' for name in given)}."
        )
    if solver is not None and not old_solver:
        return solver  # not a solver at all: `check_solver` says so
    old_names = [f"`{name}=`" for name in given] + (["a diffrax solver as `solver=`"] if old_solver else [])
    method = given.pop("method", "orbit")
    if method not in ("orbit", "events"):
        raise ValueError(f"`method` must be 'orbit' or 'events', got {method!r}.")
    kind = OrbitClock if method == "orbit" else EventLoop
    if kind is OrbitClock:
        given.pop("max_segments", None)  # the orbit has no segment loop (ignored before too)
    settings = {**({"ode_solver": solver} if old_solver else {}), **given}
    written = ", ".join(f"{name}={value!r}" for name, value in settings.items())
    warnings.warn(
        f"`{entry_point}`: {', '.join(old_names)} {'is' if len(old_names) == 1 else 'are'} deprecated and "
        "will be removed in the next version; "
        f"pass `solver=ft.{kind.__name__}({written})` instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    return kind(**settings)
