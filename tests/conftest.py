"""Test session setup.

Eight fake CPU devices so sharding, shard_map and pmap tests see a real mesh.
This must happen before JAX initialises its backend, hence at conftest import.

One persistent XLA compilation cache for the whole session, shared by the
xdist workers and by the subprocesses the CLI, resume and notebook tests
start: on CPU most of a trainer test's time is compiling, and many tests
compile the same step twice (a run and its resumed copy, the same tiny config
in several tests). A cache hit loads the executable that the same HLO
compiled to, so it computes what a fresh compile would. The directory is new
for every session (nothing carries over between runs) and removed at its end.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# LLVM's -O0 for the compiled CPU code: compiling is most of a CPU test's time
# and the suite's programs are small, so unoptimised machine code costs less
# than optimising it. The default suite took 1249 s against 1641 s at the
# default level, and two file groups run alternately took 106 vs 162 s and
# 158 vs 218 s. XLA's HLO passes and the oneDNN/XNNPACK kernels are the same at
# either level, but the loops LLVM emits may round in another order: results
# can differ in the last float32 bits (e.g. 1.0000002 for 1.0), so the
# tolerances allow a few ulps.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  # Set before jax is imported (it reads these at import), and inherited by the
  # xdist workers, which the controller starts after this module is imported.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dgmjax-test-xla-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
  # Only the process that made the directory removes it (an xdist worker
  # inherited the variable, so its _OWN_CACHE is False).
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
