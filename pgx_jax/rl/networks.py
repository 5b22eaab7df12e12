"""Multitask networks for per-group training: Soft Modularization and a multi-head MLP.

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
