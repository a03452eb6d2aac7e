"""dgmjax.plots: sizes, that text renders, and that the data land where they should.

Positions are checked on the returned pixels: the axes box is found from its
black spines, and a data coordinate is mapped to a pixel through it.
"""

import concurrent.futures
import math

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from dgmjax import plots

BAR = np.array([47, 102, 196])  # code_usage_chart's bar colour #2f66c4


def _near(img, color, tol=3):
  return np.all(np.abs(img.astype(int) - np.asarray(color, int)) <= tol, axis=-1)


def _cmap_rgb(name, v):
  return np.rint(255 * np.asarray(colormaps[name](v)[:3])).astype(int)


def _axes_box(img):
  """(left, right, top, bottom) pixel lines of the one axes' black frame."""
  dark = img.max(-1) < 160
  cols, rows = dark.sum(0), dark.sum(1)
  xs = np.flatnonzero(cols > 0.5 * cols.max())
  ys = np.flatnonzero(rows > 0.5 * rows.max())
  return xs[0], xs[-1], ys[0], ys[-1]


def _to_px(box, x, y, x0, x1, y0, y1):
  left, right, top, bottom = box
  return (int(round(left + (x - x0) / (x1 - x0) * (right - left))),
          int(round(bottom - (y - y0) / (y1 - y0) * (bottom - top))))


def _bbox(mask):
  ys, xs = np.nonzero(mask)
  return xs.min(), xs.max(), ys.min(), ys.max()


def _line(**kw):
  x = np.arange(20.0)
  return plots.line_chart({"a": (x, np.sin(x)), "b": (x, np.cos(x))},
                          **{"figsize": (4, 3), "dpi": 50, **kw})


CHARTS = {
  "line_chart": lambda **kw: plots.line_chart({"a": ([0, 1, 2], [3, 1, 2])}, **kw),
  "code_usage_chart": lambda **kw: plots.code_usage_chart([5, 0, 9, 1], **kw),
  "usage_heatmap": lambda **kw: plots.usage_heatmap(np.ones((3, 4)), **kw),
  "mode_scatter": lambda **kw: plots.mode_scatter(
    np.zeros((5, 2)), np.zeros((1, 2)), 0.1, extent=1.0, **kw),
  "density_pair": lambda **kw: plots.density_pair(
    np.zeros((8, 8)), -np.ones((8, 8)), 2.0, **kw),
  "posterior_scatter": lambda **kw: plots.posterior_scatter(
    np.zeros((4, 2)), np.arange(4), **kw),
}


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_uint8_rgb_of_figsize_times_dpi(name):
  img = CHARTS[name](title="a title 0.123", figsize=(3.2, 2.6), dpi=40)
  assert img.dtype == np.uint8 and img.shape == (104, 128, 3)
  assert img.flags.c_contiguous and img.flags.writeable
  assert (img == 255).all(-1).mean() > 0.2  # a white background, not a blank or black one


def test_title_and_axis_labels_render():
  plain, titled = _line(dpi=80), _line(title="final JSD 0.141", dpi=80)
  above = lambda img: img[: _axes_box(img)[2] - 1]  # the band above the axes frame
  assert (above(titled) < 128).sum() > 20 and not (above(plain) < 128).any()
  assert _axes_box(titled)[2] > _axes_box(plain)[2] + 5  # the title took room on top
  # the layout makes room for a label only when it is drawn
  assert _axes_box(plain)[3] < _axes_box(_line(xlabel="", dpi=80))[3] - 5
  assert _axes_box(_line(ylabel="nats", dpi=80))[0] > _axes_box(plain)[0] + 5


