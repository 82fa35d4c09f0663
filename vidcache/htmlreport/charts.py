"""Charts as HTML fragments drawn by plotly.js, whose library is inlined once per report (`plotly_js`).

Every figure carries already-reduced data (binned histograms, per-epoch curves, per-class values),
so a chart's size does not grow with the corpus.
"""

from __future__ import annotations

import itertools

from .collect import Histogram

_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["toImage"]}
_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "template": "plotly_white", "height": 320}
_ids = itertools.count()


def plotly_js() -> str:
    """The plotly.js library itself (about 4.8 MB), to inline in one <script>."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _div(figure, *, name: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config=_CONFIG, div_id=f"chart-{name}-{next(_ids)}")


def histogram(hist: Histogram, *, name: str) -> str:
    import plotly.graph_objects as go

    centres = [(a + b) / 2 for a, b in itertools.pairwise(hist.edges)]
    widths = [b - a for a, b in itertools.pairwise(hist.edges)]
    figure = go.Figure(go.Bar(x=centres, y=hist.counts, width=widths, name=hist.title))
    figure.update_layout(
        **_LAYOUT, title=f"{hist.title} ({hist.n} videos)", xaxis_title=hist.unit, yaxis_title="videos", bargap=0.02
    )
    return _div(figure, name=name)


def status_bars(status: dict[str, dict[str, int]], *, name: str) -> str:
    import plotly.graph_objects as go

    views = list(status)
    colours = {"done": "#2a9d8f", "absent": "#e9c46a", "failed": "#e76f51"}
    bars = [
        go.Bar(x=views, y=[status[v].get(s, 0) for v in views], name=s, marker_color=colours.get(s))
        for s in ("done", "absent", "failed")
    ]
    figure = go.Figure(bars)
    figure.update_layout(**_LAYOUT, barmode="stack", title="videos by status per view", yaxis_title="videos")
    return _div(figure, name=name)


def curves(history: list[dict], *, title: str, name: str) -> str:
    """Train loss (left axis) and every val_* metric (right axis) per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(specs=[[{"secondary_y": True}]])
    epochs = [h.get("epoch") for h in history]
    loss = go.Scatter(x=epochs, y=[h.get("train_loss") for h in history], name="train loss")
    figure.add_trace(loss, secondary_y=False)
    keys = [k for k in (history[0] if history else {}) if k.startswith("val_")]
    for key in keys:
        values = [h.get(key) if isinstance(h.get(key), float) else None for h in history]
        figure.add_trace(go.Scatter(x=epochs, y=values, name=key, line={"dash": "dot"}), secondary_y=key != "val_loss")
    figure.update_layout(**_LAYOUT, title=title, xaxis_title="epoch")
    figure.update_yaxes(title_text="loss", secondary_y=False)
    figure.update_yaxes(title_text="val metric", secondary_y=True)
    return _div(figure, name=name)


def metric_by_run(series: dict[str, list[tuple[float, float]]], *, metric: str, name: str) -> str:
    """One line per run: `metric` per epoch."""
    import plotly.graph_objects as go

    figure = go.Figure(
        [go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=run) for run, points in series.items()]
    )
    figure.update_layout(**_LAYOUT, title=f"{metric} per epoch, all runs", xaxis_title="epoch", yaxis_title=metric)
    return _div(figure, name=name)


def class_bars(values: dict[str, dict[str, float | None]], *, title: str, name: str) -> str:
    """Grouped horizontal bars: per class (y), one bar per series (a run), e.g. per-class AP."""
    import plotly.graph_objects as go

    classes = list(dict.fromkeys(c for series in values.values() for c in series))
    figure = go.Figure(
        [
            go.Bar(y=classes, x=[series.get(c) for c in classes], name=label, orientation="h")
            for label, series in values.items()
        ]
    )
    layout = {**_LAYOUT, "height": max(260, 60 + 18 * len(classes) * max(1, len(values)))}
    figure.update_layout(**layout, title=title, barmode="group", xaxis={"range": [0, 1], "title": "AP (val)"})
    figure.update_yaxes(autorange="reversed")
    return _div(figure, name=name)
