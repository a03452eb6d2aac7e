"""Transposed convolution computed as one small convolution per output phase.

``flax.linen.ConvTranspose`` lowers to ``lax.conv_transpose``: a convolution
over the input *dilated* with ``s - 1`` zeros between pixels. On XLA's CPU
backend the weight gradient of that dilated convolution is very slow — for the
VQ-VAE decoder's 7×7×64 → 14×14×32 layer it took ~90 ms of a ~130 ms train
step, 7× more than the same layer's forward and input gradient together (see
``docs/performance.md`` for the measurements).

The same function has a cheaper form (the "sub-pixel" view of a transposed
convolution, Shi et al. 2016): output pixel ``s·i + a`` only ever touches the
kernel taps ``k ≡ lo − a (mod s)``, so each of the ``s × s`` output phases is
an ordinary stride-1 convolution of the *undilated* input with the strided
slice ``kernel[k₀::s, k₁::s]``; the phases are then interleaved
(depth-to-space). No zeros are multiplied and every gradient is that of a plain
convolution.

:class:`ConvTranspose` has the parameters of ``flax.linen.ConvTranspose``
(``kernel`` of shape ``(kh, kw, in, features)``, ``bias``), the same default
initialisers and, given the same name, the same initial values, so checkpoints
of either load into the other. ``impl`` picks the computation:

* ``"native"``: ``lax.conv_transpose``, exactly what flax does;
* ``"phases"``: the per-phase form above (equal within float rounding);
* ``"auto"`` (default): ``"phases"`` on the CPU backend when ``features >= 8``,
  else ``"native"``. For a handful of output channels (an image's 1 or 3) the
  native weight gradient is fast on CPU and the phases cost more; GPUs and
  TPUs have good native kernels, so nothing changes there.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import rng

Padding = str | Sequence[tuple[int, int]]

# Output channels from which the per-phase form beats the native one on CPU
# (docs/performance.md: 8 → 3.0 vs 9.9 ms, 1 → 14 vs 3.0 ms, fwd + bwd).
PHASES_MIN_FEATURES = 8


def transpose_padding(k: int, s: int, padding: str | tuple[int, int]) -> tuple[int, int]:
  """Padding of the dilated input, as ``lax.conv_transpose`` computes it.

  ``padding`` is ``"SAME"``, ``"VALID"`` or an explicit ``(lo, hi)`` pair,
  which ``lax.conv_transpose`` (and so flax) uses as the dilated input's
  padding as it is.
  """
  if padding == "SAME":
    pad_len = k + s - 2
    pad_lo = k - 1 if s > k - 1 else int(math.ceil(pad_len / 2))
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_lo = k - 1
  else:
    lo, hi = padding
    return int(lo), int(hi)
  return pad_lo, pad_len - pad_lo


def _phases(n: int, k: int, s: int, padding) -> tuple[int, int, list[tuple[int, int, int]]]:
  """Output length, rows per phase, and per phase (first input offset, first tap, taps)."""
  lo, hi = transpose_padding(k, s, padding)
  out = (n - 1) * s + 1 + lo + hi - k + 1
  if out < 1:
    raise ValueError(f"kernel {k} with stride {s} and padding {padding!r} gives no output "
                     f"for an input of size {n}.")
  rows = -(-out // s)
  phases = []
  for a in range(s):
    # Output s·i + a reads dilated input s·i + a + t − lo for tap t; only taps
    # with (a + t − lo) divisible by s land on a real pixel, offset (a + t − lo)/s.
    d0 = -((lo - a) // s)  # ceil((a − lo) / s)
    t0 = s * d0 - a + lo
    phases.append((d0, t0, len(range(t0, k, s))))
  return out, rows, phases


def conv_transpose_phases(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                          padding: Padding = "SAME", *, precision=None) -> jax.Array:
  """``lax.conv_transpose(x, kernel, strides, padding)`` (NHWC, HWIO, no kernel flip), by phases.

  Args:
    x: ``(B, H, W, C)``.
    kernel: ``(kh, kw, C, O)``.
    strides: ``(sh, sw)``.
    padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))`` as for
      ``lax.conv_transpose``.

  Returns:
    ``(B, H', W', O)``, equal to the native result within float rounding.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax import lax
    >>> x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    >>> w = jax.random.normal(jax.random.key(1), (4, 4, 3, 5))
    >>> y = conv_transpose_phases(x, w, (2, 2), "SAME")
    >>> ref = lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    >>> print(y.shape, bool(jnp.allclose(y, ref, atol=1e-5)))
    (2, 14, 14, 5) True
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"x must be (B, H, W, C) and kernel (kh, kw, C, O); got x {x.shape}, "
                     f"kernel {kernel.shape}.")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"x has {x.shape[-1]} channels but kernel expects {kernel.shape[2]}.")
  sh, sw = strides
  pads = (padding, padding) if isinstance(padding, str) else tuple(padding)
  batch, h, w, _ = x.shape
  out_h, rows_h, phases_h = _phases(h, kernel.shape[0], sh, pads[0])
  out_w, rows_w, phases_w = _phases(w, kernel.shape[1], sw, pads[1])
  zero = jnp.zeros((), x.dtype)
  grid = []
  for d0h, t0h, nh in phases_h:
    row = []
    for d0w, t0w, nw in phases_w:
      if nh == 0 or nw == 0:  # a phase no tap reaches (stride > kernel): only the bias
        row.append(jnp.zeros((batch, rows_h, rows_w, kernel.shape[3]), x.dtype))
        continue
      # Rows i + d0 … i + d0 + n − 1 of x for i in [0, rows); lax.pad crops
      # where the count is negative and adds the zeros the dilated input had.
      xp = lax.pad(x, zero, ((0, 0, 0), (-d0h, rows_h + d0h + nh - 1 - h, 0),
                             (-d0w, rows_w + d0w + nw - 1 - w, 0), (0, 0, 0)))
      row.append(lax.conv_general_dilated(
          xp, kernel[t0h::sh, t0w::sw], (1, 1), "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision))
    grid.append(jnp.stack(row, axis=3))  # (B, rows_h, rows_w, sw, O)
  y = jnp.stack(grid, axis=2)  # (B, rows_h, sh, rows_w, sw, O)
  y = y.reshape(batch, rows_h * sh, rows_w * sw, kernel.shape[3])
  return y[:, :out_h, :out_w]


def choose_impl(impl: str, features: int) -> str:
  """``"native"`` or ``"phases"`` for ``impl`` (``"auto"`` decides by backend and width)."""
  if impl not in ("auto", "native", "phases"):
    raise ValueError(f"impl must be 'auto', 'native' or 'phases', got {impl!r}.")
  if impl != "auto":
    return impl
  cpu = jax.default_backend() == "cpu"
  return "phases" if cpu and features >= PHASES_MIN_FEATURES else "native"


class ConvTranspose(nn.Module):
  """2-D transposed convolution with ``flax.linen.ConvTranspose``'s parameters and function.

  Only what the project's models use: NHWC inputs, ``transpose_kernel=False``,
  no kernel dilation; ``padding`` ``"SAME"``, ``"VALID"`` or explicit pairs.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
    >>> ours = ConvTranspose(16, (4, 4), strides=(2, 2), impl="phases")
    >>> theirs = nn.ConvTranspose(16, (4, 4), strides=(2, 2), padding="SAME")
    >>> p = ours.init(jax.random.key(1), x)  # same tree and values as theirs.init
    >>> print(bool(jnp.allclose(ours.apply(p, x), theirs.apply(p, x), atol=1e-5)))
    True
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  # flax's default initialiser, the same numbers, compiled faster on CPU (dgmjax.rng).
  kernel_init: nn.initializers.Initializer = rng.default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if self.use_bias else None
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if choose_impl(self.impl, self.features) == "phases":
      y = conv_transpose_phases(x, kernel, tuple(self.strides), self.padding)
    else:
      y = lax.conv_transpose(x, kernel, tuple(self.strides), self.padding,
                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias
