"""Plots of what a model attends to or selects: PNG files drawn on matplotlib's Agg canvas.

None touches pyplot's global state, so they are safe in a training process
and in parallel tests.
"""

from __future__ import annotations

import numpy as np


def save_attention_heatmap(weights, src_tokens, tgt_tokens, path) -> None:
    """Writes one example's attention (tgt_len, src_len) as a PNG heatmap, rows cropped to the tokens.

    Uses matplotlib's Agg canvas directly, so it never touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, dtype="float32")[: len(tgt_tokens), : len(src_tokens)]
    figure = Figure(figsize=(1.0 + 0.35 * len(src_tokens), 1.0 + 0.35 * len(tgt_tokens)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(src_tokens)), labels=[str(t) for t in src_tokens], rotation=90)
    axes.set_yticks(range(len(tgt_tokens)), labels=[str(t) for t in tgt_tokens])
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)


def save_attention_png(image, rollout, path, alpha: float = 0.5) -> str:
    """Writes a PNG of `image` beside `image` overlaid with its `rollout` map (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype="float32")
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
    gray = image.shape[-1] == 1
    shown = image[..., 0] if gray else image
    figure = Figure(figsize=(6, 3))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for axes, title in ((left, "image"), (right, "attention rollout")):
        axes.imshow(shown, cmap="gray" if gray else None)
        axes.set_title(title)
        axes.axis("off")
    right.imshow(np.asarray(rollout), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return str(path)


def save_feature_mask_png(masks, feature_names, path) -> None:
    """Draws each step's mask (examples × features) as a heat map into a PNG file.

    Args:
        masks: `(n_steps, batch, features)` array from `tabnet_feature_masks`.
        feature_names: one label per feature.
        path: the PNG file to write.
    """
    from matplotlib.figure import Figure

    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[2] != len(feature_names):
        raise ValueError(
            f"masks must be (n_steps, batch, features) with {len(feature_names)} features; got {masks.shape}."
        )
    n_steps = masks.shape[0]
    figure = Figure(figsize=(max(6.0, 0.25 * len(feature_names)), 2.5 * n_steps), layout="constrained")
    axes = figure.subplots(n_steps, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        image = ax.imshow(
            masks[i], aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        ax.set_title(f"step {i + 1} mask")
        ax.set_ylabel("example")
        ax.set_xticks(range(len(feature_names)))
        ax.set_xticklabels(feature_names if i == n_steps - 1 else [], rotation=90, fontsize=7)
        figure.colorbar(image, ax=ax)
    figure.savefig(path, dpi=100)
