"""The validation across seeds of the whole pipeline, through the executor:
`python -m experiments.seeds --env cartpole --seeds 0 1 2 [--executor ray] [validation flags]`.

One seed of a validation run is everything after the family: θ*'s training, the features, the
subsets, the estimate, the groups and the ground truth all draw from `--seed`. So the question
"does the agreement hold, or was it this θ*?" needs whole runs at several seeds, and those are
independent trainings: each seed is one task of the executor (`pgx_jax.executor`; in-process one
after the other, or one Ray task per seed with `--executor ray [--ray-address ADDRESS]`).

Each seed is the run `<run>.seed<s>` of `python -m experiments.validate` with the other flags
given here (any validation flag but --seed, --run and --out, which this command sets), so it
resumes from its own stages, `experiments.table3 --run <run>.seed<s>` reads it, and its report
is where it always is. Inside a seed everything runs in that seed's process (the seeds are the
unit of distribution: on Ray each seed's ground truth stays on the worker that trained its θ*).
The driver stores each finished seed's metrics (`<out>/<env>/<run>/stages/seed<s>.npz`, atomic),
so a rerun with more seeds runs only the new ones, and writes the table across seeds:
`<out>/<env>/<run>/seeds.md` (one row per seed, as Table 3's, then mean ± std of every agreement
figure beside its chance level and the truth's agreement with itself, and paired differences
ours − chance / − random / − gradient similarity with their standard errors) and `seeds.json`.

On a cluster without a shared file system the seeds' run directories stay on the workers' disks;
the table is made from what the driver stored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from experiments import table3, validate
from experiments._pipeline import ExecutorConfig, require, result_settings
from experiments._runner import StageRunner, atomic_write_bytes, atomic_write_json, run_cli



@dataclasses.dataclass(frozen=True)
class Config(ExecutorConfig):  # Executor: the seeds (each a whole validation run)
    env: str = "cartpole"
    seeds: tuple = (0, 1, 2)
    run: str = "seeds"
    out: str = "results/validate"
    validate_args: tuple = ()  # the validation's other flags, as given
    force: bool = False  # passed on: a seed's stored stages made with other settings are redone

    RUN_CONTROL = ExecutorConfig.RUN_CONTROL + ("force",)

    def check(self) -> None:
        self.check_executor()
        require(len(self.seeds) >= 2 and all(isinstance(s, int) and s >= 0 for s in self.seeds),
                f"--seeds must be ≥ 2 non-negative ints, got {list(self.seeds)}")
        require(len(set(self.seeds)) == len(self.seeds), f"--seeds repeat: {list(self.seeds)}")
        require(self.run and "/" not in self.run, f"--run must be a plain name, got {self.run!r}")
        # --run, --out and the executor's flags are this command's own (its parser takes them)
        taken = [a for a in self.validate_args if a.split("=")[0] == "--seed"]
        require(not taken, "--seed: set by experiments.seeds for every seed (use --seeds)")
        for seed in self.seeds:  # every seed's settings are checked before any work
            self.seed_settings(seed)

    def seed_settings(self, seed: int) -> dict:
        """The settings one seed's validation runs with (all of its config but the run's name and
        place), by which a stored seed is reused or refused."""
        settings = result_settings(validate.parse(self.seed_argv(seed)))
        return {k: v for k, v in settings.items()
                if k not in ("run", "out", *ExecutorConfig.RUN_CONTROL)}

    def seed_run(self, seed: int) -> str:
        return f"{self.run}.seed{seed}"

    def seed_argv(self, seed: int, out: str | None = None) -> list[str]:
        """The validation command line of one seed (always in-process inside the seed)."""
        return [*self.validate_args, "--env", self.env, "--seed", str(seed), "--run",
                self.seed_run(seed), "--out", out or self.out, *(["--force"] if self.force else [])]


def parse(argv=None) -> Config:
    """Our flags; every other flag goes to the validation of each seed."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    defaults = Config()
    parser.add_argument("--env", default=defaults.env)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--run", default=defaults.run)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--executor", default=defaults.executor)
    parser.add_argument("--ray-address", default=defaults.ray_address)
    parser.add_argument("--ray-chunk", type=int, default=1, help="seeds per Ray task (default 1)")
    parser.add_argument("--force", action="store_true")
    known, rest = parser.parse_known_args(argv)
    config = Config(env=known.env, seeds=tuple(known.seeds), run=known.run, out=known.out,
                    executor=known.executor, ray_address=known.ray_address,
                    ray_chunk=known.ray_chunk, validate_args=tuple(rest), force=known.force)
    config.check()
    return config


class SeedRuns:
    """The seeds as an executor's batch: `runs(["seed0", ...])` runs each seed's validation and
    returns its metrics.json and config.json as text (picklable: it holds only the config)."""

    def __init__(self, config: Config):
        self.config = config
        self.names = [f"seed{s}" for s in config.seeds]
        self.out = str(Path(config.out).resolve())  # the driver's: a Ray worker's cwd differs

    def __call__(self, names: list[str]) -> dict:
        out = {}
        for name in names:
            seed = int(name.removeprefix("seed"))
            validate.main(self.config.seed_argv(seed, self.out))
            run_dir = Path(self.out) / self.config.env / self.config.seed_run(seed)
            out[name] = {"metrics": np.array((run_dir / "metrics.json").read_text()),
                         "config": np.array((run_dir / "config.json").read_text())}
        return out


