"""One entry point for both phantoms: `make_case(findings, version=1 | 2, ...)` -> `PhantomCase`.

A model records the phantom version it was trained on (``phantom_version`` in its pipeline config), and
evaluation draws its reference subjects from the same phantom.
"""

from __future__ import annotations

from medgen.findings import Findings
from medgen.phantom import chest
from medgen.phantom.chest import PhantomCase

VERSIONS = (1, 2)


def check_version(version) -> int:
    if version not in VERSIONS:
        raise ValueError(f"phantom version must be one of {VERSIONS}, got {version!r}")
    return int(version)


def make_case(findings: Findings | None = None, *, shape=64, spacing=5.0, seed: int = 0, version: int = 1) -> PhantomCase:
    """A phantom subject of `version` as a `PhantomCase` (v2: labels in medgen's coarse table, the full v2
    render in ``case.v2``)."""
    if check_version(version) == 1:
        return chest.make_phantom(findings, shape=shape, spacing=spacing, seed=seed)
    from medgen.phantom.v2 import render_phantom_v2
    from medgen.phantom.v2.coarse import coarse_case

    v2 = render_phantom_v2(findings, shape=shape, spacing=spacing, seed=seed, tissue_map=False)
    case = coarse_case(v2)
    case.v2 = v2
    return case
