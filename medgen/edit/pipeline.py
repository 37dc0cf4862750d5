"""`EditPipeline`: add findings to an existing CT with the components of a generation pipeline.

    from medgen import ReportToVolumePipeline
    from medgen.edit import EditPipeline

    edit = EditPipeline.from_pipe(ReportToVolumePipeline.from_pretrained(path))   # shares the networks
    result = edit("scans/ct.nii.gz", report="25 mm solid nodule in the right lower lobe.", seed=0)

Built from a pipeline (as diffusers' ``from_pipe``) rather than being a method of it, so that the generation
pipeline never imports its client.
"""

from __future__ import annotations

from medgen.edit.editor import edit_volume


class EditPipeline:
    """Edits CTs with a layout-grounded `ReportToVolumePipeline`'s reader, layout stage and networks."""

    def __init__(self, pipe):
        self.pipe = pipe

    @classmethod
    def from_pipe(cls, pipe) -> EditPipeline:
        """An edit pipeline sharing `pipe`'s components (nothing is copied or loaded again)."""
        return cls(pipe)

    def __call__(self, volume, *, report=None, findings=None, **options):
        """Add the findings of `report` (or `findings`) to `volume`, regenerating only a margin around them;
        every other voxel is the input's. See `medgen.edit.edit_volume` for the options (label map of a medgen
        volume, lesions to remove or re-density, seed, margin). Returns a `GenerationResult` on the input's grid,
        with ``edit_region`` set."""
        return edit_volume(self.pipe, volume, report=report, findings=findings, **options)
