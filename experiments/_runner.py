"""Small helpers shared by the experiments: resumable stages, atomic writes, a timing table."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pgx_jax.executor import InProcess


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


class SettingError(ValueError):
    """A setting the user chose is invalid, or a run's stored stages were made with other settings.

    `run_cli` prints the message after "error: " on stderr and exits with status 2, as argparse
    does for a malformed flag; no traceback, since the fix is the user's.
    """


class StaleStageError(SettingError):
    """A stage stored in the run directory was made with other settings than the current ones."""


def flag(name: str) -> str:
    """A config field's command-line flag: `steps_per_task` → `--steps-per-task`."""
    return "--" + name.replace("_", "-")


def _canonical(value):
    """A setting as JSON would store it (tuples → lists), so stored and current values compare."""
    return json.loads(json.dumps(value, default=_jsonable))


class StageRunner:
    """Runs named stages once per run directory; a rerun reuses finished stages that the current
    settings would make again, and refuses to mix results of different settings.

    Each stage returns a dict of arrays, saved to `<run_dir>/stages/<name>.npz` when it finishes,
    together with the settings that made it: the values of the config fields it `uses`, any
    `extra` settings, and (recursively) the settings of the stages it takes as `inputs`. On a
    rerun a stored stage is reused only if those settings equal the current ones. Otherwise the
    run stops with a `StaleStageError` naming the changed settings, unless `force` is set (the
    stage and, through their recorded inputs, all stages that depend on it are recomputed).
    `restart_from` names stages (a name, or a prefix up to a dot: "adapt" means "adapt.*") to
    recompute with everything downstream of them. A stage file that cannot be read (truncated,
    corrupt) is recomputed, never loaded.
    """

    def __init__(self, run_dir: Path, config=None, *, force: bool = False,
                 restart_from: str = "", log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.config = config
        self.force = force
        self.restart_from = restart_from
        self.log = log
        self.timings: dict[str, float] = {}
        self.resumed: list[str] = []
        self.settings: dict[str, dict] = {}  # per stage run so far: all settings that made it
        self.restarted: set[str] = set()  # stages recomputed because of --restart-from
        self.current: dict | None = None  # settings of the stage being computed (for checkpoints)

    def settings_of(self, uses=(), inputs=(), extra=None) -> dict:
        """The settings a stage with these dependencies is made from (JSON-comparable)."""
        settings = {}
        for name in inputs:
            if name not in self.settings:
                raise RuntimeError(f"stage input {name!r} has not run yet")  # a bug, not the user's
            settings.update(self.settings[name])
        clash = set(uses) & set(extra or {})
        if clash:  # an extra would hide a config field from the record
            raise RuntimeError(f"stage extra settings {sorted(clash)} shadow config fields")
        settings.update({name: getattr(self.config, name) for name in uses})
        settings.update(extra or {})
        return _canonical(settings)

    def __call__(self, name: str, fn: Callable[[], dict], *, uses=(), inputs=(),
                 extra=None) -> dict:
        settings = self.settings_of(uses, inputs, extra)
        self.settings[name] = settings
        stored = self._reusable(name, settings, inputs)
        if stored is not None:
            return stored
        self.log(f"[{name}] running ...")
        start = time.perf_counter()
        self.current = settings
        try:
            out = {k: np.asarray(v) for k, v in fn().items()}  # waits for JAX's results
        finally:
            self.current = None
        return self._save(name, settings, out, time.perf_counter() - start)

    def batch(self, names: list[str], fn: Callable[[list[str]], dict], *, uses=(), inputs=(),
              extras=None, executor=None, progress: Callable[[int], None] | None = None) -> dict:
        """Stages that are computed together but stored (and reused) one by one: {name: arrays}.

        `fn(part)` computes the stages of `part` → {name: arrays}; the `executor`
        (`pgx_jax.executor`; default in-process: one call with every stage not stored with
        the current settings) decides the parts and where they run. Each stage is saved as its
        part arrives, as `__call__` would save it (`extras[i]` is the `extra` of names[i]), its
        time the wall time since the previous part arrived split evenly over the part (so the
        times add up to the batch's wall time). So a rerun that adds stages (say, more seeds)
        computes only the new ones, and an interrupted batch keeps the parts that finished.
        `progress(done, total)` is called with (0, number of stages to compute) before the
        first part and with the number saved so far after each.
        """
        extras = [None] * len(names) if extras is None else extras
        if len(extras) != len(names) or len(set(names)) != len(names):
            raise ValueError("batch: names must be distinct, with one extra each")
        settings, out = {}, {}
        for name, extra in zip(names, extras):
            settings[name] = self.settings[name] = self.settings_of(uses, inputs, extra)
            stored = self._reusable(name, settings[name], inputs, quiet=True)
            if stored is not None:
                out[name] = stored
        if out:
            self.log(f"[{_several(list(out))}] loaded from {self.run_dir / 'stages'} "
                     "(finished earlier)")
        missing = [name for name in names if name not in out]
        if missing:
            self.log(f"[{_several(missing)}] running ...")
            done, start = 0, time.perf_counter()
            if progress is not None:
                progress(0, len(missing))
            for part in (executor or InProcess()).run(fn, missing):
                part = {name: {k: np.asarray(v) for k, v in arrays.items()}
                        for name, arrays in part.items()}
                unexpected = set(part) - set(missing)
                if unexpected:  # a bug in fn, not the user's
                    raise RuntimeError(f"batch: results for stages not asked for: {sorted(unexpected)}")
                seconds = (time.perf_counter() - start) / max(len(part), 1)
                start = time.perf_counter()
                for name, arrays in part.items():
                    out[name] = self._save(name, settings[name], arrays, seconds, quiet=True)
                if part:
                    self.log(f"[{_several(list(part))}] done in {seconds * len(part):.2f} s")
                done += len(part)
                if progress is not None:
                    progress(done, len(missing))
            lost = [name for name in missing if name not in out]
            if lost:  # a bug in fn, not the user's
                raise RuntimeError(f"batch: no result for {lost}")
        return out

    def _reusable(self, name: str, settings: dict, inputs, quiet: bool = False) -> dict | None:
        """The stored arrays of stage `name` if they were made with `settings` (and no restart
        asks for it again); None when it must be computed. Other settings: `StaleStageError`,
        or None with `force`."""
        path = self.run_dir / "stages" / f"{name}.npz"
        target = self.restart_from
        restart = (bool(target) and (name == target or name.startswith(target + "."))
                   or any(i in self.restarted for i in inputs))
        if restart:
            self.restarted.add(name)
        stored = None if restart else self._load(path)
        if stored is None:
            return None
        out, stored_settings = stored
        if stored_settings == settings:
            self.resumed.append(name)
            self.timings[name] = float(out.pop("_seconds"))
            if not quiet:
                self.log(f"[{name}] loaded from {path} (finished earlier)")
            return out
        changes = describe_changes(stored_settings, settings, self.config)
        if not self.force:
            raise StaleStageError(
                f"stage '{name}' of run {self.run_dir} was made with other settings "
                f"({changes}). Use a new --run NAME to keep both, or --force to recompute the "
                f"changed stages and everything downstream "
                f"(--restart-from {name.split('.')[0]} recomputes from this stage on).")
        self.log(f"[{name}] settings changed ({changes}); recomputing (--force)")
        return None

    def _save(self, name: str, settings: dict, out: dict, seconds: float,
              quiet: bool = False) -> dict:
        """Writes the arrays `out` (NumPy: computed) of stage `name` with its settings."""
        buffer = io.BytesIO()
        np.savez(buffer, _seconds=seconds, _settings=np.array(json.dumps(settings, sort_keys=True)),
                 **out)
        atomic_write_bytes(self.run_dir / "stages" / f"{name}.npz", buffer.getvalue())
        self.timings[name] = seconds
        if not quiet:
            self.log(f"[{name}] done in {seconds:.2f} s")
        return out

    def _load(self, path: Path):
        """(arrays, settings) of a stored stage, or None if there is none or it is unreadable."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in data.files}  # reads (and CRC-checks) every array
            settings = json.loads(str(out.pop("_settings"))) if "_settings" in out else None
        except Exception as error:  # noqa: BLE001 — any unreadable file is recomputed
            self.log(f"[{path.stem}] stored file is unreadable ({type(error).__name__}: "
                     f"{error}); recomputing")
            return None
        if settings is None:
            settings = {"(settings)": "not recorded (made by an older pgx_jax)"}
        return out, settings

    def timing_table(self) -> str:
        width = max(len(n) for n in self.timings) if self.timings else 5
        lines = [f"{'stage'.ljust(width)}  seconds  note", f"{'-' * width}  -------  ----"]
        for name, seconds in self.timings.items():
            note = "resumed" if name in self.resumed else ""
            lines.append(f"{name.ljust(width)}  {seconds:7.2f}  {note}")
        lines.append(f"{'total'.ljust(width)}  {sum(self.timings.values()):7.2f}")
        return "\n".join(lines)


def _several(names: list[str]) -> str:
    """'a' or 'a and 3 more': stages in one log line."""
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def describe_changes(old: dict, new: dict, config=None, limit: int = 80) -> str:
    """'--k: 3 → 2, --dim: 400 → 16': the settings that differ between two stage records (config
    fields by their flag, other settings by name)."""
    def short(value):
        text = json.dumps(value)
        return text if len(text) <= limit else text[:limit] + "…"

    parts = []
    for name in sorted(set(old) | set(new)):
        if old.get(name, "(absent)") != new.get(name, "(absent)"):
            label = flag(name) if hasattr(config, name) else name
            parts.append(f"{label}: {short(old.get(name, '(absent)'))} → "
                         f"{short(new.get(name, '(absent)'))}")
    return ", ".join(parts)


class UpdateBar:
    """A tqdm bar for a training loop, fed by `progress(update, mean_return[, success])` calls.

    `initial` updates were done before (a resumed run): the bar starts there and the env-steps/s
    it shows count only this session's updates.
    """

    def __init__(self, total: int, description: str, steps_per_update: int, initial: int = 0,
                 unit: str = "upd"):
        from tqdm.auto import tqdm

        # smoothing=0: the rate (and ETA) is the average since the start; under vmap the callback
        # fires in bursts (once per run and update), which fools tqdm's moving average.
        self.bar = tqdm(total=total, initial=initial, desc=description, unit=unit,
                        dynamic_ncols=True, mininterval=2.0, smoothing=0)
        self.steps_per_update = steps_per_update
        self.initial = initial
        self.start = time.perf_counter()
        self.shown = {}  # the return and success last shown

    def __call__(self, update, mean_return, success=None) -> None:
        """`mean_return` or `success` NaN means no episode ended in this update (episodes longer
        than a rollout): the return and success shown stay those of the last update in which one
        did."""
        self.bar.update(1)
        if not np.isnan(float(mean_return)) and (success is None or not np.isnan(success)):
            self.shown["mean_return"] = f"{float(mean_return):.1f}"
            if success is not None:
                self.shown["success"] = f"{float(success):.2f}"
        if self.bar.n % 10 == 0 or self.bar.n == self.bar.total or success is not None:
            rate = ((self.bar.n - self.initial) * self.steps_per_update
                    / (time.perf_counter() - self.start))
            self.bar.set_postfix({**self.shown, "steps_per_s": f"{rate:,.0f}"})

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


COMPILE_CACHE_VARIABLE = "PGX_JAX_COMPILE_CACHE"


def use_compile_cache(enabled: bool = True) -> Path | None:
    """Turns on JAX's persistent compilation cache, so a second run of an experiment loads its
    compiled programs instead of compiling them again (programs that took ≥ 1 s to compile,
    JAX's default threshold). Returns the directory, or None when off.

    The directory is $PGX_JAX_COMPILE_CACHE if set, else ~/.cache/pgx_jax/xla. One that cannot
    be used (a file, not writable) gives a warning and the run goes on without a cache; a corrupt
    entry is JAX's to handle: it warns and compiles again.
    """
    import warnings

    import jax

    if not enabled:
        return None
    directory = Path(os.environ.get(COMPILE_CACHE_VARIABLE)
                     or Path.home() / ".cache" / "pgx_jax" / "xla").expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"{directory} is not writable")
    except OSError as error:
        warnings.warn(f"compilation cache off: cannot use {directory} ({error}); set "
                      f"{COMPILE_CACHE_VARIABLE} to another directory or pass --no-compile-cache",
                      stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def run_cli(main: Callable[[], object]) -> None:
    """Runs an experiment's `main` from the command line and prints its total wall time.

    A `SettingError` (the user's mistake) prints one line, "error: ...", on stderr and exits with
    status 2, as argparse does; any other exception is a bug and keeps its traceback.
    """
    start = time.perf_counter()
    try:
        main()
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"finished in {time.perf_counter() - start:.1f} s")
