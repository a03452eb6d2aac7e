"""The streaming image pipeline (dgmjax/data/pipeline.py) and the harness on it.

A TFDS dataset of images of varying sizes is written offline (array_record,
no TensorFlow). Every image carries its record number in two constant
channels, which survive cropping and resizing exactly, so each batch row
says which record it came from. Properties: the resize is an area mean;
0 and 2 worker processes give the same batches; a saved stream state
resumes exactly (with workers, and with another worker count); two
processes read disjoint halves of every global batch whose concatenation is
the one-process batch; nothing is read ahead of need; the streamed
evaluation equals the in-memory one; train.vqvae trains at image_size=32
and a run stopped after a checkpoint resumes bit for bit with a worker
process; bad input is one line.
"""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tests_support
from tests_support import tiny_vqvae_config

from dgmjax.data import pipeline, tfds_writer
from dgmjax.errors import ConfigError
from train import harness, vqvae

# Module-scoped fixtures: the whole file runs on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("pipeline")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST = 300, 40


def _image(i, rng):
  h, w = rng.integers(32, 80, 2)
  x = np.empty((h, w, 3), np.uint8)
  x[..., 0], x[..., 1] = i % 256, i // 256  # the record number, constant
  x[..., 2] = rng.integers(0, 256, (h, w))
  return x


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """``(version folder, {split: [original images]})`` of a written TFDS dataset."""
  rng = np.random.default_rng(0)
  images = {s: [_image(i, rng) for i in range(n)] for s, n in (("train", N_TRAIN), ("test", N_TEST))}
  root = tfds_writer.write_image_dataset(
      str(tmp_path_factory.mktemp("tfds")), "varied",
      {s: ((x, i % 5) for i, x in enumerate(xs)) for s, xs in images.items()}, num_classes=5)
  return root, images


def _records(batch):
  """The record number of each row of a unit-format batch."""
  x = np.rint(np.asarray(batch["image"]) * 255).astype(int)
  return x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1]


def _open(root, role="train", **kw):
  split = "train" if role == "train" else "test"
  return pipeline.open_image_split(root, split, role=role, **{"image_size": 32, **kw})


class _Counting:
  """A source that records which records were read."""

  def __init__(self, source):
    self.source, self.read = source, []

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.read.append(int(i))
    return self.source[i]


def _counted(split):
  counter = _Counting(split.records._source)
  return dataclasses.replace(split, records=pipeline._Records(counter, split.num_examples)), counter


def test_written_dataset_reads_back_and_resize_is_an_area_mean(dataset):
  import tensorflow_datasets as tfds

  root, images = dataset
  src = tfds.builder_from_directory(root).as_data_source(split="train")
  assert len(src) == N_TRAIN
  for i in (0, 7, 299):  # PNG is lossless: the very pixels, at their own size
    np.testing.assert_array_equal(src[i]["image"], images["train"][i])
    assert int(src[i]["label"]) == i % 5
  assert len({x.shape for x in images["train"]}) > 50  # sizes really vary
  # Centre square, then a 2x area shrink = the rounded mean of each 2x2 block.
  x = np.random.default_rng(1).integers(0, 256, (40, 64, 3), dtype=np.uint8)
  want = x[:, 12:52].astype(np.float64).reshape(20, 2, 20, 2, 3).mean((1, 3))
  got = pipeline.fit_image(x, 20).astype(np.float64)
  np.testing.assert_array_equal(got, np.rint(want))  # quarters are exact in float32
  # A random crop is a square inside the image; a flip mirrors it.
  rng = np.random.default_rng(2)
  crops = {pipeline.fit_image(x, 40, rng=rng, random_crop=True).tobytes() for _ in range(30)}
  whole = {x[:, o:o + 40].tobytes() for o in range(25)}
  assert crops <= whole and len(crops) > 5
  flips = [pipeline.fit_image(x[:, :40], 0, rng=rng, random_flip=True) for _ in range(40)]
  assert all(np.array_equal(f, x[:, :40]) or np.array_equal(f, x[:, 39::-1]) for f in flips)
  assert 5 < sum(np.array_equal(f, x[:, 39::-1]) for f in flips) < 35


