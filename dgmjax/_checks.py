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


def _dtype(name: str, x: Any) -> np.dtype:
  try:
    return jnp.result_type(x)
  except TypeError:
    # jnp.result_type cannot type a list or a string; say which argument it
    # was instead of "Cannot determine dtype of [1.0, 2.0]".
    raise TypeError(
        f"{name} must be an array or a number, got {type(x).__name__}; "
        f"convert it first (e.g. jnp.asarray({name}))."
    ) from None


def check_floating(name: str, x: Any) -> None:
  """Raise ``TypeError`` unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(_dtype(name, x), jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype, got {_dtype(name, x)}; cast it first "
        f"(e.g. {name}.astype(jnp.float32))."
    )


def check_integer(name: str, x: Any) -> None:
  """Raise ``TypeError`` unless ``x`` has an integer dtype."""
  if not jnp.issubdtype(_dtype(name, x), jnp.integer):
    raise TypeError(f"{name} must have an integer dtype, got {_dtype(name, x)}.")


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


def _concrete_real(name: str, value: Any) -> np.ndarray | None:
  """``value`` as a float64 NumPy array, or None if it is traced.

  Raises ``TypeError`` naming ``name`` for anything that is not a real
  number (a string, None, a bool, a complex number): NumPy's own error for
  ``"a" <= 0`` names neither the argument nor the fix.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    arr = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything unreadable is a type error
    arr = None
  # bool is an integer subtype in NumPy, but temperature=True is a mistake.
  if arr is None or arr.dtype == np.bool_ or not (
      jnp.issubdtype(arr.dtype, jnp.integer)
      or jnp.issubdtype(arr.dtype, jnp.floating)
  ):
    raise TypeError(
        f"{name} must be a real number, got {type(value).__name__}"
        + (f" of dtype {arr.dtype}" if arr is not None else "") + "."
    )
  # float64 also covers bfloat16 and other ml_dtypes, whose comparisons and
  # isfinite NumPy does not always support directly.
  return arr.astype(np.float64)


def check_positive(
    name: str, value: Any, *, allow_zero: bool = False, finite: bool = True
) -> None:
  """Raise ``ValueError`` if a *concrete* value is not > 0 (or >= 0).

  NaN is always rejected (``nan <= 0`` is False, so a plain comparison would
  let it through and turn every output into NaN), and so are ±inf unless
  ``finite=False``. A non-number raises ``TypeError``. Arrays are checked
  elementwise.

  Traced values (e.g. a temperature computed from the step inside ``jit``)
  cannot be inspected at trace time and are let through; schedules in this
  library never produce non-positive values.
  """
  arr = _concrete_real(name, value)
  if arr is None:
    return
  op = ">= 0" if allow_zero else "> 0"
  if np.any(np.isnan(arr)) or (finite and not np.all(np.isfinite(arr))):
    kind = "a number" if not finite else "finite"
    raise ValueError(f"{name} must be {kind} and {op}, got {value!r}.")
  # Written as "not (ok)" so that a value no comparison accepts is rejected.
  ok = (arr >= 0) if allow_zero else (arr > 0)
  if not np.all(ok):
    raise ValueError(f"{name} must be {op}, got {value!r}.")


def check_in_range(
    name: str, value: Any, lo: float, hi: float, *, closed: bool = True
) -> None:
  """Raise ``ValueError`` if a concrete value lies outside [lo, hi] (or NaN).

  A non-number raises ``TypeError``; NaN fails every comparison and is
  rejected.
  """
  arr = _concrete_real(name, value)
  if arr is None:
    return
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
