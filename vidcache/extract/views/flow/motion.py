"""The weights-free `motion` view: per grid cell, a histogram of flow orientation × magnitude.

Layout of one descriptor (see `descriptor_layout`): cells in row-major order (cell row, then cell
column; H and W split like `numpy.array_split`), and per cell 1 + orientations × magnitude bins:
the static bin first (magnitude below the first edge), then orientation-major, magnitude-minor.
Each cell's histogram is divided by the cell's pixel count, so it sums to 1.
"""

from __future__ import annotations

import math

import numpy as np


def descriptor_layout(grid: int, orientations: int, n_magnitude_bins: int) -> dict:
    """The order of the descriptor's entries, for docs and the view's identity."""
    per_cell = 1 + orientations * n_magnitude_bins
    bins = ["static"] + [f"o{o}m{m}" for o in range(orientations) for m in range(n_magnitude_bins)]
    return {
        "dim": grid * grid * per_cell,
        "shape": [grid, grid, per_cell],
        "order": "cell_row, cell_col, bin (row-major)",
        "cells": "H and W each split into grid parts like numpy.array_split (first parts one pixel larger)",
        "bins": bins,
        "static": "magnitude < edges[0]",
        "orientation_centres_deg": [360.0 * o / orientations for o in range(orientations)],
        "orientation_convention": "atan2(dy, dx) in image coordinates: 0 = rightwards, 90 = downwards; "
        "bins centred on the listed angles",
        "magnitude_bins": "m-th bin is [edges[m], edges[m+1]), last one [edges[-1], inf)",
        "normalisation": "each cell's histogram sums to 1",
    }


def _cell_index(size: int, grid: int) -> np.ndarray:
    """Which of `grid` near-equal parts (numpy.array_split boundaries) each of `size` positions is in."""
    if grid > size:
        raise ValueError(f"cannot split {size} pixels into {grid} grid cells")
    parts = [len(p) for p in np.array_split(np.arange(size), grid)]
    return np.repeat(np.arange(grid), parts)


def motion_descriptor(
    flow: np.ndarray, *, grid: int, orientations: int, magnitude_edges_px: tuple[float, ...]
) -> np.ndarray:
    """flow [N, 2, H, W] (dx, dy) → [N, grid*grid*(1 + orientations*len(edges))] float32."""
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be [N, 2, H, W], got {flow.shape}")
    edges = np.asarray(magnitude_edges_px, dtype=np.float64)
    if edges.ndim != 1 or len(edges) == 0 or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise ValueError(f"magnitude edges must be positive and increasing, got {magnitude_edges_px}")
    n, _, h, w = flow.shape
    n_mag = len(edges)
    per_cell = 1 + orientations * n_mag
    cells = grid * grid

    # float64 so the bin a pixel lands in does not depend on float32 rounding of hypot/atan2.
    dx = flow[:, 0].astype(np.float64)
    dy = flow[:, 1].astype(np.float64)
    magnitude = np.hypot(dx, dy)
    angle = np.mod(np.arctan2(dy, dx), 2 * math.pi)
    width = 2 * math.pi / orientations
    # Bins centred on 0, 360/orientations, ...: exact rightward motion is bin 0, not on a bin edge.
    orientation = np.floor((angle + width / 2) / width).astype(np.int64) % orientations
    magnitude_bin = np.searchsorted(edges, magnitude, side="right") - 1  # -1 = static
    bin_index = np.where(magnitude_bin < 0, 0, 1 + orientation * n_mag + magnitude_bin)

    cell = _cell_index(h, grid)[:, None] * grid + _cell_index(w, grid)[None, :]  # [H, W]
    flat = (np.arange(n)[:, None, None] * cells + cell[None]) * per_cell + bin_index
    counts = np.bincount(flat.ravel(), minlength=n * cells * per_cell).reshape(n, cells, per_cell)
    pixels = np.bincount(cell.ravel(), minlength=cells)  # [cells]
    return (counts / pixels[None, :, None]).reshape(n, cells * per_cell).astype(np.float32)
