"""Diagnostics: first-order expansion of log π (Table 1), FLOP counts with loops, Hessian trace."""

from pgx_jax.diagnostics.flops import jaxpr_flops, xla_flops
from pgx_jax.diagnostics.hessian import generalization_bound, hessian_trace, hessian_vector_product
from pgx_jax.diagnostics.linearization import linearization_error, ratio_approximation_error

__all__ = [
    "generalization_bound",
    "hessian_trace",
    "hessian_vector_product",
    "jaxpr_flops",
    "linearization_error",
    "ratio_approximation_error",
    "xla_flops",
]
