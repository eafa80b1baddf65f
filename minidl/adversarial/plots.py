"""Pictures for the UAP and loss-landscape study, drawn with matplotlib's Agg backend and saved
as PNG files (parent folders are created).

* :func:`plot_singular_vectors` - singular vectors (or any perturbations) as images, one row per
  model (e.g. natural vs adversarially trained), 1- or 3-channel, symmetric colour scale;
* :func:`plot_spectra`          - singular values as bar charts, one panel per matrix;
* :func:`plot_cosine_histograms` - histograms of gradient cosine similarities per model;
* :func:`plot_loss_landscape`   - loss contours on a plane with a PGD path on top;
* :func:`plot_fooling_rates`    - grouped bars of fooling rates per model and method;
* :func:`plot_landscape_measures` - each landscape measure against the radius, per model and norm.

Images are channel-first (C, H, W) as everywhere in minidl; flat vectors (D,) are reshaped with
``image_shape`` or, when it is omitted, as a square 1-channel (D = s^2) or 3-channel (D = 3 s^2)
image.
"""
import math
import os

import numpy

from ..tensor import to_host as _host


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, plt):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def infer_image_shape(size):
    """(1, s, s) when size = s^2, (3, s, s) when size = 3 s^2; else a ValueError."""
    s = math.isqrt(size)
    if s * s == size:
        return (1, s, s)
    if size % 3 == 0:
        s = math.isqrt(size // 3)
        if 3 * s * s == size:
            return (3, s, s)
    raise ValueError(f"cannot guess an image shape for {size} values; pass image_shape=(C, H, W)")


def _as_images(vectors, image_shape):
    """(k, C, H, W) from one flat (D,) vector, (k, D) flat vectors, one (C, H, W) image with C in
    (1, 3), (k, C, H, W) images, or an SVDUAP; or anything of ``image_shape`` (C, H, W)/(H, W)."""
    v = getattr(vectors, "vectors", vectors)
    v = numpy.asarray(_host(v), dtype=numpy.float64)
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if len(image_shape) == 2:
            image_shape = (1,) + image_shape
        size = int(numpy.prod(image_shape))
        if v.size % size:
            raise ValueError(f"{v.size} values do not split into images of shape {image_shape}")
        return v.reshape((-1,) + image_shape)
    if v.ndim == 4:
        return v
    if v.ndim == 3 and v.shape[0] in (1, 3):  # one (C, H, W) image
        return v[None]
    if v.ndim == 1:
        v = v[None]
    return v.reshape((len(v),) + infer_image_shape(v[0].size))


def _show(ax, img):
    """Draw one (C, H, W) perturbation with a colour scale symmetric around zero."""
    m = float(numpy.abs(img).max()) or 1.0
    if img.shape[0] == 1:
        handle = ax.imshow(img[0], cmap="RdBu_r", vmin=-m, vmax=m)
    else:
        handle = ax.imshow(numpy.clip(0.5 + 0.5 * img[:3].transpose(1, 2, 0) / m, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    return handle


def plot_singular_vectors(rows, path, image_shape=None, singular_values=None, max_vectors=None, title=None):
    """Vectors as images side by side: ``rows`` maps a row name (e.g. "natural", "adversarial")
    to an array of vectors ((k, D) flat, (k, C, H, W), or an SVDUAP). Each image gets its own
    colour scale symmetric around zero (1-channel: red positive, blue negative; 3-channel: gray
    is zero, the RGB offset shows the sign). ``singular_values`` maps names to spectra to put
    sigma_i over each image (taken from an SVDUAP when omitted). Saves a PNG at ``path``."""
    plt = _pyplot()
    if not rows:
        raise ValueError("plot_singular_vectors: nothing to plot")
    images = {name: _as_images(v, image_shape) for name, v in rows.items()}
    spectra = dict(singular_values or {})
    for name, v in rows.items():
        if name not in spectra and hasattr(v, "singular_values"):
            spectra[name] = v.singular_values
    k = max(len(im) for im in images.values())
    if max_vectors is not None:
        k = min(k, max_vectors)
    fig, axes = plt.subplots(len(images), k, figsize=(1.8 * k + 0.8, 1.9 * len(images) + 0.4), squeeze=False)
    for r, (name, ims) in enumerate(images.items()):
        for c in range(k):
            ax = axes[r, c]
            if c >= len(ims):
                ax.axis("off")
                continue
            _show(ax, ims[c])
            if name in spectra and c < len(spectra[name]):
                ax.set_title(f"$\\sigma_{{{c + 1}}}$={float(spectra[name][c]):.3g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(str(name), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_spectra(spectra, path, top=20, normalize=False, title=None):
    """Bar charts of the ``top`` largest singular values, one panel per entry of ``spectra``
    (name -> singular values). ``normalize`` divides each spectrum by its largest value."""
    plt = _pyplot()
    if not spectra:
        raise ValueError("plot_spectra: nothing to plot")
    fig, axes = plt.subplots(1, len(spectra), figsize=(3.6 * len(spectra), 3), squeeze=False)
    for ax, (name, s) in zip(axes[0], spectra.items()):
        s = numpy.asarray(_host(s), dtype=numpy.float64)[:top]
        if normalize and len(s) and s[0] > 0:
            s = s / s[0]
        ax.bar(numpy.arange(1, len(s) + 1), s, color="tab:blue")
        ax.set_title(str(name), fontsize=9)
        ax.set_xlabel("index")
        ax.set_ylabel("singular value" + (" / largest" if normalize else ""))
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_cosine_histograms(values, path, bins=40, title="gradient cosine similarity in the eps-ball"):
    """Overlaid histograms (densities on [-1, 1]) of cosine similarities, one per entry of
    ``values`` (name -> array of any shape, e.g. the pairwise cosines of
    :func:`minidl.adversarial.landscape.ball_gradient_cosines`); NaNs are dropped and each
    legend entry shows the mean."""
    plt = _pyplot()
    if not values:
        raise ValueError("plot_cosine_histograms: nothing to plot")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, v in values.items():
        v = numpy.asarray(_host(v), dtype=numpy.float64).reshape(-1)
        v = v[numpy.isfinite(v)]
        label = f"{name} (mean {v.mean():.3f})" if len(v) else f"{name} (no values)"
        ax.hist(v, bins=bins, range=(-1, 1), density=True, alpha=0.5, label=label)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_xlim(-1, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_loss_landscape(grid, path, coords=None, title=None, levels=20):
    """Filled contours of ``grid`` (the dict of :func:`minidl.adversarial.landscape.loss_grid`)
    with an optional path (coords (T, 2) in the plane) drawn from start (circle) to end (star)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    cs = ax.contourf(grid["a"], grid["b"], grid["loss"], levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss")
    if coords is not None:
        c = numpy.asarray(coords)
        ax.plot(c[:, 0], c[:, 1], "-", color="white", lw=1.5)
        ax.plot(c[:, 0], c[:, 1], ".", color="white", ms=4)
        ax.plot(c[0, 0], c[0, 1], "o", color="red", ms=7, label="x")
        ax.plot(c[-1, 0], c[-1, 1], "*", color="orange", ms=11, label="PGD end")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("first step direction")
    ax.set_ylabel("final perturbation (orthogonalised)")
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_fooling_rates(rates, path, title="fooling rate", ylabel="fooling rate"):
    """Grouped bars: ``rates`` maps a group (e.g. a model) to {method: rate}."""
    plt = _pyplot()
    if not rates:
        raise ValueError("plot_fooling_rates: nothing to plot")
    groups = list(rates)
    methods = []
    for g in groups:
        methods += [m for m in rates[g] if m not in methods]
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(groups) * max(1, len(methods)) * 0.5, 3.5))
    for j, m in enumerate(methods):
        xs = numpy.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(xs, [float(rates[g].get(m, numpy.nan)) for g in groups], width, label=str(m))
    ax.set_xticks(numpy.arange(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_landscape_measures(rows, path, models=("natural", "adversarial")):
    """One panel per measure: its mean over the images (bars: one standard error) against the
    radius as a fraction of the full radius, a line per model and norm (solid L-inf, dashed L2;
    a measure of norm "-", taken at the image, is one square at fraction 1).
    ``rows`` are the dicts of :func:`minidl.study.analyses.landscape_analysis`: measure, norm,
    fraction, smoother and per model a summary with mean and se (None where not measured)."""
    plt = _pyplot()
    if not rows:
        raise ValueError("plot_landscape_measures: nothing to plot")
    measures = list(dict.fromkeys(r["measure"] for r in rows))
    cols = min(4, len(measures))
    nrows = math.ceil(len(measures) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    colours = dict(zip(models, ("tab:blue", "tab:orange", "tab:green")))
    for ax, measure in zip(axes.ravel(), measures):
        mine = [r for r in rows if r["measure"] == measure]
        for model in models:
            # norm "-": a measure with no ball (the input-Hessian curvature), one point at fraction 1
            for norm, style, marker in (("inf", "-", "o"), ("2", "--", "o"), ("-", "none", "s")):
                line = sorted((r["fraction"], r[model]["mean"], r[model]["se"]) for r in mine if r["norm"] == norm)
                if not line:
                    continue
                f, m, e = (numpy.array([numpy.nan if v is None else v for v in col], dtype=float) for col in zip(*line))
                ax.errorbar(f, m, yerr=numpy.nan_to_num(e), linestyle=style, marker=marker, ms=3,
                            color=colours.get(model), capsize=2,
                            label=f"{model}, at the image" if norm == "-" else f"{model}, L{norm}")
        ax.set_title(f"{measure} ({mine[0]['smoother']} = smoother)", fontsize=8)
        if all(r["norm"] == "-" for r in mine):
            # no ball and no radius: the x axis carries nothing but the models' two points
            ax.set_xticks([1.0], ["at the image"])
            ax.legend(fontsize=6)
        else:
            ax.set_xlabel("radius / full radius", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(measures):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path, plt)
