"""medgen.metrics: measure chest CT findings from HU and geometry alone, and score them against truth.

`analyze_volume` (lesions, effusion, emphysema, lung statistics), `compare_findings` (per-attribute
agreement with ground-truth `Findings`), `density_calibration` (measured lesion HU vs density control).
"""

from medgen.metrics.compare import compare_findings
from medgen.metrics.density import density_calibration
from medgen.metrics.findings import Analysis, MeasuredEffusion, MeasuredLesion, analyze_volume

__all__ = ["Analysis", "MeasuredEffusion", "MeasuredLesion", "analyze_volume", "compare_findings",
           "density_calibration"]
