"""medgen.preview: PNG previews of volumes (orthogonal slices, README grids)."""

from medgen.preview.render import render_grid, render_orthogonal

__all__ = ["render_orthogonal", "render_grid"]
