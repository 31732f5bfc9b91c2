"""Programs compiled once: the persistent compilation cache of the command line and the
traced programs kept beside it. Reuse is read off JAX's own cache counters (and ours for
traced programs), never off wall time."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY

from flowtrunc.internal import compile_cache, program_cache


@pytest.fixture
def program_folder(tmp_path):
    """A private folder of traced programs for one test (the suite's own is restored)."""
    saved, memory = program_cache._folder, dict(program_cache._memory)
    program_cache.use_folder(str(tmp_path / "programs"))
    program_cache._memory.clear()
    program_cache._noticed.clear()
    yield tmp_path / "programs"
    program_cache.use_folder(saved)
    program_cache._memory.clear()
    program_cache._memory.update(memory)


def _scaled_sine(x, pair):
    return jnp.sin(x) * pair[0] + pair[1]


def test_a_traced_program_is_saved_once_and_loaded_by_a_later_process(program_folder):
    x, pair = jnp.linspace(0.0, 1.0, 5), (jnp.asarray(2.0), jnp.asarray(0.5))
    before = program_cache.counts()
    first = program_cache.call("sine", _scaled_sine, (x, pair), static="v1")
    assert program_cache.counts()["saved"] == before["saved"] + 1
    assert len(os.listdir(program_folder)) == 1
    program_cache._memory.clear()  # as a new process would
    again = program_cache.call("sine", _scaled_sine, (x, pair), static="v1")
    assert program_cache.counts()["loaded"] == before["loaded"] + 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, _scaled_sine(x, pair))
    # another static setting or shape is another program
    program_cache.call("sine", _scaled_sine, (x, pair), static="v2")
    program_cache.call("sine", _scaled_sine, (x[:3], pair), static="v1")
    assert len(os.listdir(program_folder)) == 3


def test_a_damaged_saved_program_is_traced_again_with_one_notice(program_folder, capsys):
    x, pair = jnp.ones(3), (jnp.asarray(1.0), jnp.asarray(0.0))
    program_cache.call("sine", _scaled_sine, (x, pair), static=0)
    for name in os.listdir(program_folder):
        (program_folder / name).write_bytes(b"not a program")
    program_cache._memory.clear()
    result = program_cache.call("sine", _scaled_sine, (x, pair), static=0)
    np.testing.assert_array_equal(result, jnp.sin(x))
    notes = [line for line in capsys.readouterr().err.splitlines() if "could not be read" in line]
    assert len(notes) == 1 and "tracing it again" in notes[0]


def test_an_unwritable_cache_folder_is_one_line_of_notice(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert compile_cache.enable(str(blocker / "cache")) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be used" in err[0] and "--compile-cache" in err[0]


@pytest.mark.parametrize(
    "flag, environment, expected",
    [
        ("off", None, None),
        (None, "off", None),
        (None, "", None),
        ("/x/y", "/a", "/x/y"),
        (None, "/a/b", "/a/b"),
    ],
)
def test_the_folder_follows_flag_then_environment(monkeypatch, flag, environment, expected):
    if environment is None:
        monkeypatch.delenv(compile_cache.ENVIRONMENT, raising=False)
    else:
        monkeypatch.setenv(compile_cache.ENVIRONMENT, environment)
    assert compile_cache.chosen_folder(flag) == expected


def test_the_default_folder_is_per_user(monkeypatch):
    monkeypatch.delenv(compile_cache.ENVIRONMENT, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert compile_cache.chosen_folder(None) == os.path.join("/somewhere", "flowtrunc", "compile")


def _cli_run(out, cache, extra=()):
    config = {**TINY, "seeds": 4}
    env = {**os.environ, compile_cache.ENVIRONMENT: str(cache)}
    args = [sys.executable, "-m", "flowtrunc._cli", "compare", "--out", str(out), *extra]
    args += ["--config", str(_write_config(out.parent / f"{out.name}.json", config))]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stderr.splitlines() if line.startswith("compilation cache:"))
    numbers = [int(n) for n in re.findall(r"(\d+) (?:of|compiled|traced)", line)]
    return done.stderr, dict(zip(("hits", "requests", "writes", "loaded", "saved"), numbers))


def _write_config(path, config):
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_a_second_cli_run_compiles_and_traces_nothing_new(tmp_path):
    """Four real CLI processes (a minute each without the cache, hence slow): a fresh cache,
    the same configuration again, the cache damaged, then a folder that cannot be made."""
    cache = tmp_path / "cache"
    _, first = _cli_run(tmp_path / "one", cache)
    assert first["writes"] > 0 and first["saved"] == 1
    _, second = _cli_run(tmp_path / "two", cache)
    assert second["writes"] == 0 and second["hits"] == second["requests"] > 0
    assert second["loaded"] == 1 and second["saved"] == 0
    with np.load(tmp_path / "one" / "seeds.npz") as a, np.load(tmp_path / "two" / "seeds.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for root, _, files in os.walk(cache):
        for name in files:
            if not name.startswith("."):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"damaged")
    err, third = _cli_run(tmp_path / "three", cache)
    assert third["saved"] == 1 and len([x for x in err.splitlines() if "could not be read" in x]) <= 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, compile_cache.ENVIRONMENT: str(blocker / "sub")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowtrunc._cli",
            "compare",
            "--out",
            str(tmp_path / "four"),
            "--config",
            str(_write_config(tmp_path / "four.json", {**TINY, "seeds": 4})),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0 and done.stderr.count("cannot be used") == 1, done.stderr[-2000:]


def test_jax_counts_are_read_by_event(monkeypatch):
    """The counters follow JAX's monitoring events (the names JAX records)."""
    before = compile_cache.counts()
    compile_cache._listen()
    jax.monitoring.record_event("/jax/compilation_cache/cache_hits")
    assert compile_cache.counts()["hits"] == before["hits"] + 1


@pytest.mark.parametrize("entry", ["solve_effective", "end_state"])
def test_the_orbit_clock_programs_can_be_exported(entry):
    """The flow's programs hold no host callback, so the traced-program cache can keep them
    (a traced first step given to diffrax as `dt0` brought in its run-time check, and with it
    no compare program was saved any more). Tracing only: nothing is compiled."""
    from helpers import problem

    import flowtrunc as ft

    net, data = problem(jax.random.key(0))
    ts = jnp.linspace(0.0, 2.0, 5)
    run = {
        "solve_effective": lambda n, d: ft.solve_effective(n, d, ts=ts).thresholds,
        "end_state": lambda n, d: ft.end_state(n, d).theta_star,
    }[entry]
    exported = jax.export.export(jax.jit(run))(net, data)
    assert "callback" not in exported.mlir_module()
