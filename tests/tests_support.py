"""Small configs and step drivers shared by several test files."""

import os
import re

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from train import harness, vqvae

TINY_VQVAE = {
    "num_steps": 40, "log_every": 10, "checkpoint_every": 10, "data_limit": 256,
    "batch_size": 32, "eval_batch_size": 64, "num_codes": 16, "code_dim": 4,
    "channels": (8, 8), "res_hidden": 8, "num_res_blocks": 1, "num_images": 16,
    "quiet": True,
    # One device: these runs test the trainers, not the sharding (8-device layouts
    # are tested where that is the point, with num_devices=0 or 2).
    "num_devices": 1,
}


def xla_flags(devices: int) -> str:
  """This session's ``XLA_FLAGS`` (see conftest) with ``devices`` host devices.

  For a subprocess that needs another device count but the same compile
  options as the tests around it.
  """
  rest = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                os.environ.get("XLA_FLAGS", ""))
  return f"--xla_force_host_platform_device_count={devices} {rest.strip()}".strip()


def tiny_vqvae_config(**over):
  c = vqvae.get_config()
  c.update({**TINY_VQVAE, **over})
  return c


def steps_two_ways(task, batches, example, key=None):
  """Run ``batches`` through a task's step on one device and sharded over 8.

  The single-device ``jit`` step and the harness's data-sharded ``jit`` step
  (the batch split over a 1-D mesh of 8 fake devices, the state replicated),
  from the same initial state. Returns ``(s0, (s1, m1), (s8, m8))``: the
  initial state, then the final state and last metrics of each layout.
  """
  key = jax.random.key(0) if key is None else key
  mesh = harness.make_mesh()
  assert mesh.size == 8
  init = jax.jit(task.init)
  single = jax.jit(task.train_step)
  sharded = harness.compile_train_step(task, mesh)
  s0, s1 = init(key, example), init(key, example)
  s8 = jax.device_put(init(key, example), NamedSharding(mesh, P()))
  data = NamedSharding(mesh, P("data"))
  for b in batches:
    s1, m1 = single(s1, b)
    s8, m8 = sharded(s8, {k: jax.device_put(v, data) for k, v in b.items()})
  return s0, (s1, m1), (s8, m8)


def evals_across_layouts(task, config, test_arrays, key=None):
  """Every evaluation of ``task`` over ``test_arrays`` in three layouts.

  From one initial state: batches of 8 on the 8-device mesh, and batches of
  24 on a one-device mesh (another batch size, padding and device count at
  once). Evaluations that key their noise by ``batch["index"]`` give the same
  values in both. Returns ``{name: [result per layout]}``.
  """
  key = jax.random.key(0) if key is None else key
  x = harness.formatted(test_arrays, config.pixel_format)
  state = jax.jit(task.init)(key, {k: v[:8] for k, v in x.items()})
  out = {}
  for name, ev in task.evals.items():
    out[name] = []
    for ndev, bs in ((8, 8), (1, 24)):
      mesh = harness.make_mesh(ndev)
      state_m = jax.device_put(state, NamedSharding(mesh, P()))
      out[name].append(harness.make_evaluator(ev.step, mesh, bs, gather=ev.gather)(state_m, x))
  return out


def assert_same_across_layouts(results, rtol=1e-5, atol=1e-5):
  for name, (first, *rest) in results.items():
    for other in rest:
      assert sorted(first) == sorted(other), name
      for k in first:
        np.testing.assert_allclose(np.asarray(other[k], np.float64),
                                   np.asarray(first[k], np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{name}/{k}")
