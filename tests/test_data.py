"""Data: offline digits, TFDS path, pixel formats, toy samplers, the loader."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax import data as dgdata
from dgmjax.data import pixels, toy
from dgmjax.errors import ConfigError


def test_digits_split_is_stratified_disjoint_and_fixed():
  xtr, ytr = dgdata.load_digits("train")
  xte, yte = dgdata.load_digits("test")
  assert xtr.shape == (4500, 28, 28, 1) and xte.shape == (500, 28, 28, 1)
  assert np.all(np.bincount(ytr) == 450) and np.all(np.bincount(yte) == 50)
  # Disjoint: no test image appears in train (compare raw bytes).
  train_set = {x.tobytes() for x in xtr}
  assert sum(x.tobytes() in train_set for x in xte) <= 2  # MNIST has rare exact duplicates
  # Real digits, not noise: mean intensity of MNIST is about 33/255.
  assert 25 < xtr.mean() < 40
  xtr2, _ = dgdata.load_digits("train")
  np.testing.assert_array_equal(xtr, xtr2)


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(ConfigError, match="dataset must be"):
    dgdata.load_image_dataset("mnistt")
  with pytest.raises(ConfigError, match="pixel_format"):
    dgdata.load_image_dataset("digits", pixel_format="grey")


def test_tfds_missing_data_says_how_to_prepare(tmp_path):
  with pytest.raises(dgdata.DatasetUnavailableError, match="download_and_prepare") as e:
    dgdata.load_image_dataset("tfds:mnist", data_dir=str(tmp_path))
  assert "digits" in str(e.value)  # points at the offline default


def test_tfds_path_with_mock_data():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=12):
    ds = dgdata.load_image_dataset("tfds:cifar10")
  assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.image_shape == (32, 32, 3)
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.min() >= 0


def test_pixel_formats():
  x = np.array([[0, 51, 255]], np.uint8)
  np.testing.assert_allclose(pixels.to_unit(x), [[0.0, 0.2, 1.0]])
  np.testing.assert_allclose(pixels.to_symmetric(x), [[-1.0, -0.6, 1.0]])
  # Dynamic binarization: Bernoulli(p) frequency.
  rng = np.random.default_rng(0)
  draws = pixels.binarize(np.full((200_000,), 0.3, np.float32), rng)
  assert set(np.unique(draws)) <= {0.0, 1.0}
  assert abs(draws.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 200_000)
  # Static binarization is the same draw every time.
  a = dgdata.load_image_dataset("digits", pixel_format="binary_static")
  b = dgdata.load_image_dataset("digits", pixel_format="binary_static")
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert set(np.unique(a.train_images)) == {0, 255}


def test_ring_and_grid_match_their_definitions():
  c = np.asarray(toy.ring_centers())
  assert len({(round(a, 6), round(b, 6)) for a, b in c}) == 8  # 8 distinct modes
  np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.arctan2(c[:, 1], c[:, 0]) % (2 * np.pi),
                             2 * np.pi * np.arange(8) / 8, atol=1e-6)
  x = np.asarray(toy.sample_ring(jax.random.key(0), 8000))
  d = np.linalg.norm(x[:, None] - c[None], axis=-1)
  nearest = d.argmin(1)
  resid = x - c[nearest]
  assert abs(resid.std() - toy.RING_STD) < 0.05 * toy.RING_STD
  counts = np.bincount(nearest, minlength=8)
  assert counts.min() > 900 and counts.max() < 1100
  g = np.asarray(toy.grid_centers())
  assert g.shape == (25, 2) and set(np.unique(g)) == {-4, -2, 0, 2, 4}
  y = np.asarray(toy.sample_grid(jax.random.key(1), 25000))
  resid = y - g[np.linalg.norm(y[:, None] - g[None], axis=-1).argmin(1)]
  assert abs(resid.std() - toy.GRID_STD) < 0.05 * toy.GRID_STD


def test_mixture_1d_density_normalises_and_matches_samples():
  grid = np.linspace(-10, 10, 20001)
  dens = np.exp(np.asarray(toy.log_prob_mixture_1d(jnp.asarray(grid))))
  assert abs(np.trapezoid(dens, grid) - 1.0) < 1e-5
  s = np.asarray(toy.sample_mixture_1d(jax.random.key(0), 100_000))[:, 0]
  assert abs(s.mean() - 0.0) < 0.03 and abs(s.var() - (4 + 0.25)) < 0.1


def test_avb_points():
  x = np.asarray(toy.sample_avb_points(jax.random.key(0), 4000))
  assert set(map(tuple, x.astype(int))) == set(map(tuple, np.eye(4, dtype=int)))
  assert np.all(np.abs(x.sum(0) - 1000) < 4 * np.sqrt(4000 * 0.25 * 0.75))


def _loader(**kw):
  arrays = {"x": np.arange(100)[:, None].astype(np.float32), "i": np.arange(100)}
  return dgdata.BatchLoader(arrays, batch_size=16, seed=3, **kw)


def test_loader_epochs_cover_everything_once_and_reshuffle():
  ld = _loader()
  assert ld.batches_per_epoch == 6
  epoch0 = np.concatenate([ld.next_numpy()["i"] for _ in range(6)])
  epoch1 = np.concatenate([ld.next_numpy()["i"] for _ in range(6)])
  assert len(set(epoch0)) == 96 and len(set(epoch1)) == 96
  assert not np.array_equal(epoch0, epoch1)
  assert ld.state_dict()["epoch"] == 2


def test_loader_resume_sees_the_same_batches():
  def transform(b, rng):
    return {**b, "noise": rng.random(len(b["i"]))}

  a = _loader(transform=transform)
  full = [a.next_numpy() for _ in range(20)]
  b = _loader(transform=transform)
  for _ in range(9):
    b.next_numpy()
  saved = b.state_dict()
  c = _loader(transform=transform)
  c.load_state_dict(saved)
  for ref in full[9:]:
    got = c.next_numpy()
    np.testing.assert_array_equal(got["i"], ref["i"])
    np.testing.assert_array_equal(got["noise"], ref["noise"])
  with pytest.raises(ValueError, match="seed"):
    dgdata.BatchLoader({"x": np.zeros(10)}, batch_size=2, seed=4).load_state_dict(saved)


def test_loader_shards_across_devices():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  ld = _loader(sharding=NamedSharding(mesh, P("data")))
  ref = _loader().next_numpy()
  batch = next(ld)
  assert len(batch["x"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(batch["i"]), ref["i"])
  # Each device holds its own contiguous 2 examples.
  shards = sorted(batch["i"].addressable_shards, key=lambda s: s.index[0].start)
  np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]), ref["i"])
  assert all(s.data.shape == (2,) for s in shards)
  with pytest.raises(ValueError, match="divisible"):
    dgdata.BatchLoader({"x": np.zeros(100)}, batch_size=12, seed=0,
                       sharding=NamedSharding(mesh, P("data")))
  with pytest.raises(ValueError, match="batch_size"):
    dgdata.BatchLoader({"x": np.zeros(10)}, batch_size=11, seed=0)


def test_padded_batches_cover_all_examples_once():
  arrays = {"i": np.arange(10)}
  seen, masks = [], []
  for b, m in dgdata.padded_batches(arrays, 4):
    assert len(b["i"]) == 4
    seen += list(b["i"][m > 0])
    masks.append(m)
  assert seen == list(range(10)) and np.concatenate(masks).sum() == 10
