"""What an output shape means: the model's field of view kept, spacing = FOV / shape.

A model generates at its *native grid* (the grid it was trained on: ``config["shape"]`` voxels at
``config["spacing"]`` mm, so its field of view is their product). A request names at most two of shape,
spacing and field of view; the third follows. The output grid must be the native grid times 2**k (k = 0..3,
the same on every axis): the resolution cascade (`medgen.refine.cascade`) doubles the resolution per stage
over the same field of view. Any other request — a shape below the native grid, a field of view other than
the one the model saw, a spacing that does not divide it — is refused with one sentence, before any work.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

MAX_STAGES = 3  # x2 per stage: 64^3 -> 128^3 -> 256^3 -> 512^3
FOV_TOLERANCE = 1e-3  # relative


@dataclass(frozen=True)
class GridPlan:
    """The grids of one generation: where the model renders and what the cascade delivers."""

    native_shape: tuple[int, int, int]
    native_spacing: tuple[float, float, float]
    stages: int  # x2 refinement stages after the native render (0 = native output)

    @property
    def factor(self) -> int:
        return 2 ** self.stages

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s * self.factor for s in self.native_shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(s / self.factor for s in self.native_spacing)

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.native_shape, self.native_spacing, strict=True))

    def record(self, stage_names: list[str]) -> dict:
        """The sidecar's account of the grids (native grid, stages run, final spacing)."""
        return {"native_shape": list(self.native_shape), "native_spacing": list(self.native_spacing),
                "fov_mm": [round(f, 3) for f in self.fov_mm], "stages": stage_names}


def _three(value, name: str, *, integer: bool) -> tuple:
    values = (value,) * 3 if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    kind = "positive integers" if integer else "positive numbers (mm)"
    ok = len(values) == 3 and all(
        not isinstance(v, bool) and isinstance(v, numbers.Integral if integer else numbers.Real)
        and math.isfinite(float(v)) and v > 0 for v in values)
    if not ok:
        raise ValueError(f"`{name}` must be one or three {kind}, got {value!r}")
    return tuple(int(v) for v in values) if integer else tuple(float(v) for v in values)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= FOV_TOLERANCE * max(abs(a), abs(b))


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def plan_grid(native_shape, native_spacing, *, shape=None, spacing=None, fov=None,
              max_stages: int = MAX_STAGES) -> GridPlan:
    """The output grid for a request of at most two of `shape` (voxels), `spacing` (mm), `fov` (mm).

    Raises:
        ValueError: one sentence naming what the model cannot honour.
    """
    native_shape = _three(native_shape, "native shape", integer=True)
    native_spacing = _three(native_spacing, "native spacing", integer=False)
    model_fov = tuple(n * s for n, s in zip(native_shape, native_spacing, strict=True))
    given = [name for name, v in (("shape", shape), ("spacing", spacing), ("fov", fov)) if v is not None]
    if len(given) == 3:
        raise ValueError("give at most two of shape, spacing and fov: the third follows from the other two")
    if fov is not None:
        fov = _three(fov, "fov", integer=False)
        if not all(_close(f, m) for f, m in zip(fov, model_fov, strict=True)):
            raise ValueError(f"this model renders a {_fmt(model_fov)} mm field of view; a {_fmt(fov)} mm one was "
                             "never trained (it would be a zoomed or tiled chest, not a larger or smaller one)")
    if shape is not None:
        shape = _three(shape, "shape", integer=True)
        implied = tuple(m / s for m, s in zip(model_fov, shape, strict=True))
        if spacing is not None:
            spacing = _three(spacing, "spacing", integer=False)
            if not all(_close(a, b) for a, b in zip(spacing, implied, strict=True)):
                raise ValueError(f"shape {_fmt(shape)} at spacing {_fmt(spacing)} mm covers "
                                 f"{_fmt(n * s for n, s in zip(shape, spacing, strict=True))} mm, but this model "
                                 f"renders a {_fmt(model_fov)} mm field of view")
    elif spacing is not None:
        spacing = _three(spacing, "spacing", integer=False)
        counts = tuple(m / s for m, s in zip(model_fov, spacing, strict=True))
        if not all(_close(c, round(c)) for c in counts):
            raise ValueError(f"spacing {_fmt(spacing)} mm does not divide this model's {_fmt(model_fov)} mm field "
                             "of view into whole voxels")
        shape = tuple(int(round(c)) for c in counts)
    else:
        shape = native_shape
    return GridPlan(native_shape, native_spacing, _stages_for(shape, native_shape, native_spacing, max_stages))


def _stages_for(shape, native_shape, native_spacing, max_stages: int) -> int:
    allowed = ", ".join(_fmt(n * 2 ** k for n in native_shape) for k in range(max_stages + 1))
    ratios = [s / n for s, n in zip(shape, native_shape, strict=True)]
    hint = (f"this model renders {_fmt(native_shape)} voxels at {_fmt(native_spacing)} mm and refines x2 per stage "
            f"over the same field of view, so the shape must be one of: {allowed}")
    if any(r < 1 for r in ratios):
        raise ValueError(f"shape {_fmt(shape)} is below the model's native grid; {hint}")
    if len(set(ratios)) != 1:
        raise ValueError(f"shape {_fmt(shape)} would make anisotropic voxels the model never saw; {hint}")
    stages = math.log2(ratios[0])
    if stages != int(stages) or stages > max_stages:
        raise ValueError(f"shape {_fmt(shape)} is not reachable; {hint}")
    return int(stages)
