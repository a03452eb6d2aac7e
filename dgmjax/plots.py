"""Charts for trainers, benches and notebooks, drawn with matplotlib (Agg).

Every chart is built on its own :class:`matplotlib.figure.Figure` with a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` (never pyplot's
global state), so it is safe to call from any thread and never opens a window.
Each function returns the picture as a uint8 (H, W, 3) RGB array of
``figsize × dpi`` pixels, ready for a PNG file (:func:`dgmjax.images.save_png`)
and for TensorBoard alike, and lets go of its figure.

The titles carry the chart's key number, which the caller formats (perplexity,
modes covered, KL ...); this module only draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_UNDER = "0.35"  # reference lines, annotations


def _figure(figsize, dpi):
  """A Figure on its own Agg canvas, laid out by the constrained-layout engine."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=figsize, dpi=dpi, layout="constrained", facecolor="white")
  FigureCanvasAgg(fig)
  return fig


def figure_to_array(fig) -> np.ndarray:
  """Render a matplotlib figure to a uint8 (H, W, 3) RGB array.

  Works for a bare :class:`~matplotlib.figure.Figure` (it is given an Agg
  canvas if it has none) and for a pyplot figure under the Agg backend. The
  size is ``figsize × dpi`` pixels; a transparent background is composited
  over white. The figure is left as it is (a pyplot caller still closes it).

  Example:
    >>> from matplotlib.figure import Figure
    >>> from dgmjax.plots import figure_to_array
    >>> fig = Figure(figsize=(3, 2), dpi=50)
    >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
    >>> img = figure_to_array(fig)
    >>> print(img.shape, img.dtype, img[0, 0])  # white corner
    (100, 150, 3) uint8 [255 255 255]
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  canvas = fig.canvas
  if not isinstance(canvas, FigureCanvasAgg):
    canvas = FigureCanvasAgg(fig)
  canvas.draw()
  rgba = np.asarray(canvas.buffer_rgba())
  rgb = rgba[..., :3].astype(np.float32)
  alpha = rgba[..., 3:].astype(np.float32) / 255.0
  if np.all(alpha == 1.0):
    return np.array(rgba[..., :3], np.uint8)
  return np.clip(np.rint(rgb * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


def _render(fig) -> np.ndarray:
  """The picture of one of this module's figures; the figure is cleared afterwards."""
  img = figure_to_array(fig)
  fig.clear()
  return img


def _finite_xy(x, y, positive: bool = False):
  x = np.asarray(x, np.float64).reshape(-1)
  y = np.asarray(y, np.float64).reshape(-1)
  if x.shape != y.shape:
    raise ValueError(f"x and y of a series differ in length: {x.shape} vs {y.shape}.")
  keep = np.isfinite(x) & np.isfinite(y)
  if positive:
    keep &= y > 0
  return x[keep], y[keep]


def line_chart(series: Mapping[str, tuple[Any, Any]], *, title: str = "",
               xlabel: str = "step", ylabel: str = "",
               hlines: Mapping[str, float] | None = None, logy: bool = False,
               styles: Mapping[str, dict] | None = None,
               figsize: tuple[float, float] = (7.2, 4.0), dpi: int = 100) -> np.ndarray:
  """Curves ``{name: (x, y)}`` with a legend, as a uint8 (H, W, 3) picture.

  Args:
    series: name -> (x, y) arrays of one length. Non-finite points (and, with
      ``logy``, non-positive ones) are skipped; the curve joins its neighbours.
    title: text above the axes (put the chart's key number here).
    xlabel, ylabel: axis labels.
    hlines: name -> y of dashed horizontal reference lines, labelled in the
      legend with their value.
    logy: logarithmic y axis.
    styles: name -> keyword arguments for ``Axes.plot`` of that series (e.g.
      ``{"lw": 4, "color": "k", "ls": ":"}``).
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  A legend is drawn when there is more than one curve or reference line.

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import line_chart
    >>> x = np.arange(10.0)
    >>> img = line_chart({"loss": (x, 1 / (1 + x)), "jsd": (x, 0 * x + np.nan)},
    ...                  hlines={"log 2": np.log(2)}, title="final loss 0.1",
    ...                  figsize=(4, 3), dpi=50)
    >>> print(img.shape, img.dtype)
    (150, 200, 3) uint8
  """
  hlines = dict(hlines or {})
  styles = dict(styles or {})
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  drawn = 0
  for name, (x, y) in series.items():
    x, y = _finite_xy(x, y, positive=logy)
    kw = {"lw": 1.6, **styles.get(name, {})}
    if len(x) == 1:  # one point: a marker, or it would not show
      kw.setdefault("marker", "o")
    ax.plot(x, y, label=name, **kw)
    drawn += 1
  for i, (name, value) in enumerate(hlines.items()):
    if np.isfinite(value) and (value > 0 or not logy):
      ax.axhline(float(value), ls="--", lw=1.0, color=("0.25", "0.55", "0.4", "0.7")[i % 4],
                 label=f"{name} = {float(value):.4g}")
      drawn += 1
  if logy:
    ax.set_yscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel)
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  if len(series) + len(hlines) > 1 and drawn:
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
  return _render(fig)


