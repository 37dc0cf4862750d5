"""medgen: radiology report text -> synthetic 3D CT volumes (research data, not for diagnosis)."""

__version__ = "0.1.0"

from medgen.volume import Volume, density_to_hu, hu_to_density  # noqa: E402

__all__ = ["Volume", "density_to_hu", "hu_to_density", "__version__"]