def seed_figures(metrics: dict) -> dict:
    """One seed's agreement figures (primary truth): {figure: float}."""
    primary = metrics["vs_truth"][metrics["primary_truth"]]
    chance = metrics["chance"]["ours"]["nmi"]
    figures = {"ours": primary["nmi"]["ours"],
               "gradient similarity": primary["nmi"]["gradient_similarity"],
               "random (mean of 100)": metrics["random_groups"]["nmi_mean"],
               "chance": chance["mean"], "chance p of ours": chance["p_value"],
               "truth vs itself (split)": metrics["truth_self_agreement"]["split"],
               "Spearman f̂ vs f": primary["spearman_train"],
               "‖Û − U‖/‖U‖": primary["relative_error"]["ours"]}
    planted = metrics.get("vs_planted")
    if planted:  # families whose groups are known by construction
        figures["vs planted: ours"] = planted["ours"]["nmi"]
        figures["vs planted: truth"] = planted["truth"]["nmi"]
    return figures


def across_seeds(per_seed: dict) -> dict:
    """Mean and std over the seeds of each figure, and the paired differences of ours with its
    yardsticks (mean ± standard error over seeds). Seeds with a degenerate truth are left out."""
    usable = {s: m for s, m in per_seed.items() if not m.get("truth_degenerate")}
    figures = {s: seed_figures(m) for s, m in usable.items()}
    if not figures:
        return {"seeds": [], "left_out": sorted(per_seed)}
    names = next(iter(figures.values()))
    table = {f: np.array([figures[s][f] for s in figures], float) for f in names}
    summary = {f: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
               for f, v in table.items()}
    paired = {}
    for other in ("chance", "random (mean of 100)", "gradient similarity"):
        d = table["ours"] - table[other]
        paired[f"ours − {other}"] = {
            "mean": float(d.mean()),
            "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
            "wins": int(np.sum(d > 0))}
    return {"seeds": sorted(usable), "left_out": sorted(set(per_seed) - set(usable)),
            "figures": summary, "paired": paired,
            "significant_seeds": int(np.sum(table["chance p of ours"] < 0.05))}


def report(config: Config, per_seed: dict, configs: dict, summary: dict) -> str:
    n = len(summary["seeds"])
    lines = [f"# Validation of {config.env} across {len(per_seed)} seeds of the whole pipeline "
             f"(run `{config.run}`)", "",
             "Each seed trains its own θ*, draws its own features, subsets and ground truth; the "
             f"runs are `{config.out}/{config.env}/{config.run}.seed<s>/` (flags: "
             f"`{' '.join(config.validate_args) or 'defaults'}`).", "", *table3.ROW_HEADER,
             *[table3.family_row(f"{config.env} seed {s}", per_seed[s], configs[s])
               for s in sorted(per_seed)], ""]
    if summary["left_out"]:
        lines += [f"Left out of the summary (degenerate truth): seeds "
                  f"{', '.join(map(str, summary['left_out']))}.", ""]
    if not n:
        return "\n".join(lines + ["No seed has a usable truth; nothing to summarize.", ""])
    lines += [f"## Mean ± std over {n} seeds (primary truth: gain)", "",
              "| figure | mean ± std |", "|---|---|",
              *[f"| {f} | {v['mean']:.2f} ± {v['std']:.2f} |"
                for f, v in summary["figures"].items()], "",
              "## Ours against its yardsticks, paired by seed", "",
              "| difference in NMI | mean ± s.e. | seeds where ours is higher |", "|---|---|---|",
              *[f"| {f} | {v['mean']:+.2f} ± {v['se']:.2f} | {v['wins']} of {n} |"
                for f, v in summary["paired"].items()], "",
              f"Ours beats chance at p < 0.05 on {summary['significant_seeds']} of {n} seeds. The "
              "ceiling for any estimate is the truth's agreement with itself (the "
              "\"truth vs itself\" row).", ""]
    return "\n".join(lines)


def run(config: Config) -> dict:
    executor = config.make_executor()  # before any work
    run_dir = Path(config.out) / config.env / config.run
    print(f"pgx_jax validation across seeds {list(config.seeds)} ({config.env}, {executor.name}) "
          f"-> {run_dir}")
    stage = StageRunner(run_dir, config, force=config.force)
    seed_runs = SeedRuns(config)
    stored = stage.batch(seed_runs.names, seed_runs, executor=executor,
                         extras=[config.seed_settings(s) for s in config.seeds])
    per_seed = {s: json.loads(str(stored[f"seed{s}"]["metrics"])) for s in config.seeds}
    configs = {s: json.loads(str(stored[f"seed{s}"]["config"])) for s in config.seeds}
    summary = across_seeds(per_seed)
    text = report(config, per_seed, configs, summary)
    atomic_write_json(run_dir / "seeds.json", {"config": dataclasses.asdict(config), **summary})
    atomic_write_bytes(run_dir / "seeds.md", text.encode())
    print("\n" + text)
    return summary


def main(argv=None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    run_cli(main)
