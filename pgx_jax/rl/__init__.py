"""RL side of pgx_jax: policies (and, later, PPO, rollouts, MAML)."""
