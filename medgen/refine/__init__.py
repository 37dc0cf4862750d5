"""Resolution cascade: output-grid semantics (`grid`) and the x2 refinement stages (`cascade`)."""

from medgen.refine.cascade import TrilinearStage, run_cascade, tilewise, upsample_labels
from medgen.refine.grid import MAX_STAGES, GridPlan, plan_grid

__all__ = ["MAX_STAGES", "GridPlan", "TrilinearStage", "plan_grid", "run_cascade", "tilewise", "upsample_labels"]
