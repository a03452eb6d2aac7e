"""The per-phase transposed convolution is flax's ConvTranspose, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dgmjax.nn.conv_transpose import (
    ConvTranspose,
    choose_impl,
    conv_transpose_phases,
    transpose_padding,
)

DN = ("NHWC", "HWIO", "NHWC")

CASES = [
    # (H, W, kernel, stride, padding)
    (7, 7, (4, 4), (2, 2), "SAME"),  # the VQ-VAE / DCGAN decoder layer
    (14, 15, (4, 4), (2, 2), "SAME"),
    (5, 6, (3, 3), (2, 2), "SAME"),  # odd kernel: phases of unequal tap counts
    (6, 5, (5, 5), (3, 3), "VALID"),  # output not a multiple of the stride
    (7, 7, (4, 3), (2, 1), "VALID"),
    (7, 8, (3, 3), (1, 1), "SAME"),  # stride 1 is an ordinary convolution
    (6, 6, (4, 4), (2, 2), ((1, 2), (2, 1))),  # explicit pads, as lax takes them
    (4, 4, (2, 2), (3, 3), "VALID"),  # stride > kernel: phases no tap reaches
    (7, 7, (5, 5), (2, 2), "SAME"),
]


def _numpy_conv_transpose(x, w, strides, pads):
  """Scatter form: every input pixel adds kernel·value at s·i + t − lo (independent of lax)."""
  b, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  (lo_h, hi_h), (lo_w, hi_w) = pads
  sh, sw = strides
  out_h = (h - 1) * sh + 1 + lo_h + hi_h - kh + 1
  out_w = (wd - 1) * sw + 1 + lo_w + hi_w - kw + 1
  y = np.zeros((b, out_h, out_w, o))
  for i in range(h):
    for j in range(wd):
      for th in range(kh):
        for tw in range(kw):
          # Out[p] = Σ_t xd[p + t − lo]: pixel i sits at dilated s·i, so p = s·i + lo − t.
          p, q = sh * i + lo_h - th, sw * j + lo_w - tw
          if 0 <= p < out_h and 0 <= q < out_w:
            y[:, p, q] += x[:, i, j] @ w[th, tw]
  return y


@pytest.mark.parametrize("h,w,kernel,strides,padding", CASES)
def test_phases_equal_lax_and_an_independent_numpy_scatter(h, w, kernel, strides, padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  k = rng.normal(size=(*kernel, 3, 4)).astype(np.float32)
  ours = conv_transpose_phases(jnp.asarray(x), jnp.asarray(k), strides, padding)
  ref = lax.conv_transpose(x, k, strides, padding, dimension_numbers=DN)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  pads = [transpose_padding(kk, s, p) for kk, s, p in
          zip(kernel, strides, (padding, padding) if isinstance(padding, str) else padding,
              strict=True)]
  np.testing.assert_allclose(ours, _numpy_conv_transpose(x, k, strides, pads), atol=1e-4)


@pytest.mark.parametrize("h,w,kernel,strides,padding", CASES[:4])
def test_phases_gradients_equal_native(h, w, kernel, strides, padding):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 3, 4)), jnp.float32)
  native = lambda x, k: lax.conv_transpose(x, k, strides, padding, dimension_numbers=DN)
  phases = lambda x, k: conv_transpose_phases(x, k, strides, padding)
  g = jnp.asarray(rng.normal(size=native(x, k).shape), jnp.float32)
  for a, b in zip(jax.grad(lambda x, k: jnp.sum(native(x, k) * g), (0, 1))(x, k),
                  jax.grad(lambda x, k: jnp.sum(phases(x, k) * g), (0, 1))(x, k), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("impl", ["phases", "native", "auto"])
def test_module_matches_flax_conv_transpose_in_init_values_and_outputs(impl):
  x = jax.random.normal(jax.random.key(0), (3, 7, 7, 5))
  ours = ConvTranspose(16, (4, 4), strides=(2, 2), padding="SAME", impl=impl)
  theirs = nn.ConvTranspose(16, (4, 4), strides=(2, 2), padding="SAME")
  p_ours, p_theirs = ours.init(jax.random.key(1), x), theirs.init(jax.random.key(1), x)
  # Same tree, same initial values: checkpoints of the flax layer load as they are.
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs), strict=True):
    np.testing.assert_array_equal(a, b)
  p = jax.tree.map(lambda v: v + 0.1, p_theirs)  # a non-zero bias too
  np.testing.assert_allclose(ours.apply(p, x), theirs.apply(p, x), atol=1e-5)


def test_auto_picks_phases_for_wide_layers_on_cpu_only():
  cpu = jax.default_backend() == "cpu"
  assert choose_impl("auto", 32) == ("phases" if cpu else "native")
  assert choose_impl("auto", 1) == "native"
  assert choose_impl("phases", 1) == "phases"
  with pytest.raises(ValueError, match="impl must be"):
    choose_impl("fast", 8)


def test_bad_shapes_name_the_argument():
  with pytest.raises(ValueError, match="x has 3 channels but kernel expects 2"):
    conv_transpose_phases(jnp.zeros((1, 4, 4, 3)), jnp.zeros((2, 2, 2, 1)), (2, 2))
  with pytest.raises(ValueError, match=r"x must be \(B, H, W, C\)"):
    conv_transpose_phases(jnp.zeros((4, 4, 3)), jnp.zeros((2, 2, 3, 1)), (2, 2))


def test_models_keep_flax_parameter_names_and_both_impls_agree():
  from dgmjax.nn.conv import ConvDecoder
  from dgmjax.nn.gan import DCGANGenerator

  z = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
  dec = lambda impl: ConvDecoder((8, 8, 4), num_res_blocks=1, res_hidden=4, out_channels=1,
                                 impl=impl)
  p = dec("native").init(jax.random.key(1), z)
  # The names flax gave these layers before, so older checkpoints restore.
  assert {k for k in p["params"] if k.startswith("ConvTranspose")} == {
      "ConvTranspose_0", "ConvTranspose_1", "ConvTranspose_2"}
  np.testing.assert_allclose(dec("phases").apply(p, z), dec("native").apply(p, z), atol=1e-5)
  g = DCGANGenerator(image_shape=(28, 28, 1), base_channels=8)
  pg = g.init(jax.random.key(2), jnp.zeros((1, 4)))
  assert {k for k in pg["params"] if k.startswith("ConvTranspose")} == {
      "ConvTranspose_0", "ConvTranspose_1"}