def test_line_chart_skips_non_finite_points_and_draws_reference_lines():
  x = np.arange(10.0)
  y = x**2
  y_bad = y.copy()
  y_bad[4] = np.nan
  x_bad = x.copy()
  x_bad[7] = np.inf
  keep = np.array([i not in (4, 7) for i in range(10)])
  kw = {"figsize": (4, 3), "dpi": 50}
  clean = plots.line_chart({"a": (x[keep], y[keep]), "b": (x, -y)}, **kw)
  np.testing.assert_array_equal(
    plots.line_chart({"a": (x_bad, y_bad), "b": (x, -y)}, **kw), clean)
  with_ref = plots.line_chart({"a": (x[keep], y[keep]), "b": (x, -y)}, hlines={"zero": 0.0},
                              **kw)
  assert (with_ref != clean).any()
  # log y with non-positive values and a non-positive reference line: no error
  img = plots.line_chart({"a": (x, y - 1)}, logy=True, hlines={"zero": 0.0, "ten": 10.0},
                         styles={"a": {"color": "k", "lw": 3}}, **kw)
  assert (img.max(-1) < 40).sum() > 50  # the black, 3-point wide curve


def _bar_tops(img):
  """Row of the highest bar pixel in each column that has bar pixels."""
  bar = _near(img, BAR, tol=8)
  cols = np.flatnonzero(bar.sum(0) > 2)
  return cols, np.array([np.flatnonzero(bar[:, c])[0] for c in cols])


def test_code_usage_bars_are_sorted_decreasing_with_the_unused_codes_marked():
  counts = np.random.default_rng(0).permutation(np.r_[np.arange(10, 60, 2), np.zeros(6)])
  img = plots.code_usage_chart(counts, title="perplexity 20", figsize=(6, 3), dpi=60)
  cols, tops = _bar_tops(img)
  assert len(cols) > 100
  assert np.all(np.diff(tops) >= -1), "bar tops must go down (rows increase) to the right"
  assert tops[-1] - tops[0] > 40  # 58 down to 10 on a linear scale
  grey = _near(img, (235, 235, 235), tol=2)  # the shaded "6 unused" stretch right of the bars
  grey_cols = np.flatnonzero(grey.sum(0) > 0.5 * _near(img, BAR, tol=8).sum(0).max())
  assert len(grey_cols) > 10 and grey_cols.min() >= cols[-1]
  assert (img[:, cols[-1] + 3:] < 150).any()  # its text


