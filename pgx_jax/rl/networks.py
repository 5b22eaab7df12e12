"""Multitask networks for per-group training: Soft Modularization, PaCo, CARE and a multi-head MLP.

Both take inputs f32[..., d + n] whose last n entries are the task one-hot (the layout
`Agent.observe` produces) and return f32[..., output_dim]. They are drop-in torsos for the SAC
actor and critics (`pgx_jax.rl.sac`).

Soft Modularization (Yang et al. 2020, "Multi-Task Reinforcement Learning with Soft
Modularization"): a base network of L layers × m modules and a routing network. With state
embedding f(s) (an MLP) and task embedding z = W_T·onehot, the routing input is g = f(s) ⊙ z;
the routing logits are p¹ = W_d¹ ReLU(g) and p^{l+1} = W_d^{l+1}(ReLU(W_u^l p^l) ⊙ g), each
reshaped to m × m and softmaxed over its last axis: p̂^l[i, j] is the weight of module j of layer
l in the input of module i of layer l + 1. Layer-1 modules all read f(s); the output head reads
the mean of the last layer's modules.

PaCo (Sun et al. 2022, "Parameter-Compositional Multi-Task Reinforcement Learning"): K shared
parameter sets Φ = [φ_1 … φ_K] of one MLP, and per task a vector w_τ ∈ R^K; task τ's network has
parameters θ_τ = Φ w_τ (every layer, biases and output layer included). Computed as
Σ_k w_τ,k (x φ_k) layer by layer, which is the same function: the pre-activations are linear in
the parameters. w = onehot · W, unconstrained. Initialization (our decision): the φ_k are
independent draws of the usual init and W ~ N(0, 1/K), so that every task's Φ w_τ starts with the
usual init's variance. The authors copy one draw into every φ_k and draw W ~ N(0, 1): then task
τ's network is φ_1 · Σ_k w_τ,k, every layer scaled by a N(0, K) factor (and sign-flipped where it
is negative), which put a tiny network's initial policy entropy far from a standard init's.
Its stability measures (loss maskout, w-reset) act in the SAC update (`pgx_jax.rl.sac`).

CARE (Sodhani et al. 2021, "Multi-Task RL with Context-based Representations"): k encoders of
the input (the "mixture of encoders"), weighted by attention α = softmax(MLP(z)) computed from a
task context z; the head (an MLP) reads [Σ_j α_j enc_j(x), z]. CARE's z is an MLP of a pretrained
language model's embedding of the task's description; none can be downloaded here, so z is an
MLP of a learned task embedding (onehot · E). Every network (actor, each critic) has its own
encoders and context (the authors tie the actor's encoders to the critic's).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def split_task(inputs: jax.Array, num_tasks: int) -> tuple[jax.Array, jax.Array]:
    """inputs f32[..., d + n] → (features f32[..., d], task one-hot f32[..., n])."""
    return inputs[..., :-num_tasks], inputs[..., -num_tasks:]


class SoftModularNetwork(nn.Module):
    """Soft Modularization torso + head: f32[..., d + n] → f32[..., output_dim].

    Attributes:
      output_dim: size of the output.
      num_tasks: n, the length of the one-hot at the end of the input.
      num_layers: L, layers of modules in the base network (>= 2: routing connects them).
      num_modules: m, modules per layer.
      module_dim: width of every module (and of the embeddings).
      embedding_layers: hidden layers of the state embedding f(s).
    """

    output_dim: int
    num_tasks: int
    num_layers: int = 2
    num_modules: int = 2
    module_dim: int = 256
    embedding_layers: int = 1

    @nn.compact
    def __call__(self, inputs: jax.Array, return_routing: bool = False):
        """Outputs f32[..., output_dim]; with `return_routing`, also the routing weights p̂
        f32[..., L − 1, m, m] (rows sum to 1)."""
        if self.num_layers < 2 or self.num_modules < 1:
            raise ValueError("SoftModularNetwork needs num_layers >= 2 and num_modules >= 1")
        obs, task = split_task(inputs, self.num_tasks)
        m, width = self.num_modules, self.module_dim
        state = obs
        for index in range(self.embedding_layers):
            state = nn.relu(nn.Dense(width, name=f"state_embedding_{index}")(state))
        state = nn.Dense(width, name="state_embedding_out")(state)
        task_embedding = nn.Dense(width, use_bias=False, name="task_embedding")(task)
        gate = state * task_embedding

        weights, logits = [], nn.Dense(m * m, name="routing_0")(nn.relu(gate))
        for layer in range(self.num_layers - 1):
            if layer > 0:
                hidden = nn.relu(nn.Dense(width, name=f"routing_up_{layer}")(logits)) * gate
                logits = nn.Dense(m * m, name=f"routing_{layer}")(hidden)
            weights.append(jax.nn.softmax(logits.reshape(logits.shape[:-1] + (m, m)), -1))

        # Modules of one layer as one batched matmul: kernel f32[m, in, width]. Layer 1's
        # modules all read relu(f(s)): one [..., width] × [width, m·width] matmul instead.
        modules = nn.relu(state)
        for layer in range(self.num_layers):
            kernel = self.param(f"modules_{layer}_kernel", nn.initializers.lecun_normal(
                batch_axis=(0,)), (m, width, width))
            bias = self.param(f"modules_{layer}_bias", nn.initializers.zeros, (m, width))
            if layer == 0:
                pre = jnp.einsum("...i,mio->...mo", modules, kernel)
            else:
                pre = jnp.einsum("...mi,mio->...mo", modules, kernel)
            outputs = nn.relu(pre + bias)
            modules = (jnp.einsum("...ij,...jo->...io", weights[layer], outputs)
                       if layer < self.num_layers - 1 else outputs)
        head = nn.Dense(self.output_dim, name="head")(modules.mean(-2))
        return (head, jnp.stack(weights, -3)) if return_routing else head


class MultiHeadMLP(nn.Module):
    """A shared ReLU MLP on the whole input and one linear output head per task:
    f32[..., d + n] → f32[..., output_dim] (the head of the one-hot's task)."""

    output_dim: int
    num_tasks: int
    hidden: tuple[int, ...] = (400, 400)

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        _, task = split_task(inputs, self.num_tasks)
        x = inputs
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        heads = nn.Dense(self.num_tasks * self.output_dim)(x)
        heads = heads.reshape(heads.shape[:-1] + (self.num_tasks, self.output_dim))
        return jnp.einsum("...no,...n->...o", heads, task)


class CompositionalDense(nn.Module):
    """A dense layer with K parameter sets mixed per sample: x f32[..., i], w f32[..., K] →
    Σ_k w_k (x W_k + b_k) f32[..., features] (W: f32[K, i, features], b: f32[K, features]).
    The K kernels are independent LeCun-normal draws."""

    features: int
    num_sets: int

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                            (self.num_sets, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.num_sets, self.features))
        outputs = jnp.einsum("...i,kio->...ko", x, kernel) + bias  # every set's output
        return jnp.einsum("...ko,...k->...o", outputs, w)


