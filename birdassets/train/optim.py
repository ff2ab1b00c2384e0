"""The optimizer: global-norm clipping, then AdamW on a warm-up + cosine schedule, weight decay masked off
biases, norms and the cls/positional embeddings."""

from __future__ import annotations

from typing import Any

import jax
import optax

NO_DECAY_NAMES = ("bias", "scale", "cls_token", "pos_embed", "mask_token")


def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps`` (at most ``total_steps``), cosine decay to 0 at
    ``total_steps``."""
    warmup_steps = min(warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps, decay_steps=max(total_steps, warmup_steps + 1)
    )


def decay_mask(params: Any) -> Any:
    """``True`` for leaves that get weight decay: kernels (``ndim >= 2``) not named in :data:`NO_DECAY_NAMES`."""

    def decays(path, leaf) -> bool:
        names = {str(getattr(key, "key", key)) for key in path}
        return leaf.ndim >= 2 and not names & set(NO_DECAY_NAMES)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    lr: float, warmup_steps: int, total_steps: int, weight_decay: float, grad_clip: float
) -> optax.GradientTransformation:
    """``optax.chain(clip_by_global_norm, adamw(warmup_cosine_decay_schedule, mask=decay_mask))``."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(learning_rate_schedule(lr, warmup_steps, total_steps), weight_decay=weight_decay, mask=decay_mask),
    )