def _bar_heights(counts, **kw):
  img = plots.code_usage_chart(counts, figsize=(4, 3), dpi=60, **kw)
  bar = _near(img, BAR, tol=8)
  cols = np.flatnonzero(bar.sum(0) > 0)
  edges = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
  if len(edges) == 1:  # touching bars: cut into equal thirds
    edges = np.array_split(cols, len(counts))
  return np.array([bar[:, e[len(e) // 2]].sum() for e in edges], float)


def test_code_usage_log_scale_when_counts_span_two_decades():
  h = _bar_heights([1, 10000, 100])
  assert 0.4 < h[1] / h[0] < 0.7  # log: 100 is about half way up to 10000
  h = _bar_heights([1, 10000, 100], log=False)
  assert h[1] / h[0] < 0.05
  h = _bar_heights([20, 100, 50])  # one decade: stays linear
  assert abs(h[1] / h[0] - 0.5) < 0.05 and abs(h[2] / h[0] - 0.2) < 0.05
  h = _bar_heights([1, 100, 1])  # exactly two decades: log; the 1s are visible
  assert h[1] / h[0] > 0.05


def test_usage_heatmap_normalises_rows():
  # rows [1, 3] and [10, 30] are the same frequencies: the same colours
  img = plots.usage_heatmap(np.array([[1.0, 3.0], [10.0, 30.0]]), figsize=(4, 3), dpi=50)
  lo, hi = _cmap_rgb("viridis", 0.25 / 0.75), _cmap_rgb("viridis", 1.0)
  assert _near(img, lo).sum() > 200 and _near(img, hi).sum() > 200
  left, right, top, bottom = _bbox(_near(img, lo) | _near(img, hi))
  col = img[top + 2: bottom - 2, (left + right) // 2 - 10]  # down the first column
  assert _near(col, lo).all()


def test_mode_scatter_places_samples_and_counts_those_outside():
  e = 2.0
  centers = np.array([[-1.0, 1.0]])
  samples = np.array([[1.0, -1.0]] * 3)
  kw = {"extent": e, "figsize": (4, 4.4), "dpi": 60}
  img = plots.mode_scatter(samples, centers, 0.05, title="1/1 modes", **kw)
  box = _axes_box(img)
  assert box[1] - box[0] > 150 and abs((box[1] - box[0]) - (box[3] - box[2])) <= 2  # equal
  x, y = _to_px(box, 1.0, -1.0, -e, e, -e, e)
  assert img[y - 3: y + 4, x - 3: x + 4].max(-1).min() < 90  # a dark dot there
  x, y = _to_px(box, -1.0, -1.0, -e, e, -e, e)
  assert img[y - 15: y + 16, x - 15: x + 16].min() > 200  # nothing where no samples are
  x, y = _to_px(box, -1.0, 1.0, -e, e, -e, e)  # the mode: a red ring of radius 0.15
  r = int(round(0.15 / (2 * e) * (box[1] - box[0])))
  ring = img[y - r - 2: y + r + 3, x - r - 2: x + r + 3].astype(int)
  assert ((ring[..., 0] > 150) & (ring[..., 1] < 100)).sum() > 10
  assert img[y, x].min() > 200  # a circle, not a disc
  # one more sample far outside: nothing new inside the view, the legend changes
  other = plots.mode_scatter(np.r_[samples, [[50.0, 0.0]]], centers, 0.05, title="1/1 modes",
                             **kw)
  diff = np.any(other != img, -1)
  assert diff.any() and not diff[box[2] + 2: box[3] - 1, box[0] + 2: box[1] - 1].any()
  assert np.flatnonzero(diff.any(1)).min() > box[3]  # below the axes: the legend


def test_density_pair_shared_clipped_scale_and_orientation():
  g, e = 32, 3.0
  log_q = np.full((g, g), -100.0)  # far below the clip: the bottom colour
  log_q[: g // 4, : g // 4] = 1.0  # the max, at z1 = -e .. -e/2, z2 = +e/2 .. +e
  log_p = np.full((g, g), 1.0 - 4.0)  # half way down an 8-nat range
  img = plots.density_pair(log_q, log_p, e, title="KL 1.0", figsize=(8, 4), dpi=60)
  left_part = img[:, : int(0.75 * img.shape[1])]  # not the colorbar
  top_c, mid_c, low_c = (_cmap_rgb("viridis", v) for v in (1.0, 0.5, 0.0))
  hot, cold = _near(left_part, top_c), _near(left_part, low_c)
  assert hot.sum() > 100 and _near(left_part, mid_c).sum() > 1000
  h0, h1, h2, h3 = _bbox(hot)
  p0, p1, p2, p3 = _bbox(hot | cold)  # the left panel
  assert abs(h0 - p0) <= 1 and abs(h2 - p2) <= 1  # the hot block is at the top left
  assert abs((h1 - h0 + 1) - (p1 - p0 + 1) / 4) <= 2
  assert abs((h3 - h2 + 1) - (p3 - p2 + 1) / 4) <= 2
  assert _near(img[:, int(0.75 * img.shape[1]):], top_c, tol=10).any()  # the colorbar's top
  # -inf and NaN take the bottom colour, they do not blank the panel
  log_q[-1, -1], log_q[-1, -2] = -np.inf, np.nan
  again = plots.density_pair(log_q, log_p, e, title="KL 1.0", figsize=(8, 4), dpi=60)
  np.testing.assert_array_equal(again, img)


def test_posterior_scatter_one_colour_per_label():
  z = np.array([[1.0, 1.0]] * 20 + [[-1.0, -1.0]] * 20)
  labels = np.array([0] * 20 + [1] * 20)
  kw = {"figsize": (4, 4.6), "dpi": 60}
  img = plots.posterior_scatter(z, labels, extent=2.0, **kw).astype(int)
  box = _axes_box(img)
  x, y = _to_px(box, 1.0, 1.0, -2, 2, -2, 2)
  patch = img[y - 1: y + 2, x - 1: x + 2].reshape(-1, 3).mean(0)
  assert patch[2] > patch[0] + 60, patch  # tab10 blue
  x, y = _to_px(box, -1.0, -1.0, -2, 2, -2, 2)
  patch = img[y - 1: y + 2, x - 1: x + 2].reshape(-1, 3).mean(0)
  assert patch[0] > patch[2] + 100, patch  # tab10 orange
  _, y = _to_px(box, 0.0, 0.5, -2, 2, -2, 2)  # grey prior circles r = 1, 2 cross z2 = 0.5
  for r in (1.0, 2.0):
    for sign in (-1, 1):
      x, _ = _to_px(box, sign * math.sqrt(r * r - 0.25), 0.5, -2, 2, -2, 2)
      near = img[y, x - 2: x + 3]
      assert ((near.min(-1) < 235) & (np.ptp(near, -1) < 8)).any(), (r, sign, near)
  x, _ = _to_px(box, 1.4, 0.5, -2, 2, -2, 2)
  assert img[y, x - 3: x + 4].min() > 240  # white between the circles
  named = plots.posterior_scatter(z, labels, extent=2.0, label_names=["first", "second"], **kw)
  diff = np.any(named != img, -1)
  assert diff.any() and np.flatnonzero(diff.any(1)).min() > box[3]  # only the legend


def test_figure_to_array_bare_and_transparent_figures():
  from matplotlib.figure import Figure

  fig = Figure(figsize=(2, 1), dpi=30, facecolor=(0, 0, 0, 0))  # no Agg canvas yet
  fig.add_subplot().plot([0, 1], [0, 1], color="k")
  img = plots.figure_to_array(fig)
  assert img.shape == (30, 60, 3) and img.dtype == np.uint8
  assert tuple(img[0, 0]) == (255, 255, 255) and (img < 50).any()


def test_charts_from_threads_equal_serial():
  titles = [f"run {i}: value {i / 7:.3f}" for i in range(3)]
  serial = [_line(title=t, dpi=30) for t in titles]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    threaded = list(pool.map(lambda t: _line(title=t, dpi=30), titles))
  for a, b in zip(serial, threaded, strict=True):
    np.testing.assert_array_equal(a, b)


def test_save_gif_frames_padded_to_the_largest(tmp_path):
  frames = [np.full((10, 12, 3), 0, np.uint8), np.full((16, 8, 3), 100, np.uint8),
            np.full((6, 6, 3), 200, np.uint8)]
  path = plots.save_gif(frames, str(tmp_path / "sub" / "a.gif"), duration_ms=250)
  assert path == str(tmp_path / "sub" / "a.gif")
  with Image.open(path) as im:
    assert im.n_frames == 3 and im.size == (12, 16)
    assert im.info.get("duration") == 250 and im.info.get("loop") == 0
    im.seek(2)
    last = np.asarray(im.convert("RGB"))
  assert last[0, 0].tolist() == [200, 200, 200] and last[-1, -1].tolist() == [255, 255, 255]
  with pytest.raises(ValueError, match="at least one frame"):
    plots.save_gif([], str(tmp_path / "b.gif"))


def test_title_in_line_chart_shows_unicode_without_missing_glyphs(recwarn):
  plots.line_chart({"π": ([0, 1], [0, 1]), "σ₁": ([0, 1], [1, 0])},
                   title=f"KL(q ‖ p) = {math.pi:.2f}, σ² — z₁", figsize=(3, 2), dpi=40)
  assert not [w for w in recwarn if "missing from" in str(w.message)]
