"""Training speed of every trainer, and of the VQ layer against dm-haiku, in one table.

Each trainer runs a short real ``train_and_evaluate`` (the harness's jitted,
data-sharded step, on its default model and batch) in a subprocess of its own,
and the figures come from the run's ``summary.json``:

* ``perf/steps_per_sec`` and ``perf/examples_per_sec``: training steps only,
  every log window after the first (so compilation is excluded);
* ``perf/first_step_s``: the first step, compilation included;
* peak RSS of the subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
  JAX, data and all), and on GPU/TPU the peak bytes the device allocator
  had in use (``jax.local_devices()[0].memory_stats()["peak_bytes_in_use"]``).

Evaluations that are not training (IWAE with k = 1000, the ELBO-surgery
report, AVB's likelihood grid, the GAN metric classifier) are turned down to a
minimum: they run once after the timed loop and would only add wall time.
The VQ layer row calls ``bench/vq_layer_speed.py`` (needs dm-haiku for the
comparison: ``pip install -e ".[bench]"``).

Run::

    python bench/speed_suite.py                     # all, 200 steps each
    python bench/speed_suite.py --steps 500 --only vqvae gan_ring --out speed.md
    python bench/speed_suite.py --devices 8         # 8 fake CPU devices

``--devices N`` gives the subprocesses N fake CPU devices
(``JAX_NUM_CPU_DEVICES``), so the batch really is sharded 8 ways. That is a
correctness check of the sharded step, **not a speed figure**: the fake
devices share the same cores. The parent process never initialises a JAX
backend (on a GPU it would grab the memory the subprocesses need); backend and
device count come from the subprocesses' summaries.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (trainer module, config overrides). Model sizes stay at the defaults;
# only the once-per-run evaluations are shrunk.
TASKS = {
    "vqvae": ("vqvae", {}),
    "dvae": ("dvae", dict(iwae_samples=0, eval_every=0)),
    "vae": ("vae", dict(iwae_k=1, iwae_chunk=1, iwae_k_train=0)),
    "gan_ring": ("gan", dict(dataset="ring", image_every=0)),
    "gan_digits": ("gan", dict(dataset="digits", batch_size=64, image_every=0,
                               num_eval_samples=100, classifier_steps=1)),
    "avb_toy": ("avb", dict(dataset="avb_toy", ll_samples=0, grid_size=0, scatter_samples=1)),
}
VQ_LAYER = "vq_layer"
NAMES = [*TASKS, VQ_LAYER]


# ----------------------------------------------------------------------------
# The worker: one trainer, in its own process
# ----------------------------------------------------------------------------
def _max_rss_mib() -> float:
  import resource

  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0  # bytes vs KiB


def worker(name: str, steps: int, dataset: str, workdir: str) -> dict:
  import importlib

  sys.path.insert(0, ROOT)
  import jax


  module_name, over = TASKS[name]
  module = importlib.import_module(f"train.{module_name}")
  config = module.get_config()
  config.update(over)
  if config.dataset == "digits" and dataset:
    config.dataset = dataset
  ndev = jax.device_count()
  config.update(dict(
      num_steps=steps, log_every=max(1, steps // 10), checkpoint_every=steps, quiet=True,
      batch_size=-(-config.batch_size // ndev) * ndev,
      eval_batch_size=-(-config.eval_batch_size // ndev) * ndev))
  if "classifier_dir" in config:
    config.classifier_dir = os.path.join(workdir, "classifier")
  rss_before = _max_rss_mib()
  t0 = time.perf_counter()
  summary = module.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t0
  stats = jax.local_devices()[0].memory_stats() or {}
  return {
      "name": name, "batch_size": config.batch_size, "steps": steps,
      "dataset": config.dataset,
      "steps_per_sec": summary.get("perf/steps_per_sec"),
      "examples_per_sec": summary.get("perf/examples_per_sec"),
      "first_step_s": summary.get("perf/first_step_s"),
      "peak_rss_mib": _max_rss_mib(), "rss_before_run_mib": rss_before,
      "device_peak_mib": (stats["peak_bytes_in_use"] / 2**20
                          if "peak_bytes_in_use" in stats else None),
      "wall_s": wall, "backend": summary.get("backend", jax.default_backend()),
      "devices": summary.get("devices", jax.device_count()), "jax": jax.__version__,
  }


# ----------------------------------------------------------------------------
# The parent: subprocesses, the table
# ----------------------------------------------------------------------------
def _env(devices: int) -> dict:
  env = dict(os.environ)
  if devices:
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                              env.get("XLA_FLAGS", "")).strip()
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def run_trainer(name: str, args) -> dict:
  with tempfile.TemporaryDirectory(prefix=f"speed_{name}_") as wd:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--steps",
           str(args.steps), "--dataset", args.dataset, "--workdir", wd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(args.devices),
                          cwd=ROOT, timeout=args.timeout)
  for line in proc.stdout.splitlines():
    if line.startswith("SPEED "):
      return json.loads(line[len("SPEED "):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
  return {"name": name, "error": f"exit {proc.returncode}: " + " / ".join(tail)}


def run_vq_layer(args) -> dict:
  cmd = [sys.executable, os.path.join(ROOT, "bench", "vq_layer_speed.py"),
         "--repeats", str(args.vq_repeats)]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(args.devices), cwd=ROOT,
                        timeout=args.timeout)
  if proc.returncode:
    tail = proc.stderr.strip().splitlines()[-3:]
    return {"name": VQ_LAYER, "error": f"exit {proc.returncode}: " + " / ".join(tail)}
  return {"name": VQ_LAYER, "text": proc.stdout.strip()}


def _git_commit() -> str:
  try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return rev + (" (with uncommitted changes)" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def machine_lines(backend: str = "") -> list[str]:
  """Date, machine and commit lines shared by the bench suites (no JAX backend started)."""
  load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
  lines = [
      f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
      f"- machine: {platform.platform()}; {_cpu_model()}; {os.cpu_count()} CPUs; "
      f"load average {load}",
      f"- python {platform.python_version()}",
      f"- commit: {_git_commit()}",
  ]
  if backend:
    lines.append(f"- jax backend: {backend}")
  return lines


def _fmt(v, spec: str) -> str:
  return "–" if v is None else format(v, spec)


def render(results: list[dict], args) -> str:
  trainers = [r for r in results if r["name"] in TASKS]
  ok = [r for r in trainers if "error" not in r]
  backend = ""
  if ok:
    backend = f"{ok[0]['backend']}, {ok[0]['devices']} device(s), jax {ok[0]['jax']}"
  out = ["# dgmjax speed suite", ""] + machine_lines(backend) + [
      f"- command: `python bench/speed_suite.py {' '.join(args.argv)}`",
      ""]
  if args.devices:
    out += [f"**{args.devices} fake CPU devices: a correctness check of the sharded step, "
            "not a speed figure.**", ""]
  if trainers:
    out += ["| trainer | data | batch | steps | steps/s | examples/s | first step (s) | "
            "peak RSS (MiB) | peak device memory (MiB) | wall (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in trainers:
      if "error" in r:
        out.append(f"| {r['name']} | failed: {r['error']} |||||||||")
        continue
      out.append(
          f"| {r['name']} | {r['dataset']} | {r['batch_size']} | {r['steps']} | "
          f"{_fmt(r['steps_per_sec'], '.1f')} | {_fmt(r['examples_per_sec'], ',.0f')} | "
          f"{_fmt(r['first_step_s'], '.2f')} | {r['peak_rss_mib']:.0f} | "
          f"{_fmt(r['device_peak_mib'], '.0f')} | {r['wall_s']:.1f} |")
    out += ["", "steps/s and examples/s exclude the first log window (compilation); wall time "
            "includes data loading, compilation and the final evaluation. Peak RSS is the whole "
            "trainer process (JAX and the data included).", ""]
  for r in results:
    if r["name"] == VQ_LAYER:
      out += ["## VQ layer: dgmjax vs dm-haiku (`bench/vq_layer_speed.py`)", ""]
      out += [r.get("text") or f"failed: {r['error']}", ""]
  return "\n".join(out)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=200, help="training steps per trainer")
  ap.add_argument("--only", nargs="+", choices=NAMES, default=NAMES, metavar="NAME",
                  help=f"a subset of {NAMES}")
  ap.add_argument("--out", default="", help="also write the Markdown table to this file")
  ap.add_argument("--dataset", default="digits",
                  help="image data for the image trainers (e.g. tfds:mnist)")
  ap.add_argument("--devices", type=int, default=0,
                  help="N > 0: N fake CPU devices (correctness check, not speed)")
  ap.add_argument("--vq_repeats", type=int, default=20, help="repeats of the VQ layer timing")
  ap.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
  ap.add_argument("--worker", choices=list(TASKS), help=argparse.SUPPRESS)
  ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    print("SPEED " + json.dumps(worker(args.worker, args.steps, args.dataset, args.workdir)),
          flush=True)
    return 0
  if args.steps < 20:
    ap.error("--steps must be >= 20 (the first log window is not timed)")
  args.argv = argv
  results = []
  for name in args.only:
    t0 = time.perf_counter()
    r = run_vq_layer(args) if name == VQ_LAYER else run_trainer(name, args)
    status = r.get("error", f"{time.perf_counter() - t0:.0f}s")
    print(f"[{name}] {status}", file=sys.stderr, flush=True)
    results.append(r)
  text = render(results, args)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