def _spans_decades(counts: np.ndarray, decades: float = 2.0) -> bool:
  pos = counts[counts > 0]
  return len(pos) > 0 and float(pos.max()) >= 10.0**decades * float(pos.min())


def code_usage_chart(counts, *, title: str = "", log: bool = True,
                     figsize: tuple[float, float] = (7.2, 3.6), dpi: int = 100) -> np.ndarray:
  """How often each code is used, sorted in decreasing order, as bars.

  Args:
    counts: (K,) code counts (any shape is flattened), e.g. test-split uses of
      each VQ-VAE codebook entry.
    title: text above the axes (e.g. the perplexity and the fraction used).
    log: allow a log-scale y axis; it is used when the used codes' counts
      span at least two decades (max ≥ 100 × smallest non-zero count).
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  Codes never used are the empty stretch at the right, shaded and annotated
  "N unused".

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import code_usage_chart
    >>> img = code_usage_chart(np.array([0, 3, 500, 40, 0, 7]), title="perplexity 2.1",
    ...                        figsize=(4, 2), dpi=50)
    >>> print(img.shape, img.dtype)
    (100, 200, 3) uint8
  """
  c = np.sort(np.nan_to_num(np.asarray(counts, np.float64).reshape(-1), nan=0.0))[::-1]
  c = np.maximum(c, 0.0)
  k = len(c)
  used = int((c > 0).sum())
  use_log = bool(log) and _spans_decades(c)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  ranks = np.arange(k)
  if used:
    ax.bar(ranks[:used], c[:used], width=1.0, align="edge", color="#2f66c4", linewidth=0,
           bottom=None)
  if use_log:
    pos = c[c > 0]
    ax.set_yscale("log")
    ax.set_ylim(float(pos.min()) / 2.0, float(pos.max()) * 2.0)
  else:
    ax.set_ylim(0, (float(c.max()) if used else 1.0) * 1.05)
  ax.set_xlim(0, max(k, 1))
  if used < k:
    ax.axvspan(used, k, color="0.92", lw=0)
    ax.text((used + k) / 2, 0.5, f"{k - used} unused", transform=ax.get_xaxis_transform(),
            ha="center", va="center", fontsize=9, color=_UNDER,
            rotation=90 if (k - used) < 0.15 * k else 0)
  ax.set(xlabel="code rank (sorted by use)", ylabel="count")
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  return _render(fig)


def usage_heatmap(counts_2d, *, title: str = "", xlabel: str = "class",
                  ylabel: str = "latent variable", cmap: str = "viridis",
                  figsize: tuple[float, float] = (7.2, 4.8), dpi: int = 100) -> np.ndarray:
  """Per-variable class frequencies as a heat map, rows normalised, with a colorbar.

  Args:
    counts_2d: (num_variables, num_classes) counts, e.g. how often each class
      is the mode of q(c_i | x) for each latent variable i.
    title: text above the axes (e.g. the mean perplexity per variable).
    xlabel, ylabel: axis labels (columns, rows).
    cmap: a matplotlib colormap name.
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import usage_heatmap
    >>> img = usage_heatmap(np.array([[5, 5, 0], [0, 1, 9]]), title="perplexity 1.8",
    ...                     figsize=(4, 3), dpi=50)
    >>> print(img.shape, img.dtype)
    (150, 200, 3) uint8
  """
  counts = np.nan_to_num(np.asarray(counts_2d, np.float64), nan=0.0)
  if counts.ndim == 1:
    counts = counts[None]
  if counts.ndim != 2:
    raise ValueError(f"counts_2d must be (variables, classes), got shape {counts.shape}.")
  p = counts / np.maximum(counts.sum(-1, keepdims=True), 1e-12)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  im = ax.imshow(p, cmap=cmap, vmin=0.0, vmax=max(float(p.max()), 1e-12), aspect="auto",
                 interpolation="nearest")
  fig.colorbar(im, ax=ax, label="frequency within the variable (row sums to 1)")
  from matplotlib.ticker import MaxNLocator

  for axis in (ax.xaxis, ax.yaxis):
    axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
  ax.set(xlabel=xlabel, ylabel=ylabel)
  if title:
    ax.set_title(title, fontsize=10)
  return _render(fig)


