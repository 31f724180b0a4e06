"""The report's reliability diagram: the held-out test split's accuracy against confidence,
per confidence bin, before and after temperature scaling, with the diagonal of a perfectly
calibrated model."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from search.results.report_data import ReportData, Unavailable

CURVES = (("before", "before calibration", "#ff7f0e"), ("after", "after calibration", "#1f77b4"))


def _points(bins: dict[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """The non-empty bins' mean confidence, accuracy and image count."""
    rows = [
        (c, a, n)
        for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
        if n
    ]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def reliability_figure(data: ReportData) -> go.Figure:
    """Accuracy against mean confidence per bin on the test split, before and after."""
    calibration = (data.train_best or {}).get("calibration") or {}
    curves = calibration.get("reliability") or {}
    if not curves.get("before"):
        raise Unavailable("the train-best result holds no reliability data (run train-best again)")
    test = calibration.get("test") or {}
    fig = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"color": "#888", "dash": "dash"},
            hoverinfo="skip",
        )
    )
    for key, label, colour in CURVES:
        bins = curves.get(key)
        if not bins:
            continue
        x, y, n = _points(bins)
        ece = test.get(f"ece_{key}")
        name = f"{label} (ECE {ece:.3f})" if isinstance(ece, int | float) else label
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                customdata=n,
                mode="lines+markers",
                name=name,
                line={"color": colour},
                marker={"size": [6 + min(14, c**0.5 * 2) for c in n], "color": colour},
                hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>"
                "%{customdata} images<extra></extra>",
            )
        )
    t = calibration.get("temperature")
    fig.update_layout(
        xaxis_title="mean confidence in the bin"
        + (f" (temperature {t:.3f})" if isinstance(t, int | float) else ""),
        yaxis_title="accuracy in the bin",
    )
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.02])
    return fig
