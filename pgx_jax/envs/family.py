"""A task family: n tasks that share one environment and differ in its parameters."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """n tasks = one gymnax-style environment + its parameters stacked on a leading task axis.

    All n tasks step in one `vmap` over `params`. The environment follows the gymnax 1.0 API:
    `reset(key, params) -> (obs, state)` and
    `step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`
    with automatic reset, and `info["final_observation"]` the observation before the reset.

    Attributes:
      env: the environment (static).
      params: env parameters, every leaf with a leading axis of size n.
      names: n task names.
      discrete: True for a discrete action space (categorical policy), False for a box.
      action_dim: number of actions (discrete) or action dimensions (continuous).
      obs_dim: observation size (before any one-hot task id is appended).
    """

    env: Any
    params: Any
    names: tuple[str, ...]
    discrete: bool
    action_dim: int
    obs_dim: int

    def __post_init__(self):
        sizes = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(self.params)}
        if sizes != {len(self.names)}:
            raise ValueError(
                f"every leaf of params needs a leading task axis of size {len(self.names)} "
                f"(one per name); got leading sizes {sorted(sizes)}"
            )

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    @property
    def episode_limit(self) -> int | None:
        """The longest truncation limit of any task (`params.max_steps_in_episode`), or None when
        the environment has none."""
        limit = getattr(self.params, "max_steps_in_episode", None)
        return None if limit is None else int(np.max(np.asarray(limit)))

    def task_params(self, index: int):
        """The parameters of task `index` alone (no task axis)."""
        return jax.tree_util.tree_map(lambda leaf: leaf[index], self.params)

    def subset(self, task_ids) -> "TaskFamily":
        """The family restricted to `task_ids` (in that order)."""
        task_ids = np.asarray(task_ids, dtype=int).reshape(-1)
        if task_ids.size == 0:
            raise ValueError("task_ids is empty")
        if task_ids.min() < 0 or task_ids.max() >= self.num_tasks:
            raise ValueError(f"task_ids must lie in [0, {self.num_tasks}), got {task_ids.tolist()}")
        return dataclasses.replace(
            self,
            params=jax.tree_util.tree_map(lambda leaf: leaf[task_ids], self.params),
            names=tuple(self.names[i] for i in task_ids),
        )
