"""Small configs and step drivers shared by several test files."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from train import harness, vqvae

TINY_VQVAE = {
    "num_steps": 40, "log_every": 10, "checkpoint_every": 10, "data_limit": 256,
    "batch_size": 32, "eval_batch_size": 64, "num_codes": 16, "code_dim": 4,
    "channels": (8, 8), "res_hidden": 8, "num_res_blocks": 1, "num_images": 16,
    "quiet": True,
}


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