def test_nothing_is_read_ahead_and_epochs_are_permutations(dataset):
  root, _ = dataset
  split, counter = _counted(_open(root))
  stream = pipeline.ImageStream(split, batch_size=32, seed=5, process_index=0, process_count=1)
  ids = [_records(stream.next_numpy()) for _ in range(19)]  # 608 positions: 2 epochs and 8
  # Streaming, not loading: exactly the records of the batches handed out were read.
  assert len(counter.read) == 19 * 32
  flat = np.concatenate(ids)
  np.testing.assert_array_equal(flat, counter.read)  # the pixels say which record they came from
  e0, e1 = flat[:N_TRAIN], flat[N_TRAIN:2 * N_TRAIN]
  assert sorted(e0) == sorted(e1) == list(range(N_TRAIN))  # each epoch sees every image once
  assert not np.array_equal(e0, e1)  # and in a new order


def test_same_batches_with_0_and_2_workers_and_exact_resume(dataset):
  root, _ = dataset
  split = _open(root, pixel_format="binary_dynamic")
  kw = dict(batch_size=32, seed=3, random_crop=True, random_flip=True, process_index=0,
            process_count=1)
  ref = pipeline.ImageStream(split, workers=0, **kw)
  want = [ref.next_numpy() for _ in range(10)]
  two = pipeline.ImageStream(split, workers=2, **kw)
  try:
    got = [two.next_numpy() for _ in range(6)]
    state = json.loads(json.dumps(two.state_dict()))  # what the checkpoint holds
  finally:
    two.close()
  assert state["grain"] is not None and state["workers"] == 2
  for a, b in zip(want[:6], got, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert set(np.unique(want[0]["image"])) == {0.0, 1.0}  # binary_dynamic drew these
  resumed = pipeline.ImageStream(split, workers=2, **kw)
  resumed.load_state_dict(state)  # grain's own state of the two workers
  try:
    more = [resumed.next_numpy() for _ in range(4)]
  finally:
    resumed.close()
  other = pipeline.ImageStream(split, workers=0, **kw)
  other.load_state_dict(state)  # another worker count: restarts at the next batch
  for a, b, c in zip(want[6:], more, [other.next_numpy() for _ in range(4)], strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["image"], c["image"])
  with pytest.raises(ValueError, match="seed"):
    pipeline.ImageStream(split, workers=0, **{**kw, "seed": 4}).load_state_dict(state)


def test_two_processes_read_disjoint_halves_of_every_global_batch(dataset):
  root, _ = dataset
  one = pipeline.ImageStream(_open(root), batch_size=32, seed=1, process_index=0,
                             process_count=1)
  parts, counters = [], []
  for p in range(2):
    split, counter = _counted(_open(root))
    s = pipeline.ImageStream(split, batch_size=32, seed=1, process_index=p, process_count=2)
    parts.append([s.next_numpy() for _ in range(12)])
    counters.append(counter)
  for k in range(12):
    whole = one.next_numpy()
    halves = [parts[0][k], parts[1][k]]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), whole["image"])
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]), whole["label"])
  # Each process read only its own half: 16 records per batch, none of the other's.
  a, b = (np.asarray(c.read) for c in counters)
  assert len(a) == len(b) == 12 * 16
  np.testing.assert_array_equal(a, np.concatenate([_records(x) for x in parts[0]]))
  np.testing.assert_array_equal(b, np.concatenate([_records(x) for x in parts[1]]))
  # The first 9 global batches lie inside epoch 0 (288 of its 300 positions):
  # there the halves hold 288 different records.
  assert len(set(a[:9 * 16]) | set(b[:9 * 16])) == 9 * 32


