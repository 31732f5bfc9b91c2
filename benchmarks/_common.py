"""Shared benchmark plumbing: timing (warm, medians), hardware and version record."""

import json
import os
import platform
import statistics
import time

import jax


def environment() -> dict:
    import diffrax
    import equinox
    import numpy
    import optax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "equinox": equinox.__version__,
        "diffrax": diffrax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "x64": bool(jax.config.jax_enable_x64),
    }


def copy_bandwidth() -> float:
    """Bytes per second of a large on-device array copy (read + write), the roofline's roof."""
    import jax.numpy as jnp

    data = jnp.ones(2**26, jnp.float32)  # 256 MiB
    copy = jax.jit(lambda a: a + 1.0)
    jax.block_until_ready(copy(data))
    start = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(copy(data))
    return 2 * data.nbytes * 5 / (time.perf_counter() - start)


def timed(fn, *args, repeats: int = 5):
    """Returns (first-call seconds incl. compilation, median warm seconds, last output)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), out


def report(name: str, rows: list[dict], path: str | None = None) -> None:
    record = {"benchmark": name, "environment": environment(), "rows": rows}
    text = json.dumps(record, indent=2)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
