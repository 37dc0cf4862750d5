"""medgen.phantom.v2: an adult chest CT phantom labelled in MAISI's label space.

    from medgen.phantom.v2 import make_phantom_v2
    ct, labels = make_phantom_v2(findings, shape=64, spacing=5.0, seed=0)

Anatomy (lungs with apices, domes, recesses and fissures; heart chambers and great vessels; airway,
arterial and venous trees; vertebrae C7-L2, 12 rib pairs, cartilages, sternum, clavicles, scapulae;
liver, stomach, spleen, kidneys; wall muscles, fat, breasts) is defined in world millimetres from a
seeded adult population and rendered with partial volume and CT-like noise on any grid. See
docs/phantom_v2.md.
"""

from medgen.phantom.v2.phantom import (
    PHANTOM_VERSION,
    PhantomV2,
    make_phantom_v2,
    render_phantom_v2,
    subject_of_seed,
)

__all__ = ["PHANTOM_VERSION", "PhantomV2", "make_phantom_v2", "render_phantom_v2", "subject_of_seed"]
