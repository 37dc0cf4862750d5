"""The painting surface of phantom v2: label and tissue samples on a (supersampled) grid.

Structures are painted in anatomical order, each overwriting what it occupies: body wall, cavity fat,
abdominal organs, lungs, mediastinum, skeleton, findings. A sample holds a MAISI label id, a tissue class
(`medgen.phantom.v2.labels.TISSUES`) and, for bone, its cortical fraction (`mix`).
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.geom import Grid, segment_points
from medgen.phantom.v2.labels import TISSUES


class Canvas:
    """Label, tissue and cortical-fraction samples on `grid` (sample spacing `step` mm)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.label = np.zeros(grid.shape, np.uint8)
        self.tissue = np.zeros(grid.shape, np.uint8)
        self.mix = np.zeros(grid.shape, np.float32)
        self.step = grid.voxel_mm
        self.cache: dict = {}

    def coords(self, box=None):
        return self.grid.coords(box)

    def box(self, lo, hi):
        return self.grid.box(lo, hi)

    def full(self):
        return tuple(slice(0, n) for n in self.grid.shape)

    def paint(self, box, mask, label: int | None, tissue: str | None, only=None, mix=None):
        """Paint `mask` (broadcastable to the `box` view) with `label`/`tissue` (None keeps that channel).

        Args:
            only: restrict to samples whose current label is in this collection.
            mix: cortical fraction (bone samples), same shape as the masked selection or broadcastable.
        """
        if box is None:
            return
        lab, tis = self.label[box], self.tissue[box]
        mask = np.broadcast_to(mask, lab.shape)
        if only is not None:
            mask = mask & np.isin(lab, np.asarray(list(only), np.uint8))
        if label is not None:
            lab[mask] = label
        if tissue is not None:
            tis[mask] = TISSUES[tissue]
            mx = self.mix[box]
            mx[mask] = 0.0 if mix is None else np.broadcast_to(mix, lab.shape)[mask]

    def paint_flat(self, flat, label: int | None, tissue: str | None, only=None):
        """Paint flat sample indices (repeats allowed)."""
        if only is not None:
            flat = flat[np.isin(self.label.reshape(-1)[flat], np.asarray(list(only), np.uint8))]
        if label is not None:
            self.label.reshape(-1)[flat] = label
        if tissue is not None:
            self.tissue.reshape(-1)[flat] = TISSUES[tissue]
            self.mix.reshape(-1)[flat] = 0.0

    def tubes(self, segments, label: int | None, tissue: str | None, grow: float = 0.0, only=None):
        """Paint the samples within (radius + `grow`) of tube segments (N, 8)."""
        self.tube_layers(segments, [(grow, label, tissue, only)])

    def tube_layers(self, segments, layers):
        """Paint concentric layers of tube segments (N, 8) in one pass over their samples.

        Args:
            layers: (grow mm, label, tissue, only) tuples, painted in the given order (outermost first).
        """
        segs = np.asarray(segments, float).reshape(-1, 8)
        if not len(segs):
            return
        pad = max(max(layer[0] for layer in layers), 0.0)
        for sid, flat, t, perp in segment_points(self.grid, segs, pad=pad):
            s = segs[sid]
            dist = np.sqrt(np.einsum("ij,ij->i", perp, perp)) - (s[:, 6] + (s[:, 7] - s[:, 6]) * t)
            for grow, label, tissue, only in layers:
                self.paint_flat(flat[dist <= grow], label, tissue, only)
