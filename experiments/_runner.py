"""Small helpers shared by the experiments: resumable stages, atomic writes, a timing table."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file and a rename, so a crash never leaves half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    raise TypeError(f"cannot serialize {type(x).__name__}")


class StageRunner:
    """Runs named stages once per run directory; a rerun loads finished stages from disk.

    Each stage returns a dict of arrays, saved to `<run_dir>/stages/<name>.npz` when it finishes.
    """

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.log = log
        self.timings: dict[str, float] = {}
        self.resumed: list[str] = []

    def __call__(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.run_dir / "stages" / f"{name}.npz"
        if path.exists():
            with np.load(path) as data:
                out = {k: data[k] for k in data.files}
            self.resumed.append(name)
            self.timings[name] = float(out.pop("_seconds"))
            self.log(f"[{name}] loaded from {path} (finished earlier)")
            return out
        self.log(f"[{name}] running ...")
        start = time.perf_counter()
        out = {k: np.asarray(v) for k, v in fn().items()}
        seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        np.savez(buffer, _seconds=seconds, **out)
        atomic_write_bytes(path, buffer.getvalue())
        self.timings[name] = seconds
        self.log(f"[{name}] done in {seconds:.2f} s")
        return out

    def timing_table(self) -> str:
        width = max(len(n) for n in self.timings) if self.timings else 5
        lines = [f"{'stage'.ljust(width)}  seconds  note", f"{'-' * width}  -------  ----"]
        for name, seconds in self.timings.items():
            note = "resumed" if name in self.resumed else ""
            lines.append(f"{name.ljust(width)}  {seconds:7.2f}  {note}")
        lines.append(f"{'total'.ljust(width)}  {sum(self.timings.values()):7.2f}")
        return "\n".join(lines)


class UpdateBar:
    """A tqdm bar for a training loop, fed by `progress(update, mean_return[, success])` calls.

    `initial` updates were done before (a resumed run): the bar starts there and the env-steps/s
    it shows count only this session's updates.
    """

    def __init__(self, total: int, description: str, steps_per_update: int, initial: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=description, unit="upd",
                        dynamic_ncols=True, mininterval=2.0)
        self.steps_per_update = steps_per_update
        self.initial = initial
        self.start = time.perf_counter()

    def __call__(self, update, mean_return, success=None) -> None:
        self.bar.update(1)
        if self.bar.n % 10 == 0 or self.bar.n == self.bar.total or success is not None:
            rate = ((self.bar.n - self.initial) * self.steps_per_update
                    / (time.perf_counter() - self.start))
            postfix = {"mean_return": f"{float(mean_return):.1f}", "steps_per_s": f"{rate:,.0f}"}
            if success is not None:
                postfix["success"] = f"{float(success):.2f}"
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        self.bar.close()


def tree_to_arrays(tree, prefix: str) -> dict:
    """A pytree of dicts of arrays → {f"{prefix}.a.b": array}, for a stage's npz."""
    from flax import serialization, traverse_util

    flat = traverse_util.flatten_dict(serialization.to_state_dict(tree), sep=".")
    return {f"{prefix}.{name}": np.asarray(value) for name, value in flat.items()}


def tree_from_arrays(arrays: dict, prefix: str, template):
    """Inverse of `tree_to_arrays`: the entries under `prefix`, in the structure and dtypes of
    `template`."""
    import jax
    from flax import serialization, traverse_util

    start = len(prefix) + 1
    flat = {name[start:]: value for name, value in arrays.items() if name.startswith(prefix + ".")}
    state = traverse_util.unflatten_dict(flat, sep=".")
    restored = serialization.from_state_dict(template, state)
    return jax.tree_util.tree_map(lambda t, v: np.asarray(v, np.asarray(t).dtype), template, restored)


def run_cli(main: Callable[[], object]) -> None:
    """Runs an experiment's `main` from the command line and prints its total wall time."""
    start = time.perf_counter()
    main()
    print(f"finished in {time.perf_counter() - start:.1f} s")
