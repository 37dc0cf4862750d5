"""medgen.pipelines: inference pipelines (report text -> synthetic CT volume).

`ReportToVolumePipeline` and `GenerationResult` are imported on first use, so that importing
`medgen.pipelines.validation` (e.g. by the CLI) does not load torch and MONAI.
"""

from __future__ import annotations

__all__ = ["GenerationResult", "ReportToVolumePipeline", "default_model_path"]


def __getattr__(name: str):
    if name == "ReportToVolumePipeline":
        from medgen.pipelines.text_to_volume import ReportToVolumePipeline

        return ReportToVolumePipeline
    if name == "GenerationResult":
        from medgen.pipelines.result import GenerationResult

        return GenerationResult
    if name == "default_model_path":
        from medgen.pipelines.default_model import default_model_path

        return default_model_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