def mode_scatter(samples, centers, std: float, *, extent: float, title: str = "",
                 figsize: tuple[float, float] = (5.2, 5.6), dpi: int = 100) -> np.ndarray:
  """2-D samples as small dark dots over the true modes, drawn as circles of radius 3σ.

  Args:
    samples: (N, 2) generated points.
    centers: (M, 2) the mixture's mode centres.
    std: the modes' standard deviation σ.
    extent: the view is [−extent, extent]² (equal aspect); samples outside it
      are counted in the legend.
    title: text above the axes (e.g. modes covered and the high-quality share).
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import mode_scatter
    >>> centers = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> samples = np.array([[1.0, 0.02], [-0.98, 0.0], [9.0, 9.0]])  # one outside
    >>> img = mode_scatter(samples, centers, 0.05, extent=1.5, title="2/2 modes",
    ...                    figsize=(3, 3), dpi=60)
    >>> print(img.shape, img.dtype)
    (180, 180, 3) uint8
  """
  from matplotlib.lines import Line2D
  from matplotlib.patches import Circle

  s = np.asarray(samples, np.float64).reshape(-1, 2)
  centers = np.asarray(centers, np.float64).reshape(-1, 2)
  e = float(extent)
  inside = np.all(np.isfinite(s), -1) & np.all(np.abs(s) <= e, -1)
  n_out = int((~inside).sum())
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  ax.scatter(s[inside, 0], s[inside, 1], s=2.5, c="0.08", linewidths=0, zorder=2)
  for cx, cy in centers:
    ax.add_patch(Circle((cx, cy), 3.0 * float(std), fill=False, edgecolor="#d62728", lw=1.2,
                        zorder=3))
  ax.set_xlim(-e, e)
  ax.set_ylim(-e, e)
  ax.set_aspect("equal")
  ax.set(xlabel="x₁", ylabel="x₂")
  if title:
    ax.set_title(title, fontsize=10)
  handles = [Line2D([], [], ls="none", marker="o", ms=3, color="0.08",
                    label=f"samples ({n_out} of {len(s)} outside the view)"),
             Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="#d62728",
                    label="modes (3σ)")]
  fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8,
             frameon=False)
  return _render(fig)


def density_pair(log_q, log_p, extent: float, *, title: str = "",
                 left_label: str = "aggregate posterior q_agg(z)",
                 right_label: str = "prior p(z)", dynamic_range: float = 8.0,
                 cmap: str = "viridis",
                 figsize: tuple[float, float] = (9.6, 4.6), dpi: int = 100) -> np.ndarray:
  """Two log-density heat maps side by side on one shared colour scale.

  Args:
    log_q, log_p: (G, G) log densities on a grid over [−extent, extent]²;
      row 0 is z₂ = +extent (the top), column 0 is z₁ = −extent.
    extent: half-width of the grid.
    title: text above both panels (e.g. KL(q_agg ‖ p)).
    left_label, right_label: the panels' titles.
    dynamic_range: the colour scale is [max − dynamic_range, max], the max
      over both panels; lower values (and −inf, NaN) get the bottom colour.
    cmap: a matplotlib colormap name; the maximum has its top colour.
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import density_pair
    >>> g = np.linspace(-3, 3, 32)
    >>> log_p = -0.5 * (g[None, :] ** 2 + g[::-1, None] ** 2)
    >>> img = density_pair(log_p - 0.1, log_p, 3.0, title="KL 0.0", figsize=(6, 3), dpi=50)
    >>> print(img.shape, img.dtype)
    (150, 300, 3) uint8
  """
  log_q = np.asarray(log_q, np.float64)
  log_p = np.asarray(log_p, np.float64)
  finite = np.concatenate([log_q[np.isfinite(log_q)], log_p[np.isfinite(log_p)]])
  hi = float(finite.max()) if finite.size else 0.0
  lo = hi - float(dynamic_range)
  e = float(extent)
  fig = _figure(figsize, dpi)
  axes = fig.subplots(1, 2, sharex=True, sharey=True)
  for ax, grid, label in zip(axes, (log_q, log_p), (left_label, right_label), strict=True):
    shown = np.clip(np.nan_to_num(grid, nan=lo, posinf=hi, neginf=lo), lo, hi)
    im = ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, extent=(-e, e, -e, e),
                   origin="upper", interpolation="nearest")
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("z₁")
    ax.axhline(0, color="w", lw=0.5, alpha=0.5)
    ax.axvline(0, color="w", lw=0.5, alpha=0.5)
  axes[0].set_ylabel("z₂")
  fig.colorbar(im, ax=list(axes), label="log density", shrink=0.9)
  if title:
    fig.suptitle(title, fontsize=11)
  return _render(fig)


