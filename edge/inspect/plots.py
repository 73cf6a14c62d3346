"""The pictures: attention heatmaps with token labels, positional encodings.

In: arrays from attention.py / positions.py and token labels. Out: PNG files, drawn with
matplotlib (the `viz` extra) without a display. Labels fall back to a CJK-capable font
when one is installed (DejaVu, matplotlib's default, has no CJK glyphs), e.g. Debian's
fonts-noto-cjk.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge.inspect.attention import View
from edge.inspect.positions import Positions

CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans SC", "Noto Sans JP", "Source Han Sans",
                "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN")
CJK_FILES = ("notosanscjk", "sourcehansans", "wqy", "droidsansfallback", "uming")


def cjk_font() -> str | None:
    """The first CJK-capable family matplotlib knows, registering system fonts it has not
    cached yet (a font installed after matplotlib built its cache)."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FAMILIES if name in names), None)

    if found := known():
        return found
    for path in font_manager.findSystemFonts():
        if any(key in Path(path).name.lower().replace("-", "").replace("_", "") for key in CJK_FILES):
            font_manager.fontManager.addfont(path)
    return known()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cjk = cjk_font()
    plt.rcParams["font.family"] = ["DejaVu Sans", cjk] if cjk else ["DejaVu Sans"]  # per-glyph fallback
    return plt


def attention_png(view: View, labels: list[str], path: Path) -> Path:
    """One heatmap (keys across, queries down), or a grid of them, one per layer."""
    plt = _pyplot()
    seq, count = len(labels), len(view.panels)
    cols = min(count, 6)
    rows = math.ceil(count / cols)
    side = min(max(4.0, 0.26 * seq + 2.0), 14.0) if count == 1 else 2.6
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.axis("off")
            continue
        caption, matrix = view.panels[index]
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
        ax.set_title(caption, fontsize=9)
        _label_axes(ax, labels, show_x=index // cols == rows - 1 or count == 1, show_y=index % cols == 0,
                    small=count > 1)
    if count == 1:
        fig.colorbar(image, ax=axes[0, 0], fraction=0.046, pad=0.04, label="attention weight")
    fig.suptitle(f"attention: {view.title} (rows attend to columns)", fontsize=11)
    return _save(plt, fig, path)


def _label_axes(ax, labels: list[str], show_x: bool, show_y: bool, small: bool) -> None:
    size = 5 if small else 8
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels if show_x else [], rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels if show_y else [], fontsize=size)


def positions_png(found: Positions, path: Path) -> Path:
    """Left: the first n positions by dimension; right: similarity against distance."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
    if found.kind == "rotary":
        image = left.imshow(np.mod(found.table, 2 * np.pi), aspect="auto", cmap="twilight", vmin=0, vmax=2 * np.pi)
        left.set(xlabel="frequency index i (fast -> slow)", title=f"rotary angle p * theta_i mod 2pi (base {found.base:g})")
        right.set_ylabel("mean cos(d * theta_i)")
    else:
        image = left.imshow(found.table, aspect="auto", cmap="RdBu_r")
        left.set(xlabel="dimension", title=f"{found.kind} positional encoding")
        right.set_ylabel("mean cosine of positions p and p + d")
    left.set_ylabel("position")
    fig.colorbar(image, ax=left)
    right.plot(np.arange(len(found.similarity)), found.similarity, marker=".")
    right.set(xlabel="distance d", title="similarity by distance")
    right.grid(alpha=0.3)
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
