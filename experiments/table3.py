"""Table 3 across families, from finished validation runs: `python -m experiments.table3`.

Reads `results/validate/<family>/<run>/metrics.json` (and its config.json) for every family that
has the run, and writes `results/validate/table3-<run>.md` (also printed): one row per family
with every agreement figure beside its yardsticks (chance, the truth's agreement with itself),
what of the truth is reproducible, the cost ratios per truth seed, and the paper's numbers; then
the estimator's choices scored on every family, with their mean, which is how defaults are
chosen. Nothing is recomputed; run `experiments.validate --env NAME` first.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from experiments._pipeline import parse_config
from experiments._runner import SettingError, atomic_write_bytes, run_cli
from experiments.validate import PAPER

# Table 3 of the paper (NMI of its groups vs those of full training).
PAPER_NMI = {"lunarlander": 0.73, "mt10": 0.76}


@dataclasses.dataclass(frozen=True)
class Config:
    run: str = "default"  # the validation run to read in every family
    out: str = "results/validate"

    def check(self) -> None:
        if not Path(self.out).is_dir():
            raise SettingError(f"--out {self.out} does not exist; run `python -m "
                               "experiments.validate --env NAME` first")

    def resolved(self) -> "Config":
        return self


def load_runs(out: Path, run: str) -> dict:
    """{family: (metrics, config)} for every family with a finished run named `run`."""
    runs = {}
    for path in sorted(out.glob(f"*/{run}/metrics.json")):
        config_path = path.parent / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        runs[path.parent.parent.name] = (json.loads(path.read_text()), config)
    return runs


ROW_HEADER = (
    "| family | NMI vs truth: ours / grad. sim. / random (mean of 100) | chance NMI of ours "
    "(same group sizes) | AMI ours | truth vs itself: split NMI; bootstrap median [90%] | "
    "truth reproducible (Spearman of halves): per-task levels / pairwise (seeds it would need "
    "for 0.8) | vs planted: ours / truth | Spearman f̂ vs f | ‖Û − U‖/‖U‖ | speedup per truth "
    "seed: FLOPs, wall | paper NMI |",
    "|---|---|---|---|---|---|---|---|---|---|---|")


def family_row(name: str, metrics: dict, config: dict) -> str:
    primary = metrics["vs_truth"][metrics["primary_truth"]]
    nmi, ami, chance = primary["nmi"], primary["ami"], metrics["chance"]["ours"]["nmi"]
    agree, random = metrics["truth_self_agreement"], metrics["random_groups"]
    seeds = np.asarray(metrics["true_f_per_seed"][metrics["primary_truth"]]).shape[1]
    timings = metrics["stage_seconds"]
    estimation = sum(timings[s] for s in ("features", "subsets", "estimate", "cluster"))
    ground = timings["ground_truth"] + timings["truth_cluster"]
    flops = metrics["flops"]["full"] / metrics["flops"]["estimation"] / seeds
    parts = metrics.get("treatments", {}).get("decompose")
    reproducible = ("—" if parts is None else
                    f"{parts['levels_halves']:.2f} / {parts['pairwise_halves']:.2f} "
                    f"({parts.get('pairwise_seeds_needed', float('nan')):.0f})")
    planted = metrics.get("vs_planted")
    vs_planted = "—" if planted is None else (f"{planted['ours']['nmi']:.2f} / "
                                              f"{planted['truth']['nmi']:.2f}")
    if metrics.get("truth_degenerate"):
        return (f"| {name} (k = {config.get('k', '?')}, {seeds} truth seeds) | degenerate truth: "
                "fine-tuning changed no greedy return | | | | | | | | "
                f"{flops:.1f}×, {ground / estimation / seeds:.1f}× | {PAPER_NMI.get(name, '—')} |")
    return (f"| {name} (k = {config.get('k', '?')}, {seeds} truth seeds) | **{nmi['ours']:.2f}** / "
            f"{nmi['gradient_similarity']:.2f} / {random['nmi_mean']:.2f} | "
            f"{chance['mean']:.2f} ± {chance['std']:.2f} (p = {chance['p_value']:.2f}) | "
            f"{ami['ours']:.2f} | {agree['split']:.2f}; {agree['median']:.2f} "
            f"[{agree['q05']:.2f}, {agree['q95']:.2f}] | {reproducible} | {vs_planted} | "
            f"{primary['spearman_train']:.2f} | {primary['relative_error']['ours']:.2f} | "
            f"{flops:.1f}×, {ground / estimation / seeds:.1f}× | {PAPER_NMI.get(name, '—')} |")


def choices_rows(runs: dict) -> list[str]:
    """The estimator's choices (rows) × families (columns) in NMI vs the truth, and the mean."""
    runs = {name: run for name, run in runs.items() if not run[0].get("truth_degenerate")}
    names = list(runs)
    table: dict[tuple, dict] = {}
    for name, (metrics, _) in runs.items():
        rows = metrics["choices"]
        for i in range(len(rows["nmi"])):
            key = (rows["score"][i], rows["split"][i], rows["task_effects"][i], rows["variant"][i])
            table.setdefault(key, {})[name] = float(rows["nmi"][i])
    lines = ["| f̂ | scored on | per-task effects | variant | " + " | ".join(names) + " | mean |",
             "|---|---|---|---|" + "---|" * (len(names) + 1)]
    for treatment in ("keep", "remove", "directed"):  # the yardsticks: the truth vs itself
        table[("*truth vs itself*", "split halves", treatment, "")] = {
            name: metrics["treatments"][treatment]["truth_split"]
            for name, (metrics, _) in runs.items() if "treatments" in metrics}
    for key, scores in table.items():
        cells = [f"{scores[n]:.2f}" if n in scores else "—" for n in names]
        mean = f"{np.mean(list(scores.values())):.2f}" if scores else "—"
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + f" | {mean} |")
    return lines


def summarize(config: Config) -> str:
    runs = load_runs(Path(config.out), config.run)
    if not runs:
        raise SettingError(f"no finished run '{config.run}' under {config.out}/<family>/; run "
                           "`python -m experiments.validate --env NAME` first")
    lines = [
        f"# Table 3 across families (validation run `{config.run}`)",
        "",
        *ROW_HEADER,
        *[family_row(name, metrics, cfg) for name, (metrics, cfg) in runs.items()],
        "",
        f"Paper (Table 3): NMI 0.73 (LunarLander) and 0.76 (MetaWorld), random ≈ "
        f"{PAPER['random_nmi']}, ‖Û − U‖/‖U‖ ≤ {PAPER['relative_error']}, "
        f"{PAPER['flops_speedup']:.0f}× fewer FLOPs.",
        "",
        "## Estimator choices on every family (NMI vs the truth under the same per-task treatment; "
        "families with a degenerate truth left out)",
        "",
        *choices_rows(runs),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> str:
    config = parse_config(Config, argv, __doc__.split("\n")[0])
    text = summarize(config)
    atomic_write_bytes(Path(config.out) / f"table3-{config.run}.md", text.encode())
    print(text)
    return text


if __name__ == "__main__":
    run_cli(main)
