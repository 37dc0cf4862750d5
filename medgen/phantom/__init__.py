"""medgen.phantom: the procedural chest phantom (anatomy, lesions, effusion, emphysema) the embedded model
is trained on.

    from medgen.phantom import make_phantom, sample_findings
"""

from medgen.phantom.chest import make_phantom, sample_findings

__all__ = ["make_phantom", "sample_findings"]
