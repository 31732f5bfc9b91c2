import jax
import pytest

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
