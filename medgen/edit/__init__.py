"""medgen.edit: add the findings a report describes to an existing CT (or take one out), change nothing else."""

from medgen.edit.anatomy import EditInputError
from medgen.edit.editor import DEFAULT_MARGIN_MM, edit_volume, source_sha256
from medgen.edit.pipeline import EditPipeline

__all__ = ["EditPipeline", "edit_volume", "EditInputError", "source_sha256", "DEFAULT_MARGIN_MM"]
