"""Test session setup.

Eight fake CPU devices so sharding, shard_map and pmap tests see a real mesh.
This must happen before JAX initialises its backend, hence at conftest import.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
