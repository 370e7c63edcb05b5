"""Plots people would rather look at than read: accuracy against KL(π‖π_ref), one curve per method."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt

from qsharp_ext.io import atomic_write_bytes

Style = tuple[str, str, str]  # label, colour, marker ("" for a line without markers)

METHOD_STYLE: dict[str, Style] = {
    "qsharp": ("Q♯", "tab:blue", "o"),
    "cd": ("CD", "tab:orange", "s"),
    "optimal": ("π* (exact)", "black", ""),
}


def accuracy_kl_plot(
    rows: Sequence[dict[str, Any]], path: Path, y_key: str, title: str, styles: dict[str, Style] | None = None
) -> None:
    """Accuracy (`y_key`) against KL to π_ref: a line per guided method over η, π_ref as a star at KL = 0;
    `styles` adds the methods of an experiment (a method without a style is not drawn)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, (label, color, marker) in (METHOD_STYLE | (styles or {})).items():
        points = sorted((r["kl"], r[y_key], point_label(r)) for r in rows if r["method"] == method)
        if not points:
            continue
        kls, ys, _ = zip(*points, strict=True)
        style = "--" if method == "optimal" else "-"
        ax.plot(kls, ys, style, marker=marker or None, color=color, label=label, zorder=3 if marker else 2)
        if marker:
            offset = (4, 6) if method == "qsharp" else (4, -12)  # Q♯ labels above the points, the others below
            for kl, y, text in points:
                ax.annotate(text, (kl, y), textcoords="offset points", xytext=offset, fontsize=7, color=color)
    for r in rows:
        if r["method"] == "pi_ref":
            ax.plot([r["kl"]], [r[y_key]], "*", color="tab:green", markersize=13, label="π_ref", zorder=4)
    ax.set_xlabel("KL(π ‖ π_ref) per sequence (nats)")
    ax.set_ylabel(y_key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def point_label(row: dict[str, Any]) -> str:
    """η of a guided row; the sampling temperature of a row that has one instead (π_ref sharpened)."""
    return f"T={row['temperature']:.2g}" if "temperature" in row else f"η={row['eta']:g}"


def save_figure(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
    """Lay out, render to PNG and write atomically; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
