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
    """A tqdm bar for a jitted training loop, fed by `progress(update, mean_return)` callbacks."""

    def __init__(self, total: int, description: str, steps_per_update: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=description, unit="upd", dynamic_ncols=True, mininterval=2.0)
        self.steps_per_update = steps_per_update
        self.start = time.perf_counter()

    def __call__(self, update, mean_return) -> None:
        self.bar.update(1)
        if self.bar.n % 10 == 0 or self.bar.n == self.bar.total:
            rate = self.bar.n * self.steps_per_update / (time.perf_counter() - self.start)
            self.bar.set_postfix(mean_return=f"{float(mean_return):.1f}", steps_per_s=f"{rate:,.0f}")

    def close(self) -> None:
        self.bar.close()


def run_cli(main: Callable[[], object]) -> None:
    """Runs an experiment's `main` from the command line and prints its total wall time."""
    start = time.perf_counter()
    main()
    print(f"finished in {time.perf_counter() - start:.1f} s")
