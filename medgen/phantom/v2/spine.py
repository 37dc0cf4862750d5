"""Vertebral column of phantom v2: C7 to L2, each vertebra labelled with its own MAISI id.

A vertebra is a body (elliptic cylinder with rounded rims, its width, depth and height growing down the
column) and a posterior arch: pedicles, laminae around the spinal canal, transverse processes and a
spinous process that slopes steeply down in the thoracic spine and runs straight back in the lumbar
spine. Discs lie between the bodies, the spinal cord in the canal. The column follows the thoracic
kyphosis of `Subject.y_vb`. Bone samples carry their cortical fraction (`geom.shell_fraction`).
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import capsule_sdf, shell_fraction
from medgen.phantom.v2.labels import BODY, label_id, vertebra_id
from medgen.phantom.v2.subject import Subject

BODY_CORTEX_MM = 1.2
ARCH_CORTEX_MM = 1.8


def canal(S: Subject, level: str):
    """(y centre, lateral half width, AP half depth) of the spinal canal at a level."""
    z, y, h, a, b, _ = S.levels[level]
    lumbar = level.startswith("L")
    rx, ry = (10.5, 8.5) if lumbar else (8.0, 7.5)
    s = S.p["spine_scale"]
    return y - b - ry * s - 1.5, rx * s, ry * s


def transverse_tip(S: Subject, level: str, side: int) -> np.ndarray:
    """World point of a thoracic transverse process tip (where its rib's tubercle articulates)."""
    z, y, h, a, b, _ = S.levels[level]
    yc, rx, ry = canal(S, level)
    s = S.p["spine_scale"]
    return np.array([side * (rx + 24 * s), yc - 8 * s, z + 3 * s])


def _arch_parts(S: Subject, level: str):
    """Capsules (a, b, r0, r1) of the posterior arch of one vertebra."""
    z, y, h, a, b, _ = S.levels[level]
    yc, rx, ry = canal(S, level)
    s = S.p["spine_scale"]
    lumbar = level.startswith("L")
    thoracic = level.startswith("T")
    parts = []
    y_lam = yc - ry - 2.5 * s
    for side in (1, -1):
        xp = side * (rx + 3.0 * s)
        parts.append(((xp, y - b + 2, z + 0.1 * h), (xp, yc, z + 0.1 * h), 4.0 * s, 3.6 * s))  # pedicle
        parts.append(((xp, yc, z + 0.1 * h), (0.0, y_lam, z - 0.05 * h), 3.4 * s, 3.2 * s))  # lamina
        tip = transverse_tip(S, level, side) if thoracic else np.array(
            [side * (rx + (32 if lumbar else 18) * s), yc + (4 if lumbar else -2) * s, z])
        parts.append(((xp, yc - 1.0, z + 0.1 * h), tuple(tip), 4.2 * s, (3.0 if lumbar else 4.8) * s))
    if lumbar:  # hatchet-shaped, straight back
        for dz in (-0.22 * h, 0.1 * h):
            parts.append(((0.0, y_lam, z + dz), (0.0, y_lam - 30 * s, z + dz - 3), 4.5 * s, 4.5 * s))
    else:  # long, sloping caudally (steepest mid-thoracic)
        mid = 1.0 - abs(int(level[1:]) - 7) / 7 if thoracic else 0.2
        drop = (8 + 16 * mid) * s
        parts.append(((0.0, y_lam, z), (0.0, y_lam - (27 - 4 * mid) * s, z - drop), 4.8 * s, 3.8 * s))
    return parts


def vertebra_sdf(S: Subject, level: str, x, y, z):
    """(body sdf, arch sdf) of one vertebra (mm, < 0 inside)."""
    zc, yv, h, a, b, _ = S.levels[level]
    r = np.sqrt((x / a) ** 2 + ((y - yv) / b) ** 2)
    waist = 1.0 - 0.06 * np.cos(np.pi * np.clip((z - zc) / h, -0.5, 0.5))  # concave sides
    radial = (r - waist) * min(a, b)
    vertical = np.abs(z - zc) - h / 2
    rim = 1.5
    body = np.where((radial > -rim) & (vertical > -rim),
                    np.sqrt(np.maximum(radial + rim, 0) ** 2 + np.maximum(vertical + rim, 0) ** 2) - rim,
                    np.maximum(radial, vertical))
    arch = np.minimum.reduce([capsule_sdf(x, y, z, *part) for part in _arch_parts(S, level)])
    return body, arch


def paint_spine(S: Subject, cv: Canvas):
    """Paint discs, vertebrae (bodies and arches), canal CSF and cord."""
    step = cv.step
    s = S.p["spine_scale"]
    cord, csf = label_id("spinal cord"), BODY
    for level, (zc, yv, h, a, b, disc) in S.levels.items():
        reach = 60 * s
        box = cv.box((-reach, yv - b - 75 * s, zc - h / 2 - disc - 35 * s), (reach, yv + b + 4, zc + h / 2 + disc + 8))
        if box is None:
            continue
        x, y, z = cv.coords(box)
        # disc below the body, canal (CSF + cord) across the level and its disc
        zd = zc - h / 2 - disc / 2
        ell = (x / a) ** 2 + ((y - yv) / b) ** 2 < 1
        cv.paint(box, ell & (np.abs(z - zd) <= disc / 2 + 0.5), BODY, "disc")
        yc, rx, ry = canal(S, level)
        inz = (z <= zc + h / 2 + 0.5) & (z >= zc - h / 2 - disc - 0.5)
        cv.paint(box, ((x / rx) ** 2 + ((y - yc) / ry) ** 2 < 1) & inz, csf, "csf")
        cv.paint(box, ((x / (0.55 * rx)) ** 2 + ((y - yc) / (0.6 * ry)) ** 2 < 1) & inz, cord, "cord")
        body, arch = vertebra_sdf(S, level, x, y, z)
        vid = vertebra_id(level)
        m = body <= 0
        cv.paint(box, m, vid, "trabecular", mix=shell_fraction(body, BODY_CORTEX_MM, step))
        m2 = (arch <= 0) & ~m
        cv.paint(box, m2, vid, "trabecular", mix=shell_fraction(arch, ARCH_CORTEX_MM, step))