class PaCoNetwork(nn.Module):
    """PaCo: a ReLU MLP whose parameters for task τ are Φ w_τ: f32[..., d + n] → f32[..., output_dim].

    Attributes:
      output_dim: size of the output.
      num_tasks: n, the length of the one-hot at the end of the input.
      hidden: hidden layer widths (the authors' MT10 networks: 3 × 400).
      num_sets: K, parameter sets shared by all tasks (the authors' MT10: 5).
    Parameters: `layer_<l>` (CompositionalDense) and `task_weights` {"kernel": f32[n, K]}, the w_τ.
    """

    output_dim: int
    num_tasks: int
    hidden: tuple[int, ...] = (400, 400, 400)
    num_sets: int = 5

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.num_sets < 1:
            raise ValueError(f"PaCoNetwork needs num_sets >= 1, got {self.num_sets}")
        _, task = split_task(inputs, self.num_tasks)
        w = nn.Dense(self.num_sets, use_bias=False, name="task_weights",
                     kernel_init=nn.initializers.normal(self.num_sets ** -0.5))(task)
        x = inputs  # the one-hot stays in the input, as for the other networks
        widths = self.hidden + (self.output_dim,)
        for index, width in enumerate(widths):
            x = CompositionalDense(width, self.num_sets, name=f"layer_{index}")(x, w)
            if index < len(widths) - 1:
                x = nn.relu(x)
        return x


class CARENetwork(nn.Module):
    """CARE: attention over a mixture of encoders, from a task context: f32[..., d + n] →
    f32[..., output_dim].

    Attributes:
      output_dim: size of the output.
      num_tasks: n, the length of the one-hot at the end of the input.
      num_encoders: k, encoders in the mixture (the authors' MT10 runs: 4).
      encoder_width: width of each encoder's two layers and of the context z (authors: 50).
      hidden: the head's hidden layers (authors: 3 × 400).
    """

    output_dim: int
    num_tasks: int
    num_encoders: int = 4
    encoder_width: int = 50
    hidden: tuple[int, ...] = (400, 400, 400)

    @nn.compact
    def __call__(self, inputs: jax.Array, return_attention: bool = False):
        """Outputs f32[..., output_dim]; with `return_attention`, also α f32[..., k]."""
        if self.num_encoders < 1 or self.encoder_width < 1:
            raise ValueError("CARENetwork needs num_encoders >= 1 and encoder_width >= 1, got "
                             f"{self.num_encoders} and {self.encoder_width}")
        features, task = split_task(inputs, self.num_tasks)
        k, width = self.num_encoders, self.encoder_width
        z = nn.Dense(width, use_bias=False, name="task_embedding")(task)
        for index in range(2):
            z = nn.relu(nn.Dense(width, name=f"context_{index}")(nn.relu(z)))
        attention = nn.relu(nn.Dense(width, name="attention_0")(z))
        attention = jax.nn.softmax(nn.Dense(k, name="attention_out")(attention), -1)
        # The k encoders as batched matmuls: kernels f32[k, in, width].
        encoded = features
        for index in range(2):
            kernel = self.param(f"encoders_{index}_kernel", nn.initializers.lecun_normal(
                batch_axis=(0,)), (k, encoded.shape[-1], width))
            bias = self.param(f"encoders_{index}_bias", nn.initializers.zeros, (k, width))
            equation = "...i,kio->...ko" if index == 0 else "...ki,kio->...ko"
            encoded = jnp.einsum(equation, encoded, kernel) + bias
            if index == 0:
                encoded = nn.relu(encoded)
        mixture = jnp.einsum("...ko,...k->...o", encoded, attention)
        x = jnp.concatenate([mixture, z], -1)
        for width_out in self.hidden:
            x = nn.relu(nn.Dense(width_out)(x))
        out = nn.Dense(self.output_dim, name="head")(x)
        return (out, attention) if return_attention else out
