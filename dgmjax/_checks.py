"""Trace-time input validation shared by the library.

Every check runs on static information (shape, dtype, Python scalars), so it
fires once while tracing under ``jit``/``vmap``/``grad`` and costs nothing in
the compiled program. Errors name the argument and what was expected instead
of letting XLA broadcast silently or fail deep inside a kernel.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _dtype(x: Any) -> np.dtype:
  return jnp.result_type(x)


def check_floating(name: str, x: Any) -> None:
  """Raise ``TypeError`` unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(_dtype(x), jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype, got {_dtype(x)}; cast it first "
        f"(e.g. {name}.astype(jnp.float32))."
    )


def check_integer(name: str, x: Any) -> None:
  """Raise ``TypeError`` unless ``x`` has an integer dtype."""
  if not jnp.issubdtype(_dtype(x), jnp.integer):
    raise TypeError(f"{name} must have an integer dtype, got {_dtype(x)}.")


def check_rank(name: str, x: Any, rank: int | Sequence[int]) -> None:
  """Raise ``ValueError`` unless ``x.ndim`` is ``rank`` (or one of them)."""
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  if len(_shape(x)) not in ranks:
    want = ranks[0] if len(ranks) == 1 else f"one of {ranks}"
    raise ValueError(
        f"{name} must have rank {want}, got rank {len(_shape(x))} "
        f"(shape {_shape(x)})."
    )


def check_min_rank(name: str, x: Any, rank: int) -> None:
  """Raise ``ValueError`` unless ``x.ndim >= rank``."""
  if len(_shape(x)) < rank:
    raise ValueError(
        f"{name} must have rank >= {rank}, got shape {_shape(x)}."
    )


def check_same_shape(**arrays: Any) -> None:
  """Raise ``ValueError`` unless all keyword arrays have one shape."""
  items = list(arrays.items())
  first_name, first = items[0]
  for name, x in items[1:]:
    if _shape(x) != _shape(first):
      raise ValueError(
          f"{name} must have the same shape as {first_name}: "
          f"got {_shape(x)} vs {_shape(first)}."
      )


def check_last_dim(name: str, x: Any, size: int, what: str = "") -> None:
  """Raise ``ValueError`` unless ``x.shape[-1] == size``."""
  shape = _shape(x)
  if not shape or shape[-1] != size:
    extra = f" ({what})" if what else ""
    raise ValueError(
        f"{name} must have last dimension {size}{extra}, got shape {shape}."
    )


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
  """Raise ``ValueError`` if a *concrete* scalar is not > 0 (or >= 0).

  Traced values (e.g. a temperature computed from the step inside ``jit``)
  cannot be inspected at trace time and are let through; schedules in this
  library never produce non-positive values.
  """
  if isinstance(value, jax.core.Tracer):
    return
  try:
    arr = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything unreadable is a type error
    raise TypeError(f"{name} must be a number, got {type(value).__name__}.") from None
  bad = (arr < 0) if allow_zero else (arr <= 0)
  if np.any(bad):
    op = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be {op}, got {value!r}.")


def check_in_range(
    name: str, value: Any, lo: float, hi: float, *, closed: bool = True
) -> None:
  """Raise ``ValueError`` if a concrete scalar lies outside [lo, hi]."""
  if isinstance(value, jax.core.Tracer):
    return
  arr = np.asarray(value)
  ok = (arr >= lo) & (arr <= hi) if closed else (arr > lo) & (arr < hi)
  if not np.all(ok):
    br = "[]" if closed else "()"
    raise ValueError(
        f"{name} must be in {br[0]}{lo}, {hi}{br[1]}, got {value!r}."
    )


def check_int_at_least(name: str, value: Any, lo: int) -> None:
  """Raise if ``value`` is not a Python/NumPy integer >= ``lo``."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)
  ):
    raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
  if value < lo:
    raise ValueError(f"{name} must be >= {lo}, got {value}.")
