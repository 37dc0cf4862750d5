"""The reader's tag vocabulary and the token targets built from the writer's span marks.

Each token gets a multi-hot vector over `LABELS` (a token of "GGN" is both a lesion mention and
ground-glass). Label names follow `medgen.reports.spans`; 'norm' marks a statement that the study is normal.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import (
    EFFUSION_GRADES,
    EMPHYSEMA_DISTRIBUTIONS,
    EMPHYSEMA_GRADES,
    LESION_TYPES,
    LOBES,
    MARGINS,
    SIDES,
)
from medgen.reports.spans import Span

ANCHORS = ("les", "eff", "emph")
ASSERTIONS = ("", "-", "?", "^")  # affirmed, negated/resolved, hedged, restated (lesions only)
VALUES = {"loc": LOBES, "type": LESION_TYPES, "margin": MARGINS, "eside": SIDES, "egrade": EFFUSION_GRADES,
          "xgrade": EMPHYSEMA_GRADES, "xdist": EMPHYSEMA_DISTRIBUTIONS}
LABELS: tuple[str, ...] = (
    *(a + s for a in ANCHORS for s in ASSERTIONS if s != "^" or a == "les"), "size", "norm",
    *(f"{kind}={value}" for kind, values in VALUES.items() for value in values),
)
LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
# Tag groups decoded together: a token belongs to a group when its best label there is above threshold.
GROUPS: dict[str, tuple[int, ...]] = {
    **{a: tuple(LABEL_INDEX[a + s] for s in ASSERTIONS if a + s in LABEL_INDEX) for a in ANCHORS},
    "size": (LABEL_INDEX["size"],), "norm": (LABEL_INDEX["norm"],),
    **{kind: tuple(LABEL_INDEX[f"{kind}={v}"] for v in values) for kind, values in VALUES.items()},
}


def token_targets(offsets: list[tuple[int, int]], spans: list[Span] | tuple[Span, ...]) -> np.ndarray:
    """(n_tokens, len(LABELS)) float32 multi-hot: a token carries a span's labels when their characters
    overlap. Special tokens (offset (0, 0)) carry none.

    Raises:
        KeyError: a span label outside `LABELS` (a writer bug).
    """
    out = np.zeros((len(offsets), len(LABELS)), dtype=np.float32)
    for span in spans:
        columns = [LABEL_INDEX[label] for label in span.labels]
        for t, (start, end) in enumerate(offsets):
            if end > start and start < span.end and end > span.start:
                out[t, columns] = 1.0
    return out
