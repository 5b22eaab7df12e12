"""Diagnostics: the first-order expansion of log π (Table 1), FLOP counts with loops."""

from pgx_jax.diagnostics.flops import jaxpr_flops, xla_flops
from pgx_jax.diagnostics.linearization import linearization_error, ratio_approximation_error

__all__ = ["jaxpr_flops", "linearization_error", "ratio_approximation_error", "xla_flops"]
