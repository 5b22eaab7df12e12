"""PolicyGradEx on brax locomotion families: `python -m experiments.brax --env halfcheetah-vel`.

The pipeline of `experiments.cartpole` (θ* by multitask PPO on all tasks → transitions at θ* →
projected gradient features → subset estimates → affinity → k groups, beside the random and
gradient-similarity groupings) on the brax families of `pgx_jax.envs.registry`
(`BRAX_FAMILIES`): halfcheetah-vel (MAML's target speeds), halfcheetah-dir and ant-dir (forward
vs backward, planted 5/5), halfcheetah-weights (run vs control cost, planted 3/3/4). Every task
steps in one vmap (`pgx_jax.envs.brax_family`, brax's positional backend). Settings per family
come from the registry; flags win. θ* sees the task one-hot (`--task-onehot`), since neither a
target speed nor a heading is in the observation. θ*'s PPO makes many small updates (8 envs ×
64 steps per task, 10 epochs × 32 minibatches, no entropy bonus) on normalized observations
(`--normalize-obs`) with an unclipped value loss: PPO's usual shape did not learn HalfCheetah in
200k steps per task (see `_BRAX_PPO` in the registry). On 2 CPU cores the default budget takes
~14 minutes.

Writes results/brax/<run>/ like experiments.cartpole (metrics.json with θ*'s return per task and
a random policy's beside it, the groups, affinity.png, stages/). `--run` resumes.
"""

from __future__ import annotations

import dataclasses

from experiments import cartpole
from experiments._runner import run_cli
from pgx_jax.envs.registry import BRAX_FAMILIES


@dataclasses.dataclass(frozen=True)
class Config(cartpole.Config):
    env: str = "halfcheetah-vel"
    out: str = "results/brax"

    ENVS = BRAX_FAMILIES


def main(argv=None) -> dict:
    return cartpole.main(argv, Config, __doc__.split("\n")[0])


if __name__ == "__main__":
    run_cli(main)
