"""Renderers: a label map (the layout) -> a CT volume in HU on the same grid.

medgen's report reader and layout are shared; what draws the CT is a renderer with one job:

    class Renderer(Protocol):
        name: str
        def check_grid(self, shape, spacing) -> None: ...          # refuse a grid before any weights load
        def render(self, layout_labels: Volume, *, density: Volume | None, seed: int, **options) -> Volume: ...

``embedded`` is the default: the layout-grounded latent diffusion pipeline shipped with medgen
(`medgen.pipelines.ReportToVolumePipeline`), which renders medgen's coarse label table. ``maisi``
(`medgen.render.maisi.MaisiRenderer`) renders NVIDIA MAISI's label space with its downloaded weights on a GPU.
This package sits below `medgen.pipelines` and `medgen.edit`: it imports layout, phantom, io, findings and
volume, never pipelines or edit (`medgen.pipelines.maisi` is the report -> CT glue).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from medgen.volume import Volume

RENDERERS = ("embedded", "maisi")


@runtime_checkable
class Renderer(Protocol):
    """Draws CT (HU, float32) on the grid of a layout label map."""

    name: str

    def check_grid(self, shape, spacing) -> None:
        """Raise a `medgen.errors.MedgenError` for a grid this renderer does not draw (before any weights)."""

    def render(self, layout_labels: Volume, *, density: Volume | None = None, seed: int = 0, **options) -> Volume:
        """HU volume on `layout_labels`' grid; `density` holds the target lesion density d inside lesions."""


def __getattr__(name: str):
    if name == "MaisiRenderer":
        from medgen.render.maisi import MaisiRenderer

        return MaisiRenderer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RENDERERS", "MaisiRenderer", "Renderer"]
