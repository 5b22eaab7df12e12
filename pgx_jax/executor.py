"""The executor seam: where independent trainings run.

Ground-truth fine-tunings, downstream trainings and seeds are many trainings that share nothing
but their inputs. `executor.run(fn, names)` computes them: `fn(part) -> {name: result}` trains
the named ones of `part` (vmapped together where the work allows) and the executor decides the
parts and where each runs, yielding each part's results as it finishes:

- `InProcess` (the default): one call of `fn` with every name, in this process — one vmapped
  program.
- `RayExecutor` (`--executor ray` in the experiments): parts of `chunk` names, each a Ray task on
  a local Ray (this machine's cores) or on a running cluster (`--ray-address`). A task whose
  worker dies is retried (Ray's `max_retries`). Ray is imported only here, only when used.

The experiments go through `StageRunner.batch(names, fn, executor=...)`, which stores every
result as its part arrives (atomically) and computes only the missing ones on a rerun, so a run
that loses its driver resumes from what was written. `fn` must be picklable for Ray (a closure
or a local function is pickled by value with cloudpickle; a module's function by reference, so
its module must be importable on the workers): it should hold arrays and frozen configs, never
open files, envs or progress bars, and it must give a name the same result whichever other
names share its call (a per-name PRNG key, not one split across the call).

Results are bitwise equal wherever the computation is the same: the same parts (`chunk`) in
this process or on Ray. Parts of another size vmap another batch, and XLA's CPU kernels then
round differently (relative differences ~1e-6 in the fine-tuned parameters; tested).
"""

from __future__ import annotations

import socket
from typing import Callable, Iterator

EXECUTORS = ("inprocess", "ray")


def parts(names: list, chunk: int | None) -> list[list]:
    """`names` in consecutive parts of `chunk` (None: one part)."""
    names = list(names)
    chunk = chunk or max(len(names), 1)
    return [names[i:i + chunk] for i in range(0, len(names), chunk)]


class InProcess:
    """Runs a batch in this process: one call with every name (default), or parts of `chunk`
    one after the other (the parts a `RayExecutor` with the same chunk would make: the same
    computation, the same bits)."""

    name = "inprocess"

    def __init__(self, chunk: int | None = None):
        self.chunk = chunk

    def run(self, fn: Callable[[list], dict], names: list) -> Iterator[dict]:
        """Yields fn(part) for each part, in order."""
        for part in parts(names, self.chunk):
            yield fn(part)


def _check_reachable(address: str, timeout: float) -> None:
    """Raises ConnectionError within `timeout` seconds when nothing listens at a "host:port" or
    "ray://host:port" address ("auto" and other forms are left to Ray)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at {address!r} ({error}); start one "
                              "with `ray start --head` on a node, or leave --ray-address out "
                              "for a local Ray on this machine") from None


class RayExecutor:
    """Runs the parts of a batch as Ray tasks, on a local Ray or a running cluster.

    Args:
      address: a running cluster ("host:port" of its head, "ray://host:port" for Ray Client,
        or "auto"); None starts a local Ray with `num_cpus` (default: this machine's cores).
      chunk: names per task (a task vmaps its names together, like `InProcess` does with all).
      max_retries: how often a task whose worker died is run again (Ray's `max_retries`).
      connect_timeout: seconds to wait for the address to answer before giving up.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, chunk: int = 1, max_retries: int = 3,
                 num_cpus: int | None = None, connect_timeout: float = 5.0):
        try:
            import ray
        except ImportError:
            raise ImportError("--executor ray needs Ray: pip install -e '.[distributed]'") from None
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        self.ray, self.chunk, self.max_retries = ray, chunk, max_retries
        if not ray.is_initialized():
            if address:
                _check_reachable(address, connect_timeout)
            ray.init(address=address or None, num_cpus=None if address else num_cpus,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)

    def run(self, fn: Callable[[list], dict], names: list) -> Iterator[dict]:
        """Yields fn(part) for parts of `chunk` names, in the order they finish."""
        import jax

        remote = self.ray.remote(max_retries=self.max_retries)(_call)
        shared = self.ray.put(fn)  # shipped once, not once per part
        cache = jax.config.jax_compilation_cache_dir  # the driver's, if it has one
        pending = [remote.remote(shared, part, cache) for part in parts(names, self.chunk)]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])


def _call(fn: Callable[[list], dict], names: list, compile_cache: str | None) -> dict:
    """A Ray task: fn(names) (Ray remotes functions, not callable objects or partials). With the
    driver's persistent compilation cache directory the worker uses it too (on each node its
    own copy of that path), so only a worker's first part of a shape compiles: every part
    traces a new jit, and without a cache it compiles again (seconds for a PPO program)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if compile_cache and jax.config.jax_compilation_cache_dir != compile_cache:
        # A worker outlives a part: when the driver's directory changed since this worker's
        # last part, JAX's cache (opened once per process) is reset so the new one is used.
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", compile_cache)
    return fn(names)


def make_executor(name: str, address: str = "", chunk: int = 1):
    """The executor a run's --executor, --ray-address and --ray-chunk name."""
    if name == "inprocess":
        return InProcess()
    if name == "ray":
        return RayExecutor(address or None, chunk=chunk)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")

