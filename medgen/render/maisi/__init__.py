"""NVIDIA MAISI behind medgen's reader and layout (see docs/maisi.md).

    from medgen.render.maisi import MaisiRenderer, check_maisi_grid, write_standin
    write_standin("/tmp/maisi-standin")          # tiny random-weight MAISI folder for CPU tests
    renderer = MaisiRenderer("/tmp/maisi-standin")

Modules: `grid` (allowed shapes/spacings), `bundle` (the folder, configs read as data), `networks` (MONAI's MAISI
classes, weights_only loading), `sampler` (ControlNet + rectified flow + tiled VAE decode), `anatomy` (candidate
masks, user segmentations, body synthesis), `placement` (findings in MAISI label space), `compose` (density,
effusion, emphysema, per-organ HU check), `renderer`, `standin`.
"""

from medgen.render.maisi.bundle import MaisiBundle
from medgen.render.maisi.grid import DEFAULT_SHAPE, DEFAULT_SPACING, MaisiGridError, check_maisi_grid
from medgen.render.maisi.renderer import MaisiRenderer


def __getattr__(name: str):
    if name == "write_standin":  # imported on use: `python -m medgen.render.maisi.standin` runs it cleanly
        from medgen.render.maisi.standin import write_standin

        return write_standin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "MaisiBundle", "MaisiGridError", "MaisiRenderer", "check_maisi_grid",
           "write_standin"]
