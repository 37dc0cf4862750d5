"""medgen.analysis: measure chest CT findings from HU and geometry alone, and score them against truth.

`analyze_volume` (lesions, effusion, emphysema, lung statistics), `compare_findings` (per-attribute
agreement with ground-truth `Findings`), `density_calibration` (measured lesion HU vs density control).
"""

from medgen.analysis.compare import compare_findings
from medgen.analysis.density import density_calibration
from medgen.analysis.findings import Analysis, MeasuredEffusion, MeasuredLesion, analyze_volume

__all__ = ["Analysis", "MeasuredEffusion", "MeasuredLesion", "analyze_volume", "compare_findings",
           "density_calibration"]
