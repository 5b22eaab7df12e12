import os
import tempfile

import jax
import pytest

# Experiments turn on JAX's persistent compilation cache: keep the tests' entries out of ~/.cache.
os.environ.setdefault("PGX_JAX_COMPILE_CACHE", tempfile.mkdtemp(prefix="pgx_jax_test_cache_"))

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module. Without it the full suite aborted
    (SIGABRT, no Python traceback) in its last test, which passes alone; the suspected cause,
    not proven, is one process holding every module's compiled programs (memory mappings
    toward vm.max_map_count, 65530 here)."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster with this machine's 2 cores, started and stopped by the module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
