"""Small PNG charts for asset metadata, embedded as data-URI images in markdown.

The Dagster 1.13 UI renders `MetadataValue.md` through a sanitiser that allows
the ``data:`` scheme for image sources (webapp `MarkdownWithPlugins`), so a
chart travels inside the event itself: nothing to serve, nothing to clean up.
Charts are drawn with matplotlib's Agg canvas on a private `Figure` (no pyplot
global state, safe in the sensor's threads) and imported lazily, so loading
the code location does not import matplotlib.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

from dagster import MetadataValue

_DPI = 80
_PALETTE = ["#4F46E5", "#0EA5E9", "#10B981", "#F59E0B", "#EF4444", "#8B5CF6", "#64748B", "#EC4899"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    return fig, fig.add_subplot(1, 1, 1)


def _to_markdown(fig, alt: str) -> MetadataValue:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def _usd(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def venue_balances_chart(venue: str, usd_by_asset: Mapping[str, float]) -> MetadataValue:
    """Horizontal bars: USD value of each asset held on one venue."""
    items = sorted(usd_by_asset.items(), key=lambda kv: kv[1])
    fig, ax = _figure(6.0, 0.9 + 0.35 * max(1, len(items)))
    labels = [asset for asset, _ in items]
    values = [value for _, value in items]
    bars = ax.barh(labels, values, color=_PALETTE[0])
    for bar, value in zip(bars, values):
        ax.annotate(_usd(value), (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_title(f"{venue}: balances in USD", fontsize=10)
    ax.margins(x=0.15)
    ax.tick_params(labelsize=8)
    return _to_markdown(fig, f"{venue} balances in USD")


def balances_by_venue_chart(usd: Mapping[str, Mapping[str, float]]) -> MetadataValue:
    """Stacked bars: one bar per venue, one colour per asset, in USD."""
    venues = list(usd)
    assets = sorted({asset for per_venue in usd.values() for asset in per_venue})
    fig, ax = _figure(6.5, 3.2)
    bottoms = [0.0] * len(venues)
    for i, asset in enumerate(assets):
        values = [usd[venue].get(asset, 0.0) for venue in venues]
        ax.bar(venues, values, bottom=bottoms, label=asset, color=_PALETTE[i % len(_PALETTE)])
        bottoms = [b + v for b, v in zip(bottoms, values)]
    for x, total in enumerate(bottoms):
        ax.annotate(_usd(total), (x, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.set_title("Balances by venue and asset (USD)", fontsize=10)
    ax.legend(fontsize=7, ncols=min(len(assets), 4) or 1, loc="upper right")
    ax.margins(y=0.15)
    ax.tick_params(labelsize=8)
    return _to_markdown(fig, "balances by venue and asset")


def grouped_bars_chart(
    title: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
) -> MetadataValue:
    """Grouped bars: for each group (x), one bar per series; used for funding and deltas."""
    fig, ax = _figure(6.5, 3.2)
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=name, color=_PALETTE[i % len(_PALETTE)])
    ax.axhline(0, color="#334155", linewidth=0.8)
    ax.set_xticks(range(len(groups)), labels=list(groups))
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncols=min(n, 5))
    ax.tick_params(labelsize=8)
    return _to_markdown(fig, title)