def posterior_scatter(z, labels, *, extent: float | Sequence[float] = 3.0, title: str = "",
                      label_names: Sequence[str] | None = None,
                      figsize: tuple[float, float] = (5.2, 5.8), dpi: int = 100) -> np.ndarray:
  """A scatter of 2-D latent samples, one colour per label, over prior radii 1, 2, 3.

  Args:
    z: (N, 2) samples, e.g. z ~ q(z|x_i) for a few inputs x_i (shuffle them
      first so that no colour hides the others).
    labels: (N,) int labels, the colour of each sample.
    extent: the view is [−extent, extent]², or (x0, x1, y0, y1).
    title: text above the axes (e.g. the model's log p(x)).
    label_names: legend text of label i (default "label i").
    figsize, dpi: the picture is ``figsize × dpi`` pixels.

  Example:
    >>> import numpy as np
    >>> from dgmjax.plots import posterior_scatter
    >>> z = np.random.default_rng(0).normal(size=(200, 2))
    >>> img = posterior_scatter(z, np.arange(200) % 4, title="log p(x) = -1.39",
    ...                         figsize=(3, 3.5), dpi=40)
    >>> print(img.shape, img.dtype)
    (140, 120, 3) uint8
  """
  from matplotlib import colormaps
  from matplotlib.lines import Line2D
  from matplotlib.patches import Circle

  z = np.asarray(z, np.float64).reshape(-1, 2)
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if len(labels) != len(z):
    raise ValueError(f"{len(z)} samples but {len(labels)} labels.")
  if np.ndim(extent) == 0:
    x0, x1, y0, y1 = -float(extent), float(extent), -float(extent), float(extent)
  else:
    x0, x1, y0, y1 = (float(v) for v in extent)
  uniq = np.unique(labels)
  palette = colormaps["tab10" if len(uniq) <= 10 else "tab20"]
  n_col = palette.N
  colors = np.asarray([palette(int(lab) % n_col) for lab in labels]).reshape(-1, 4)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  for r in (1.0, 2.0, 3.0):
    ax.add_patch(Circle((0, 0), r, fill=False, edgecolor="0.7", lw=0.8, zorder=1))
  ax.axhline(0, color="0.85", lw=0.6, zorder=0)
  ax.axvline(0, color="0.85", lw=0.6, zorder=0)
  ax.scatter(z[:, 0], z[:, 1], s=5, c=colors, linewidths=0, alpha=0.8, zorder=2)
  ax.set_xlim(x0, x1)
  ax.set_ylim(y0, y1)
  ax.set_aspect("equal")
  ax.set(xlabel="z₁", ylabel="z₂")
  if title:
    ax.set_title(title, fontsize=10)

  def name(lab):
    if label_names is not None and 0 <= lab < len(label_names):
      return label_names[lab]
    return f"label {lab}"

  handles = [Line2D([], [], ls="none", marker="o", ms=5, color=palette(int(lab) % n_col),
                    label=name(int(lab))) for lab in uniq]
  handles.append(Line2D([], [], color="0.7", lw=0.8, label="prior radii 1, 2, 3"))
  fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
             fontsize=8, frameon=False)
  return _render(fig)


def save_gif(frames: Sequence[np.ndarray], path: str, *, duration_ms: int = 600) -> str:
  """Write uint8 (H, W, 3) frames as a looping GIF; returns ``path``.

  Frames of different sizes are padded (white, bottom and right) to the
  largest; (H, W) frames are grey, float frames are read as [0, 1]. Folders in ``path`` are created. Like every GIF writer, PIL merges
  consecutive identical frames into one longer frame.

  Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from dgmjax.plots import save_gif
    >>> frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 128, 255)]
    >>> path = save_gif(frames + [np.zeros((4, 10, 3), np.uint8)],
    ...                 os.path.join(tempfile.mkdtemp(), "a.gif"))
    >>> with Image.open(path) as im:
    ...   print(im.n_frames, im.size)
    4 (10, 8)
  """
  from PIL import Image

  arrays = []
  for f in frames:
    a = np.asarray(f)
    if a.ndim == 2:
      a = np.repeat(a[..., None], 3, -1)
    if a.dtype != np.uint8:
      a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    arrays.append(a[..., :3])
  if not arrays:
    raise ValueError("save_gif needs at least one frame.")
  h = max(a.shape[0] for a in arrays)
  w = max(a.shape[1] for a in arrays)
  images = [Image.fromarray(np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1]), (0, 0)),
                                   constant_values=255)) for a in arrays]
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:],
                 duration=max(int(math.ceil(duration_ms)), 10), loop=0)
  return path
