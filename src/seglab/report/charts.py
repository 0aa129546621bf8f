"""Charts as inline SVG, drawn here rather than by a plotting library in the browser: the
report then renders without scripts, the same in every browser, and needs no dependency.

Each chart is a plain `<svg>` with axes, a few ticks and its series as `<polyline>`, `<rect>`
or `<circle>` elements (which the browser test counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from seglab.report.html import escape

PALETTE = ("#1864ab", "#e8590c", "#2b8a3e", "#862e9c", "#c92a2a", "#5c940d")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 54, 14, 22, 36


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]  # None: no value (the line is broken there)


def line_chart(
    series: Sequence[Series], x_label: str, y_label: str, width: int = 540, height: int = 250,
    log_y: bool = False, title: str = "",
) -> str:  # fmt: skip
    """Lines over a shared x axis; `log_y` for learning rates and losses spanning decades."""
    points = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if _ok(y, log_y)]
    if not points:
        return f'<p class="muted">{escape(title or y_label)}: nothing recorded</p>'
    scale = _Scale(points, width, height, log_y)
    parts = [scale.axes(x_label, y_label)]
    legend_x = MARGIN_LEFT + 8
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for x, y in zip(s.xs, s.ys, strict=True):
            if not _ok(y, log_y):
                segments.append([])
                continue
            segments[-1].append(f"{scale.x(x):.1f},{scale.y(y):.1f}")
        for segment in segments:
            if len(segment) == 1:  # a single value: a dot, so that it is seen
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
            elif segment:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                    f'points="{" ".join(segment)}"/>'
                )
        parts.append(
            f'<rect x="{legend_x}" y="6" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="15">{escape(s.label)}</text>'
        )
        legend_x += 24 + 7 * len(s.label)
    return _svg(width, height, parts, title or y_label)


def bar_chart(
    rows: Sequence[tuple[str, float | None, str]], value_label: str, width: int = 420,
    title: str = "",
) -> str:  # fmt: skip
    """Horizontal bars in the order given (label, value in [0, 1], CSS colour); n/a for None."""
    row_h, label_w = 16, min(170, 12 + 7 * max((len(r[0]) for r in rows), default=4))
    height = MARGIN_TOP + row_h * len(rows) + 30
    plot_w = width - label_w - 56
    parts = []
    for i, (label, value, color) in enumerate(rows):
        y = MARGIN_TOP + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(label[:24])}</text>'
        )
        if value is None or math.isnan(value):
            parts.append(f'<text x="{label_w + 4}" y="{y + 12}" fill="#868e96">n/a</text>')
            continue
        length = max(0.0, min(1.0, value)) * plot_w
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{length:.1f}" height="{row_h - 4}" '
            f'fill="{color}" stroke="#495057" stroke-width="0.4"><title>{escape(label)}: '
            f"{value:.4f}</title></rect>"
            f'<text x="{label_w + length + 4:.1f}" y="{y + 12}">{value:.3f}</text>'
        )
    axis_y = MARGIN_TOP + row_h * len(rows) + 4
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + tick * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{MARGIN_TOP - 2}" x2="{x:.1f}" y2="{axis_y}" '
            'stroke="#dee2e6" stroke-width="0.8"/>'
            f'<text x="{x:.1f}" y="{axis_y + 12}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{label_w + plot_w / 2:.1f}" y="{axis_y + 25}" text-anchor="middle">'
        f"{escape(value_label)}</text>"
    )
    return _svg(width, height, parts, title or value_label)


def scatter(
    points: Sequence[tuple[float, float, str]], x_label: str, y_label: str,
    x_categories: Sequence[str] | None = None, width: int = 360, height: int = 240,
) -> str:  # fmt: skip
    """(x, y, tooltip) dots; with `x_categories`, x is the category's position (0, 1, ...)."""
    if not points:
        return f'<p class="muted">{escape(x_label)}: no finished job</p>'
    xs = [p[0] for p in points]
    if x_categories:
        xs = [-0.5, len(x_categories) - 0.5]
    scale = _Scale([(x, p[1]) for x in xs for p in points], width, height, False)
    parts = [scale.axes(x_label, y_label, x_categories)]
    for x, y, tip in points:
        parts.append(
            f'<circle cx="{scale.x(x):.1f}" cy="{scale.y(y):.1f}" r="4.5" fill="{PALETTE[0]}" '
            f'fill-opacity="0.75"><title>{escape(tip)}</title></circle>'
        )
    return _svg(width, height, parts, f"{y_label} against {x_label}")


class _Scale:
    """Data -> SVG coordinates inside the margins, with round ticks on both axes."""

    def __init__(self, points: Sequence[tuple[float, float]], width: int, height: int, log_y):
        self.width, self.height, self.log_y = width, height, log_y
        xs = [float(p[0]) for p in points]
        ys = [math.log10(p[1]) if log_y else float(p[1]) for p in points]
        self.x0, self.x1 = _padded(min(xs), max(xs), 0.0)
        self.y0, self.y1 = _padded(min(ys), max(ys), 0.05)

    def x(self, value: float) -> float:
        span = self.width - MARGIN_LEFT - MARGIN_RIGHT
        return MARGIN_LEFT + (float(value) - self.x0) / (self.x1 - self.x0) * span

    def y(self, value: float) -> float:
        value = math.log10(value) if self.log_y else float(value)
        span = self.height - MARGIN_TOP - MARGIN_BOTTOM
        return self.height - MARGIN_BOTTOM - (value - self.y0) / (self.y1 - self.y0) * span

    def axes(self, x_label: str, y_label: str, x_categories: Sequence[str] | None = None) -> str:
        bottom, right = self.height - MARGIN_BOTTOM, self.width - MARGIN_RIGHT
        parts = [
            f'<line x1="{MARGIN_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#495057"/>',
            f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{bottom}" '
            'stroke="#495057"/>',
        ]
        for value in _ticks(self.y0, self.y1):
            y = self.y(10**value if self.log_y else value)
            text = f"{10**value:.0e}" if self.log_y else f"{value:.3g}"
            parts.append(
                f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="#edf0f2"/><text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" '
                f'text-anchor="end">{text}</text>'
            )
        x_ticks = (
            list(enumerate(x_categories))
            if x_categories
            else [(v, f"{v:.4g}") for v in _ticks(self.x0, self.x1)]
        )
        for value, text in x_ticks:
            x = self.x(value)
            parts.append(
                f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">'
                f"{escape(str(text)[:18])}</text>"
            )
        parts.append(
            f'<text x="{(MARGIN_LEFT + right) / 2:.1f}" y="{self.height - 6}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
            f'<text transform="translate(12,{(MARGIN_TOP + bottom) / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
        return "".join(parts)


def _svg(width: int, height: int, parts: Sequence[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def _ok(value: float | None, log: bool) -> bool:
    return value is not None and math.isfinite(value) and (value > 0 or not log)


def _padded(low: float, high: float, share: float) -> tuple[float, float]:
    if high - low < 1e-12:
        return low - 0.5, high + 0.5
    pad = (high - low) * share
    return low - pad, high + pad


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) between low and high."""
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step) + 1)]
