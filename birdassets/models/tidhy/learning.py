"""One TiDHy training step: infer the latents of a batch (E-step), then one optimizer update of the loss (M-step)."""

from __future__ import annotations

import jax
from flax import nnx

from birdassets.models.tidhy.inference import InferenceConfig, infer_sequence
from birdassets.models.tidhy.network import TiDHy
from birdassets.models.tidhy.mstep import LearningConfig, loss_terms, optimizer, project


def new_optimizer(model: TiDHy, config: LearningConfig) -> nnx.Optimizer:
    """An ``nnx.Optimizer`` over the model's parameters with the per-group AdamW of :func:`optimizer`."""
    return nnx.Optimizer(model, optimizer(config), wrt=nnx.Param)


@nnx.jit(static_argnames=("inference", "learning"))
def train_step(model: TiDHy, opt: nnx.Optimizer, x: jax.Array, inference: InferenceConfig,
               learning: LearningConfig) -> tuple[dict[str, jax.Array], jax.Array]:
    """Update ``model`` in place on ``x [batch, T, input_dim]``.

    Returns:
        ``(terms, iterations)``: the loss terms before the update (scalars, see
        :func:`~birdassets.models.tidhy.mstep.loss_terms`) and the inference iterations ``[batch, T]``.
    """
    latents = jax.vmap(infer_sequence, in_axes=(None, 0, None))(model, x, inference)

    def total(model: TiDHy):
        terms = loss_terms(model, x, latents, learning)
        return terms["total"], terms

    (_, terms), grads = nnx.value_and_grad(total, has_aux=True)(model)
    opt.update(model, grads)
    project(model, learning)
    return terms, latents.iterations
