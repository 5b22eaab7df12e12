"""pgx_jax: PolicyGradEx in JAX — estimate fine-tuning outcomes on task subsets, group tasks.

The pipeline (see DESIGN.md): transitions → `gradient_features` → `sample_subsets` →
`estimate_subsets` → `affinity_matrix` → `cluster_tasks`.
"""

from pgx_jax.affinity import (
    affinity_matrix,
    directed_affinity,
    gradient_similarity_affinity,
    remove_task_effects,
)
from pgx_jax.clustering import ClusterInfo, cluster_tasks, normalize_affinity, random_groups
from pgx_jax.diagnostics import (
    generalization_bound,
    hessian_trace,
    linearization_error,
    ratio_approximation_error,
)
from pgx_jax.features import gradient_features
from pgx_jax.metrics import ami, ari, chance_agreement, nmi, relative_error, spearman
from pgx_jax.projection import project, unproject
from pgx_jax.subsets import sample_subsets
from pgx_jax.surrogate import estimate_subsets, member_gains, solve_subsets
from pgx_jax.types import Features, SubsetSolution, Transitions

__version__ = "0.1.0"

__all__ = [
    "ClusterInfo",
    "Features",
    "SubsetSolution",
    "Transitions",
    "affinity_matrix",
    "ami",
    "ari",
    "chance_agreement",
    "cluster_tasks",
    "directed_affinity",
    "estimate_subsets",
    "generalization_bound",
    "gradient_features",
    "gradient_similarity_affinity",
    "hessian_trace",
    "linearization_error",
    "member_gains",
    "nmi",
    "normalize_affinity",
    "project",
    "random_groups",
    "ratio_approximation_error",
    "relative_error",
    "remove_task_effects",
    "sample_subsets",
    "solve_subsets",
    "spearman",
    "unproject",
]
