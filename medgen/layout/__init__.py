"""Layout stage: findings + an anatomy -> label map + density map on the output grid.

    from medgen.layout import make_layout, AnatomyBank
    layout = make_layout(findings, shape=64, spacing=5.0, seed=0, anatomy=bank.retrieve(embedding, seed=0)[0])
    layout.labels, layout.density, layout.label_table, layout.channels()
"""

from medgen.layout.anatomy_bank import AnatomyBank
from medgen.layout.labels import CHANNELS, FIRST_LESION_LABEL, N_CHANNELS, label_table, layout_channels
from medgen.layout.layout import Layout, layout_of_case, make_layout

__all__ = ["AnatomyBank", "CHANNELS", "FIRST_LESION_LABEL", "Layout", "N_CHANNELS", "label_table", "layout_channels", "layout_of_case",
           "make_layout"]