def test_streamed_evaluation_equals_in_memory_evaluation(dataset):
  root, images = dataset
  test = _open(root, role="test")
  mesh = harness.make_mesh()

  def step(state, batch):
    return {"mean": jnp.mean(batch["image"], axis=(1, 2, 3)) * state,
            "index": batch["index"].astype(jnp.float32)}

  # 40 examples in batches of 16: the last batch is padded with 8 copies.
  arrays = {k: v for k, v in test.examples(range(N_TEST)).items() if k != "index"}
  np.testing.assert_array_equal(_records(arrays), np.arange(N_TEST))  # in split order
  for gather in (False, True):
    ev = harness.make_evaluator(step, mesh, 16, gather=gather, workers=2)
    streamed, memory = ev(jnp.float32(2.0), test), ev(jnp.float32(2.0), arrays)
    for k in streamed:
      np.testing.assert_allclose(streamed[k], memory[k], rtol=1e-6)
  means = [np.mean(pipeline.fit_image(x, 32) / 255.0) for x in images["test"]]
  np.testing.assert_allclose(streamed["mean"], 2.0 * np.asarray(means), rtol=1e-5)
  np.testing.assert_array_equal(streamed["index"], np.arange(N_TEST))
  # Two processes: each reads its half of every batch, padding included, and
  # the halves side by side are the one-process batch.
  whole = list(test.eval_batches(16, process_index=0, process_count=1))
  halves = [list(test.eval_batches(16, process_index=p, process_count=2)) for p in range(2)]
  assert len(whole) == len(halves[0]) == len(halves[1]) == 3
  for (b, m, r), (b0, m0, r0), (b1, m1, r1) in zip(whole, *halves, strict=True):
    assert r == r0 == r1 == int(m.sum())
    np.testing.assert_array_equal(np.concatenate([m0, m1]), m)
    for k in ("index", "image", "label"):
      np.testing.assert_array_equal(np.concatenate([b0[k], b1[k]]), b[k])
  idx = np.concatenate([b["index"] for b, _, _ in whole])
  np.testing.assert_array_equal(idx, np.minimum(np.arange(48), N_TEST - 1))


def _config(root, **over):
  # Every device: the streamed batches are sharded over the 8-device mesh.
  return tiny_vqvae_config(**{"dataset": root, "image_size": 32, "data_limit": 0,
                              "num_steps": 8, "checkpoint_every": 4, "log_every": 4,
                              "eval_batch_size": 16, "num_devices": 0, **over})


def _params(workdir):
  import orbax.checkpoint as ocp

  ck = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ck) if d.isdigit())
  path = os.path.join(ck, str(step), "state")
  meta = ocp.PyTreeCheckpointer().metadata(path)
  meta = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return step, ocp.PyTreeCheckpointer().restore(path, restore_args=args)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(ln).items() if not k.startswith("perf/")} for ln in f]


def test_vqvae_trains_at_32_and_a_stopped_run_resumes_bit_identically_with_workers(
    dataset, tmp_path, capsys):
  root, _ = dataset
  ref_dir, work = tmp_path / "ref", tmp_path / "stopped"
  ref = harness.train_and_evaluate(_config(root, data_workers=1), str(ref_dir), vqvae.make_task)
  assert ref["step"] == 8 and np.isfinite(ref["test/mse"])
  rows = _metrics(ref_dir)
  assert rows[-1]["train/mse"] < rows[0]["train/mse"]  # it learns
  # The worker's grain state is saved beside the model state.
  with open(ref_dir / "checkpoints" / "4" / "data" / "metadata") as f:
    saved = json.load(f)
  assert saved["step"] == 4 and saved["workers"] == 1 and saved["grain"]
  # The same run as if killed right after its step-4 checkpoint: resuming
  # must draw batches 5-8 again from the saved state, in a new worker.
  shutil.copytree(ref_dir, work)
  shutil.rmtree(work / "checkpoints" / "8")
  capsys.readouterr()
  resumed = harness.train_and_evaluate(_config(root, data_workers=1), str(work), vqvae.make_task)
  assert "resuming from step 4" in capsys.readouterr().out
  (sa, a), (sb, b) = _params(ref_dir), _params(work)
  assert sa == sb == 8
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise
  assert _metrics(ref_dir) == _metrics(work)  # steps 5-8 logged again, identically
  assert resumed["test/mse"] == ref["test/mse"]


