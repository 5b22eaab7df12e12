"""RL side of pgx_jax: policies, PPO, rollouts, ground truth, MAML."""
