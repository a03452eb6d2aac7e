"""Training state: Flax's TrainState plus an RNG key and non-gradient state.

Trainers build states with :func:`create_train_state` and update them with
:func:`apply_gradients`; nothing else needs to know it is a Flax TrainState.
Two-player models (GAN, AVB) keep a dict of two of these.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """params, opt_state, step, plus ``rng`` (a typed key) and ``extra``.

  ``extra`` holds model state that is not trained by gradients (EMA codebooks,
  batch statistics); it is checkpointed like everything else.
  """

  rng: jax.Array
  extra: Any = None


def create_train_state(
    params: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    extra: Any = None,
    apply_fn: Callable | None = None,
) -> TrainState:
  return TrainState.create(
      apply_fn=apply_fn, params=params, tx=tx, rng=rng, extra=extra
  )


def step_key(state: TrainState) -> jax.Array:
  """A fresh key for this step, a pure function of (rng, step).

  Folding the step in (rather than splitting and storing) keeps the key of
  step t independent of how the run was interrupted and resumed.
  """
  return jax.random.fold_in(state.rng, state.step)


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
