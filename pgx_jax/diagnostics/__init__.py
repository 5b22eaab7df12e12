"""Diagnostics of the paper's approximations: first-order expansion of log π (Table 1)."""

from pgx_jax.diagnostics.linearization import linearization_error, ratio_approximation_error

__all__ = ["linearization_error", "ratio_approximation_error"]
