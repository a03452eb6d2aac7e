"""One CPU device per core: the count chosen, when it is applied and when it is left alone."""

import os
import subprocess
import sys

import jax
import pytest

from dgmjax import cpu_devices
from dgmjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("sizes,cores,want", [
    ((128, 256), 2, 2), ((128, 256), 3, 2), ((96,), 16, 16), ((100,), 8, 5),
    ((64, 100), 8, 4), ((7,), 4, 1), ((12, 18), 1, 1)])
def test_auto_count_is_the_most_cores_that_divide_every_batch(sizes, cores, want):
  got = cpu_devices.auto_count(sizes, cores)
  assert got == want
  # No larger count within the cores divides them all.
  assert not any(all(b % n == 0 for b in sizes) for n in range(got + 1, cores + 1))


def _fresh(code: str, **env) -> str:
  clean = {k: v for k, v in os.environ.items()
           if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
  out = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "PYTHONPATH": ROOT},
                       capture_output=True, text=True, timeout=120, check=True)
  return out.stdout.strip()


def test_fresh_process_gets_one_device_per_core_unless_the_user_said():
  code = ("from dgmjax import cpu_devices as c; n = c.configure({}, (128, 256)); import jax; "
          "print(n, jax.device_count(), c.auto_count((128, 256), c.usable_cores()))")
  n, count, want = _fresh(code.format(0)).split()
  assert n == count == want
  # The user's own device count wins over auto, and -1 keeps JAX's single device.
  assert _fresh(code.format(0), JAX_NUM_CPU_DEVICES="3").split()[:2] == ["None", "3"]
  assert _fresh(code.format(-1)).split()[:2] == ["None", "1"]
  assert _fresh(code.format(4)).split()[:2] == ["4", "4"]


def test_running_backends_are_left_alone_or_refused_by_name():
  jax.devices()  # this test process runs JAX already (8 fake devices, conftest)
  assert cpu_devices.configure(0, (128,)) is None
  assert cpu_devices.configure(len(jax.devices("cpu")), (128,)) is None
  with pytest.raises(ConfigError, match="cpu_devices=3 needs a fresh process"):
    cpu_devices.configure(3, (128,))
  with pytest.raises(ConfigError, match="cpu_devices must be an int >= -1"):
    cpu_devices.configure(-2, (128,))
