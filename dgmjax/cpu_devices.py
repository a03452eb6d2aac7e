"""One XLA CPU device per core, so a CPU run is data parallel over its cores.

XLA's CPU backend runs most small convolutions of our models on one thread: a
default VQ-VAE step kept one of two cores busy, where PyTorch keeps both
(``docs/performance.md``). Splitting the host into N CPU devices and sharding
the batch over them (what the harness's jitted step already does on N GPUs)
runs the N halves of every layer at once. It is the same computation: the
sharded step equals the one-device step up to float summation order
(``tests/test_harness.py``).

Only the CPU backend is affected: on a GPU or TPU host the extra CPU devices
exist but hold no work. The count must be fixed before JAX initialises its
backends, so :func:`configure` is called at the very start of
``train_and_evaluate``; in a process that has already run JAX code it leaves
the devices as they are.

A caveat measured here (jax 0.10.2, 2 cores): with 2 CPU devices the MLP
trainers (``train.dvae``, ``train.vae``) hung after ~80 steps in XLA's
in-process all-reduce ("Expected 2 threads to join the rendezvous") and XLA
aborted the run after 40 s; async dispatch off, Eigen threading off or gloo
collectives did not help. The conv VQ-VAE ran 2400 steps without it, but one
of 12 ``train.vqvae`` runs of the quantizer benchmark (on a loaded machine)
hung the same way. So no trainer asks for several CPU devices by default;
``--config.cpu_devices=0`` is an opt-in that can fail.
"""

from __future__ import annotations

import math
import os
import re

import jax

from dgmjax.errors import ConfigError

AUTO, OFF = 0, -1


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity where the OS tells it)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # macOS and Windows have no affinity call
    return os.cpu_count() or 1


def _set_by_user() -> bool:
  flags = os.environ.get("XLA_FLAGS", "")
  return "JAX_NUM_CPU_DEVICES" in os.environ or bool(
      re.search(r"--xla_force_host_platform_device_count=", flags))


def auto_count(batch_sizes: tuple[int, ...], cores: int) -> int:
  """The most devices, at most ``cores``, that divide every batch size."""
  common = 0
  for b in batch_sizes:
    common = math.gcd(common, int(b))
  best = 1
  for n in range(1, max(cores, 1) + 1):
    if common % n == 0:
      best = n
  return best


def _backends_initialized() -> bool:
  from jax._src import xla_bridge  # no public query; reading it starts nothing

  return xla_bridge.backends_are_initialized()


def configure(cpu_devices: int, batch_sizes: tuple[int, ...]) -> int | None:
  """Set JAX's CPU device count for this process; returns it, or None if left alone.

  Args:
    cpu_devices: ``0`` (auto): one device per usable core, as many as divide
      every batch size, unless ``JAX_NUM_CPU_DEVICES`` or XLA's
      ``--xla_force_host_platform_device_count`` already say; ``-1``: leave
      JAX's default (one CPU device); ``N > 0``: exactly N.
    batch_sizes: Batch sizes the mesh must divide (training and evaluation).

  Raises:
    ConfigError: ``cpu_devices`` < -1, or an explicit N in a process whose
      backends are already running with another count.
  """
  if not isinstance(cpu_devices, int) or isinstance(cpu_devices, bool) or cpu_devices < OFF:
    raise ConfigError(f"cpu_devices must be an int >= -1 (0: one per core, -1: JAX's default), "
                     f"got {cpu_devices!r}.")
  if cpu_devices == OFF or (cpu_devices == AUTO and _set_by_user()):
    return None
  count = auto_count(batch_sizes, usable_cores()) if cpu_devices == AUTO else cpu_devices
  if _backends_initialized():
    if cpu_devices != AUTO and len(jax.devices("cpu")) != count:
      raise ConfigError(
          f"cpu_devices={cpu_devices} needs a fresh process: JAX's backends already run "
          f"here (set it before any JAX operation, or use JAX_NUM_CPU_DEVICES).")
    return None
  jax.config.update("jax_num_cpu_devices", count)
  return count
