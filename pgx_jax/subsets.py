"""Random task subsets that cover every pair of tasks (paper, Algorithm 2, line 2).

The affinity U_ij of eq. (5) averages the scores of the subsets that hold both i and j, so every
pair must be sampled together at least once. `sample_subsets` draws the subsets uniformly at
random and, when the draw leaves pairs uncovered, repairs it with a short local search
(deterministic from the key). It works on the host with Python loops and is not meant to be
called under `jit`; it runs once per experiment, before any jitted stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax._validate import check_int, check_key

# Local-search steps allowed per subset before the repair restarts from a fresh draw (tight
# designs such as the Fano plane, n=7, α=3, m=7, need a few hundred steps in all), and the number
# of draws tried before giving up.
_REPAIR_STEPS_PER_SUBSET = 100
_REPAIR_MIN_STEPS = 1_000
_REPAIR_DRAWS = 10
# A move is tabu for this many steps after its reverse was made, so the search does not cycle.
_TABU_TENURE = 7


def min_num_subsets(n_tasks: int, subset_size: int) -> int:
    """A lower bound on the number of α-subsets needed to cover all pairs of n tasks.

    Each task must meet its n − 1 partners and meets α − 1 per subset, so it lies in at least
    r = ⌈(n−1)/(α−1)⌉ subsets; the m subsets hold mα task slots, so m ≥ ⌈n·r/α⌉ (the Schönheim
    bound). It is never below the pair-counting bound ⌈C(n,2)/C(α,2)⌉ and is attained by Steiner
    systems (e.g. n=7, α=3: 7 subsets).
    """
    per_task = -(-(n_tasks - 1) // (subset_size - 1))
    return -(-(n_tasks * per_task) // subset_size)


def sample_subsets(key: jax.Array, n_tasks: int, num_subsets: int, subset_size: int) -> jax.Array:
    """Draws `num_subsets` subsets of `subset_size` distinct tasks that together cover every pair.

    Each subset is first drawn uniformly at random among the C(n, α) subsets (independently).
    If some pair of tasks is in no subset, the draw is repaired by a tabu local search: it takes
    an uncovered pair {i, j} and, in a subset that holds i but not j, swaps one task for j,
    choosing the swap that uncovers the fewest other pairs (ties broken at random); if that
    stalls, it starts again from a fresh uniform draw (at most 10 draws). Repaired subsets are
    therefore not exactly uniform; with m well above the minimum only a few swaps are made, and
    at the minimum (e.g. n=7, α=3, m=7) the search finds a covering design when one is easy to
    reach. Everything is deterministic given `key`.

    Runs on the host with Python loops; do not call it under `jit` (all arguments but the key are
    Python ints, and the key must be concrete).

    Args:
      key: PRNG key.
      n_tasks: n >= 2.
      num_subsets: m >= the minimum needed to cover all pairs (see `min_num_subsets`).
      subset_size: α with 2 <= α <= n.

    Returns:
      bool[m, n], row l is the indicator of subset S_l; every row holds exactly α tasks and every
      pair {i, j} lies in at least one row.

    Raises:
      ValueError: on bad arguments, when m is below the minimum, or when the repair fails to
        cover every pair (possible only when m is close to the minimum).
    """
    key = check_key("key", key)
    if isinstance(key, jax.core.Tracer):
        raise ValueError(
            "key is a tracer: sample_subsets runs on the host and cannot be called under jit; "
            "call it outside the jitted function and pass the subsets in"
        )
    n = check_int("n_tasks", n_tasks, minimum=2)
    m = check_int("num_subsets", num_subsets, minimum=1)
    alpha = check_int("subset_size", subset_size, minimum=2, maximum=n)
    needed = min_num_subsets(n, alpha)
    if m < needed:
        raise ValueError(
            f"num_subsets={m} cannot cover all {n * (n - 1) // 2} pairs of {n_tasks} tasks with "
            f"subsets of size {alpha}: at least {needed} subsets are needed"
        )

    draw_key, repair_key = jax.random.split(key)
    rng = np.random.default_rng(np.asarray(jax.random.bits(repair_key, (4,), jnp.uint32)))
    least = None
    for attempt in range(_REPAIR_DRAWS):
        # argsort of i.i.d. uniforms is a uniform random permutation; its first α entries are a
        # uniform α-subset.
        uniforms = jax.random.uniform(jax.random.fold_in(draw_key, attempt), (m, n))
        members = np.argsort(np.asarray(uniforms), axis=1, kind="stable")[:, :alpha]
        remaining = _repair(members, n, rng)
        if remaining == 0:
            break
        least = remaining if least is None else min(least, remaining)
    else:
        raise ValueError(
            f"{least} pair(s) of tasks remain uncovered after repairing {_REPAIR_DRAWS} draws of "
            f"{m} subsets of size {alpha} over {n} tasks (the minimum is {needed}, but a "
            f"covering of that size may not exist or was not found); increase num_subsets"
        )
    subsets = np.zeros((m, n), dtype=bool)
    np.put_along_axis(subsets, members, True, axis=1)
    return jnp.asarray(subsets)


def _repair(members: np.ndarray, n: int, rng: np.random.Generator) -> int:
    """Tabu search that edits `members` (int[m, α], in place) until every pair is covered.

    Returns:
      The number of pairs still uncovered (0 on success).
    """
    m, alpha = members.shape
    inside = np.zeros((m, n), dtype=bool)
    np.put_along_axis(inside, members, True, axis=1)
    count = inside.T.astype(np.int64) @ inside.astype(np.int64)  # count[i, j] = n_ij
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    off_diagonal = ~np.eye(alpha, dtype=bool)
    # (subset, task) → the step until which moving that task back into that subset is tabu.
    tabu_until: dict[tuple[int, int], int] = {}
    max_steps = max(_REPAIR_MIN_STEPS, _REPAIR_STEPS_PER_SUBSET * m)

    for step in range(max_steps):
        uncovered = np.argwhere((count == 0) & upper)
        if len(uncovered) == 0:
            return 0
        i, j = uncovered[rng.integers(len(uncovered))]
        # Candidate moves: in a subset holding one task of the pair but not the other, replace
        # some other member x by the missing task. If neither task is in any subset, first bring
        # one of them into any subset.
        moves = []
        for held, incoming in ((i, j), (j, i)):
            rows = np.flatnonzero(inside[:, held] & ~inside[:, incoming])
            moves.append((rows, incoming, held))
        if all(len(rows) == 0 for rows, _, _ in moves):
            incoming = (i, j)[rng.integers(2)]
            moves = [(np.flatnonzero(~inside[:, incoming]), incoming, -1)]

        best_delta, best = None, []
        for rows, incoming, keep in moves:
            if len(rows) == 0:
                continue
            blocks = members[rows]  # [r, α]
            pair_counts = count[blocks[:, :, None], blocks[:, None, :]]  # [r, α, α]
            # Pairs (x, y) that lose their only subset when x leaves, and pairs (incoming, y)
            # that gain their first one.
            lost = ((pair_counts == 1) & off_diagonal).sum(-1)
            new = count[incoming][blocks] == 0
            gained = new.sum(-1, keepdims=True) - new
            delta = (lost - gained).astype(np.float64)
            delta[blocks == keep] = np.inf
            for r, row in enumerate(rows):
                if tabu_until.get((int(row), int(incoming)), -1) > step:
                    delta[r] += 0.5  # a tabu move loses ties but still beats worse moves
            lowest = delta.min()
            if best_delta is None or lowest < best_delta:
                best_delta, best = lowest, []
            if lowest == best_delta:
                ties = np.argwhere(delta == lowest)
                best.extend((int(rows[r]), int(c), int(incoming)) for r, c in ties)
        row, col, incoming = best[rng.integers(len(best))]
        outgoing = int(members[row, col])
        others = np.delete(members[row], col)
        count[outgoing, others] -= 1
        count[others, outgoing] -= 1
        count[outgoing, outgoing] -= 1
        count[incoming, others] += 1
        count[others, incoming] += 1
        count[incoming, incoming] += 1
        members[row, col] = incoming
        inside[row, outgoing], inside[row, incoming] = False, True
        tabu_until[(row, outgoing)] = step + _TABU_TENURE
    return int(((count == 0) & upper).sum())
