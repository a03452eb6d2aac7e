"""Speed and memory of the streaming input pipeline (dgmjax/data/pipeline.py).

Three measurements in one run:

1. Host images/s of the pipeline alone (read + decode + crop/resize + pixel
   format + batch, no model) with 0, 1 and 2 worker processes:
   * 28²: the offline digits written once as a PNG TFDS dataset (native size);
   * 64²: JPEG images of varying sizes (about 100-260 px a side, like CelebA
     or ImageNet), centre-cropped and area-resized to 64.
2. Steps/s of ``train.vqvae`` at the default size (digits 28², batch 128):
   the in-memory default, and the streamed digits (``image_size=28``)
   without prefetch (``data_workers=0``: each batch is made in the training
   process between steps) and with prefetch (``data_workers=2``).
3. Peak RSS while streaming one epoch of a dataset and of one 10x larger
   (each in a fresh process), which must differ by < 100 MiB.

It prints the ratio of the pipeline's images/s at 28² to the images/s the
default train step consumes (target: >= 3x, so that the step and not the
input is the bottleneck).

    python bench/input_pipeline.py [--images 2000] [--steps 200] [--out input_pipeline.md]
    python bench/input_pipeline.py --smoke        # plumbing only, seconds; numbers mean nothing

The datasets are written under ``--data-dir`` (default: a temporary folder)
and reused when they are already there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------
def _natural_image(rng: np.random.Generator) -> np.ndarray:
  """A smooth random colour image of a random size (JPEG-friendly, like a photo)."""
  h, w = (int(v) for v in rng.integers(100, 260, 2))
  small = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
  yy = np.linspace(0, 7, h)[:, None]
  xx = np.linspace(0, 7, w)[None, :]
  y0, x0 = np.floor(yy).astype(int).clip(0, 6), np.floor(xx).astype(int).clip(0, 6)
  fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
  img = ((1 - fy) * (1 - fx) * small[y0, x0] + fy * (1 - fx) * small[y0 + 1, x0]
         + (1 - fy) * fx * small[y0, x0 + 1] + fy * fx * small[y0 + 1, x0 + 1])
  img += rng.normal(0, 12, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def natural_dataset(data_dir: str, n: int, name: str) -> str:
  """``<data_dir>/<name>/1.0.0``: n train and n // 10 test JPEGs of varying sizes."""
  from dgmjax.data import tfds_writer

  root = os.path.join(data_dir, name, "1.0.0")
  if os.path.exists(os.path.join(root, "dataset_info.json")):
    return root
  rng = np.random.default_rng(0)
  gen = lambda k: ((_natural_image(rng), i % 10) for i in range(k))  # noqa: E731
  return tfds_writer.write_image_dataset(data_dir, name, {"train": gen(n), "test": gen(max(1, n // 10))},
                                         num_classes=10, encoding="jpeg")


def digits_dataset(data_dir: str, n: int) -> str:
  """The offline digits as PNGs (28x28 grey), the first n train and 500 test images."""
  from dgmjax.data import load_digits, tfds_writer

  name = f"digits_png{n}"
  root = os.path.join(data_dir, name, "1.0.0")
  if os.path.exists(os.path.join(root, "dataset_info.json")):
    return root
  (xtr, ytr), (xte, yte) = load_digits("train"), load_digits("test")
  splits = {"train": zip(xtr[:n], ytr[:n], strict=True), "test": zip(xte, yte, strict=True)}
  return tfds_writer.write_image_dataset(data_dir, name, splits, num_classes=10,
                                         image_shape=(28, 28, 1))


# ----------------------------------------------------------------------------
# 1. The pipeline alone
# ----------------------------------------------------------------------------
def pipeline_rate(root: str, size: int, workers: int, batch: int, batches: int) -> float:
  """Images/s of ImageStream after its first batch (worker start-up excluded)."""
  from dgmjax.data import pipeline

  split = pipeline.open_image_split(root, "train", role="train", image_size=size)
  stream = pipeline.ImageStream(split, batch_size=min(batch, split.num_examples), seed=0,
                                workers=workers, process_index=0, process_count=1)
  try:
    stream.next_numpy()  # starts the workers
    t0 = time.perf_counter()
    for _ in range(batches):
      stream.next_numpy()
    dt = time.perf_counter() - t0
  finally:
    stream.close()
  return batches * stream.batch_size / dt


# ----------------------------------------------------------------------------
# 2. The trainer
# ----------------------------------------------------------------------------
def trainer_rate(workdir: str, steps: int, smoke: bool, **over) -> dict:
  from train import vqvae

  config = vqvae.get_config()
  config.update({"num_steps": steps, "log_every": max(1, steps // 4), "checkpoint_every": steps,
                 "quiet": True, "num_images": 16, **over})
  if smoke:
    config.update({"batch_size": 32, "eval_batch_size": 64, "data_limit": 256, "num_codes": 16,
                   "code_dim": 4, "channels": (8, 8), "res_hidden": 8, "num_res_blocks": 1})
  s = vqvae.train_and_evaluate(config, workdir)
  return {"steps_per_sec": s["perf/steps_per_sec"], "examples_per_sec": s["perf/examples_per_sec"],
          "batch": config.batch_size}


# ----------------------------------------------------------------------------
# 3. Peak RSS (one fresh process per dataset)
# ----------------------------------------------------------------------------
def _own_peak_mib() -> float:
  """This process's peak RSS since its exec.

  Not ``ru_maxrss``: Linux carries the pre-exec high-water mark over an
  exec, so a child of this (1 GiB, JAX-loaded) bench would report the
  parent's peak instead of its own. VmHWM belongs to the new address space.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


def _rss_child(root: str, size: int, workers: int, batch: int) -> None:
  from dgmjax.data import pipeline

  split = pipeline.open_image_split(root, "train", role="train", image_size=size)
  stream = pipeline.ImageStream(split, batch_size=batch, seed=0, workers=workers,
                                process_index=0, process_count=1)
  for _ in range(max(1, split.num_examples // batch)):  # one epoch
    stream.next_numpy()
  stream.close()
  own = _own_peak_mib()
  kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  print(json.dumps({"n": split.num_examples, "rss_mib": own, "worker_rss_mib": kids}))


def peak_rss(root: str, size: int, workers: int, batch: int) -> dict:
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_rss", root, str(size),
                        str(workers), str(batch)], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
  p.add_argument("--images", type=int, default=2000, help="train images of the 64² set")
  p.add_argument("--batches", type=int, default=30, help="timed batches per pipeline setting")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=200, help="train.vqvae steps per run")
  p.add_argument("--rss-images", type=int, default=1000, help="the small set of the RSS check (x10 the large one)")
  p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--data-dir", default="")
  p.add_argument("--out", default="")
  p.add_argument("--_rss", nargs=4, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a._rss:
    _rss_child(a._rss[0], int(a._rss[1]), int(a._rss[2]), int(a._rss[3]))
    return
  if a.smoke:
    a.images, a.batches, a.batch, a.steps, a.rss_images = 64, 2, 16, 6, 32
  import jax

  data_dir = a.data_dir or tempfile.mkdtemp(prefix="dgmjax_pipeline_bench_")
  os.makedirs(data_dir, exist_ok=True)
  lines = [f"# Input pipeline ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
           f"{platform.node()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
           f"{jax.default_backend()} ({jax.device_count()} devices){', SMOKE: numbers mean nothing' if a.smoke else ''}",
           ""]
  print("\n".join(lines), flush=True)

  digits = digits_dataset(data_dir, 4500 if not a.smoke else a.images)
  natural = natural_dataset(data_dir, a.images, f"natural{a.images}")
  rows = ["| images | workers | images/s |", "|---|---|---|"]
  rates = {}
  for label, root, size in (("28² digits (PNG, native size)", digits, 0),
                            ("64² from ~100-260 px JPEGs", natural, 64)):
    for w in a.workers:
      r = pipeline_rate(root, size, w, a.batch, a.batches)
      rates[(size, w)] = r
      rows.append(f"| {label} | {w} | {r:,.0f} |")
      print(rows[-1], flush=True)
  lines += ["## Pipeline alone (read + decode + crop/resize + format + batch)", "", *rows, ""]

  work = tempfile.mkdtemp(prefix="dgmjax_pipeline_runs_")
  runs = {}
  for label, over in (("in memory (default)", {}),
                      ("streamed, no prefetch (data_workers=0)", {"image_size": 28, "data_workers": 0}),
                      ("streamed, prefetch (data_workers=2)", {"image_size": 28, "data_workers": 2})):
    runs[label] = trainer_rate(os.path.join(work, str(len(runs))), a.steps, a.smoke, **over)
    print(f"train.vqvae {label}: {runs[label]['steps_per_sec']:.2f} steps/s", flush=True)
  rows = ["| train.vqvae data | steps/s | images/s |", "|---|---|---|"]
  rows += [f"| {k} | {v['steps_per_sec']:.2f} | {v['examples_per_sec']:,.0f} |" for k, v in runs.items()]
  consumed = runs["in memory (default)"]["examples_per_sec"]
  lines += [f"## train.vqvae at the default size ({a.steps} steps, batch "
            f"{runs['in memory (default)']['batch']})", "", *rows, ""]
  ratio = [f"- {w} workers: {rates[(0, w)] / consumed:.1f}x" for w in a.workers]
  lines += [f"Pipeline images/s at 28² over the images/s the default step consumes "
            f"({consumed:,.0f}; target >= 3x):", "", *ratio, ""]

  small = natural_dataset(data_dir, a.rss_images, f"natural{a.rss_images}")
  large = natural_dataset(data_dir, 10 * a.rss_images, f"natural{10 * a.rss_images}")
  rows = ["| train images | workers | peak RSS (MiB) | peak worker RSS (MiB) |", "|---|---|---|---|"]
  diffs = []
  for w in sorted({0, max(a.workers)}):
    pair = [peak_rss(r, 64, w, a.batch) for r in (small, large)]
    rows += [f"| {m['n']:,} | {w} | {m['rss_mib']:.0f} | {m['worker_rss_mib']:.0f} |" for m in pair]
    diffs.append(f"- {w} workers: {pair[1]['rss_mib'] - pair[0]['rss_mib']:+.0f} MiB "
                 f"(workers {pair[1]['worker_rss_mib'] - pair[0]['worker_rss_mib']:+.0f} MiB)")
  lines += ["## Peak RSS over one epoch at 64², 10x the data (target: < 100 MiB more)", "", *rows,
            "", *diffs, ""]
  text = "\n".join(lines)
  print(text)
  if a.out:
    with open(a.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
