import jax
import pytest
from helpers import TINY

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(params=[0, 1, 2])
def seed(request):
    """A seed that shows in the test id, so a failure names it."""
    return request.param


@pytest.fixture
def key(seed):
    return jax.random.key(seed)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each module compiles its own programs; dropping them afterwards keeps one long
    pytest process (CI runs the whole suite in one) from accumulating them."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished run of the TINY comparison, shared (read-only) by every test that
    needs a reference run, instead of each computing its own."""
    from flowtrunc._compare import CompareConfig
    from flowtrunc._output import run_compare

    out = str(tmp_path_factory.mktemp("tiny") / "run")
    assert run_compare(CompareConfig(**TINY), out, progress=False)
    return out
