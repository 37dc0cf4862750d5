"""A phantom-v2 subject in phantom v1's terms: the same `PhantomCase` (CT, label map in medgen's coarse table,
findings, subject record, lesion instance ids), so that dataset building and evaluation take either version."""

from __future__ import annotations

import json

from medgen.findings import LABELS
from medgen.io.sidecar import to_json_value
from medgen.maisi_labels import to_coarse
from medgen.phantom.chest import PhantomCase
from medgen.volume import Volume


def coarse_case(v2) -> PhantomCase:
    """`PhantomCase` of a rendered `PhantomV2`: labels in medgen's coarse table with every lesion
    ``LABELS["lesion"]`` and emphysematous lung the layout's emphysema label (v2 does not record its lobe)."""
    labels = to_coarse(v2.labels.array)
    labels[v2.lesion_ids > 0] = LABELS["lesion"]
    subject = json.loads(json.dumps({"phantom_version": 2, "lesions": v2.subject["lesions"]}, default=to_json_value))
    return PhantomCase(v2.ct, Volume(labels, v2.labels.affine.copy(), dict(v2.labels.meta)), v2.findings, subject,
                       v2.lesion_ids)