def test_bad_input_is_one_clear_error(dataset, tmp_path):
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module

  root, _ = dataset
  run = lambda **kw: harness.train_and_evaluate(_config(root, **kw), str(tmp_path / "w"),  # noqa: E731
                                                vqvae.make_task)
  for over, match in [
      ({"test_split": "validation"}, r"config\.test_split='validation' is not a split .*'test', 'train'"),
      ({"image_size": 4}, r"config\.image_size must be 0 \(native size\) or an int >= 8"),
      ({"image_size": 30}, r"config\.image_size must be a multiple of 4"),
      ({"image_size": 0}, r"config\.image_size must be > 0 .*no fixed size"),
      ({"data_workers": -1}, r"config\.data_workers must be an int >= 0"),
      ({"dataset": str(tmp_path / "nothing")}, r"config\.dataset .*no such folder"),
      ({"dataset": "digits", "image_size": 0, "data_workers": 2}, r"config\.data_workers=2 applies to streamed"),
  ]:
    with pytest.raises(ConfigError, match=match):
      run(**over)
  # A dataset without an image feature.
  folder = tmp_path / "noimg" / "1.0.0"
  folder.mkdir(parents=True)
  features = tfds.features.FeaturesDict({"pixels": tfds.features.Tensor(shape=(4,), dtype=np.uint8)})
  for split in ("train", "test"):
    w = array_record_module.ArrayRecordWriter(str(folder / f"noimg-{split}.array_record-00000-of-00001"), "group_size:1")
    w.write(features.serialize_example({"pixels": np.arange(4, dtype=np.uint8)}))
    w.close()
  tfds.folder_dataset.write_metadata(
      data_dir=str(folder), features=features, check_data=False,
      split_infos=[tfds.core.SplitInfo(name=s, shard_lengths=[1], num_bytes=1) for s in ("train", "test")],
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
  with pytest.raises(ConfigError, match=r"has no 'image' feature \(its features: \['pixels'\]\)"):
    run(dataset=str(tmp_path / "noimg"))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_jax_processes_train_like_one(dataset, tmp_path):
  root, _ = dataset
  flags = [f"--config.dataset={root}", "--config.image_size=32", "--config.num_steps=6",
           "--config.checkpoint_every=6", "--config.log_every=3", "--config.batch_size=32",
           "--config.eval_batch_size=16", "--config.num_codes=16", "--config.code_dim=4",
           "--config.channels=(8, 8)", "--config.res_hidden=8", "--config.num_res_blocks=1",
           "--config.num_images=16", "--config.quiet=True", "--config.data_workers=1"]

  def launch(workdir, *extra, devices):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices),
           "XLA_FLAGS": tests_support.xla_flags(devices)}
    return subprocess.Popen([sys.executable, "-m", "train.vqvae", f"--workdir={workdir}", *flags,
                             *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

  one = launch(tmp_path / "one", devices=2)
  assert one.wait(timeout=300) == 0, one.stdout.read()[-2000:]
  port = _free_port()
  procs = [launch(tmp_path / "two", "--config.distributed=True",
                  f"--config.coordinator_address=127.0.0.1:{port}", "--config.num_processes=2",
                  f"--config.process_id={i}", devices=1) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
  (_, a), (_, b) = _params(tmp_path / "one"), _params(tmp_path / "two")
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  sa = json.loads((tmp_path / "one" / "summary.json").read_text())
  sb = json.loads((tmp_path / "two" / "summary.json").read_text())
  np.testing.assert_allclose(sa["test/mse"], sb["test/mse"], rtol=1e-5)
