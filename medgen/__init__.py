"""medgen: radiology report text -> synthetic 3D CT volumes (research data, not for diagnosis)."""

from medgen._version import __version__
from medgen.volume import Volume, density_to_hu, hu_to_density  # noqa: E402

__all__ = ["Findings", "GenerationResult", "ReportReader", "ReportToVolumePipeline", "default_model_path", "Volume",
           "density_to_hu", "hu_to_density", "__version__"]

_LAZY = {"ReportToVolumePipeline", "GenerationResult"}  # imported on first use: torch/MONAI stay unloaded


def __getattr__(name: str):
    if name == "default_model_path":
        from medgen.pipelines.default_model import default_model_path

        return default_model_path
    if name == "Findings":
        from medgen.findings import Findings

        return Findings
    if name == "ReportReader":
        from medgen.reader import ReportReader

        return ReportReader
    if name in _LAZY:
        import medgen.pipelines

        return getattr(medgen.pipelines, name)
    raise AttributeError(f"module 'medgen' has no attribute {name!r}")
