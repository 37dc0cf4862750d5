"""Batch generation from a manifest, in one process or spread over ``torchrun`` processes (GPUs, nodes).

Before any model loads, rank 0 plans every file every row will write (NIfTI, sidecar JSON, PNG, label map,
findings JSON, DICOM folder) and refuses, in one line, two rows that would write the same file, an output
folder that cannot be written, and earlier output that the run would replace. Then:

- a row whose outputs are all present is *complete* and skipped (every file is renamed into place whole,
  so a present file is a complete file): a rerun resumes after a crash or preemption. Its sidecar must
  record the row's report, seed and density, else the row is refused (the manifest changed). With
  ``overwrite`` every row is generated again and replaces its files.
- a row with only some of its outputs is refused without ``overwrite`` (never replaced silently).
- the rows left to generate are dealt out ``rank::world_size``; each process loads the model once.
- every row ends as one line of ``<out_dir>/results.jsonl`` (``id``, ``status`` ok / skipped / failed,
  ``error``, ``seconds``, ``rank``, ``time``); the file is appended to by every rank and every run.
- a failing row is recorded and the others go on; the exit status says whether any failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from medgen.errors import InputFileError, MedgenError, OutputExistsError
from medgen.io.sidecar import FOLDER_SIDECAR_NAME
from medgen.pipelines.components import check_pipeline_folder, model_outputs
from medgen.pipelines.result import plan_outputs

RESULTS_NAME = "results.jsonl"
# A rank that has finished waits for the slowest one at the end; that may take as long as the batch.
WAIT_FOR_OTHER_RANKS = timedelta(days=7)
# Errors that are the user's (printed by the CLI as one line, exit status 2); anything else is a bug.
USER_ERRORS = (MedgenError, ValueError, FileNotFoundError, FileExistsError, PermissionError)
KIND_NAMES = {"nifti": "CT", "sidecar": "sidecar", "preview": "preview", "labels": "label map",
              "findings": "findings", "dicom": "DICOM folder"}


@dataclass
class RowPlan:
    """One manifest row and the files it writes (``plan_outputs`` keys -> Path); `complete` when all exist."""

    row_id: str
    outputs: dict[str, Path]
    complete: bool = False


def plan_rows(jobs, *, manifest, out_dir, preview: bool, labels: bool, findings: bool,
              overwrite: bool) -> list[RowPlan]:
    """Plan and check every row's outputs (see the module docstring); raises a one-line `MedgenError`.

    Args:
        jobs: rows with ``row_id``, ``report``, ``density``, ``seed``, ``out`` (NIfTI path), ``dicom_dir``.
        manifest: the manifest's path (named in the errors about its rows).
        out_dir: the batch's output folder (holds ``results.jsonl``).
        preview, labels, findings: whether each row writes a PNG, a label map, a findings file.
        overwrite: regenerate every row (else complete rows are skipped, partial ones refused).
    """
    plans = [RowPlan(job.row_id, plan_outputs(job.out, dicom_dir=job.dicom_dir, preview=preview, overwrite=True,
                                              labels=labels, findings=findings)) for job in jobs]
    results = Path(out_dir) / RESULTS_NAME
    for folder in {Path(out_dir), *(path.parent for plan in plans for path in plan.outputs.values())}:
        _check_folder(folder)
    if results.is_dir() or (results.exists() and not os.access(results, os.W_OK)):
        raise MedgenError(f"{results}: the batch's results log must be a writable file")
    _refuse_collisions(plans, Path(manifest), results)
    for job, plan in zip(jobs, plans, strict=True):
        plan.complete = False if overwrite else _is_complete(job, plan)
    return plans


def _check_folder(folder: Path) -> None:
    """`folder` is (or can be made) a writable folder: no file in its place or above it."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise MedgenError(f"{folder}: cannot be an output folder, {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MedgenError(f"{folder}: output folder {probe} is not writable")


def _refuse_collisions(plans: list[RowPlan], manifest: Path, results: Path) -> None:
    """Two rows writing one file (``a`` writes ``a_labels.nii.gz``, the CT of row ``a_labels``), a file inside
    another row's DICOM folder, or a row writing over the results log."""
    folders: dict[Path, Path] = {}

    def key(path: Path) -> Path:  # symlinked or relative output folders compare by where they lead
        if path.parent not in folders:
            folders[path.parent] = path.parent.resolve()
        return folders[path.parent] / path.name

    owner: dict[Path, tuple[str | None, str]] = {key(results): (None, "results log")}
    dicom: dict[Path, str] = {}
    for plan in plans:
        for kind, path in plan.outputs.items():
            where = key(path)
            if where in owner:
                _collision(manifest, path, owner[where], (plan.row_id, kind))
            owner[where] = (plan.row_id, kind)
            if kind == "dicom":
                dicom[where] = plan.row_id
    for where, (row_id, kind) in owner.items():
        for parent in where.parents:
            if parent in dicom and dicom[parent] != row_id:
                _collision(manifest, parent / where.relative_to(parent), (dicom[parent], "dicom"), (row_id, kind))


def _collision(manifest: Path, path: Path, first: tuple[str | None, str], second: tuple[str, str]):
    if first[0] is None:
        raise InputFileError(manifest, f"row {second[0]!r} would write {path}, the batch's {first[1]}: rename the row")
    raise InputFileError(manifest, f"rows {first[0]!r} and {second[0]!r} would write the same file {path} (the "
                                   f"{KIND_NAMES[first[1]]} of {first[0]!r} and the {KIND_NAMES[second[1]]} of "
                                   f"{second[0]!r}): rename one of them")


def _is_complete(job, plan: RowPlan) -> bool:
    """True when every output of the row is there and was generated from this row; False when none is there.

    A DICOM folder is there when its ``provenance.json`` is (the folder is renamed into place whole).
    """
    outputs = plan.outputs
    if not any(path.exists() for path in outputs.values()):
        return False
    missing = [path for kind, path in outputs.items() if not _present(kind, path)]
    if missing:
        there = next(path for path in outputs.values() if path.exists())
        raise OutputExistsError(f"{there}: row {plan.row_id!r} is incomplete ({missing[0].name} is missing); remove "
                                "its files to generate it again, or pass --overwrite to regenerate every row")
    sidecar = outputs["sidecar"]
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    expected = {"report": job.report, "seed": job.seed, "density": job.density}
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        raise OutputExistsError(f"{outputs['nifti']}: exists, but its sidecar {sidecar.name} does not record row "
                                f"{plan.row_id!r}'s report, seed and density; pass --overwrite to regenerate every "
                                "row, or use another --out-dir")
    return True


def _present(kind: str, path: Path) -> bool:
    return (path / FOLDER_SIDECAR_NAME).is_file() if kind == "dicom" else path.is_file()


class ResultsLog:
    """``results.jsonl``: one JSON line per row, appended whole (O_APPEND, one write under a lock)."""

    def __init__(self, path, rank: int = 0):
        self.path, self.rank = Path(path), rank

    def add(self, rows: list[dict]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data = "".join(json.dumps({"id": r["id"], "status": r["status"], "error": r.get("error"),
                                   "seconds": round(r.get("seconds", 0.0), 3), "rank": self.rank, "time": now},
                                  ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        if not data:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _lock(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # also releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: O_APPEND alone
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def run_batch(jobs, *, manifest, out_dir, model_dir, device, options: dict, preview: bool = True,
              overwrite: bool = False) -> int:
    """Generate every row of a checked manifest (see the module docstring), on this rank's share of the rows.

    Under ``torchrun`` (WORLD_SIZE > 1) the process group is started (NCCL on CUDA, Gloo on CPU). Returns the
    exit status: 0 when every row was written or skipped, 1 when a row failed; raises a user error (exit
    status 2) before anything is generated. On ranks other than 0 that error is left to rank 0 to print.
    """
    from medgen.engine.distributed import init_distributed

    _check_gpu_per_process(device)
    ctx = init_distributed(device, timeout=WAIT_FOR_OTHER_RANKS)
    try:
        return _run(ctx, jobs, manifest=Path(manifest), out_dir=Path(out_dir), model_dir=Path(model_dir),
                    options=options, preview=preview, overwrite=overwrite)
    finally:
        ctx.close()


def _check_gpu_per_process(device) -> None:
    """Under torchrun a bare 'cuda' is ``cuda:LOCAL_RANK``: refuse more processes a node than GPUs."""
    import torch

    device, local_rank = torch.device(device), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None and local_rank >= torch.cuda.device_count():
        raise ValueError(f"`device` 'cuda': this process is LOCAL_RANK {local_rank} but the node has "
                         f"{torch.cuda.device_count()} CUDA device(s); start at most one process a GPU "
                         "(torchrun --nproc_per_node)")


def _agree(ctx, error: BaseException | None):
    """Every rank learns whether any rank failed its checks; rank 0 raises the first error, others return 2."""
    messages = ctx.all_gather_object(None if error is None else str(error))
    first = next((m for m in messages if m is not None), None)
    if first is None:
        return None
    if not ctx.is_main:
        return 2
    raise error if error is not None else MedgenError(first)


def _run(ctx, jobs, *, manifest, out_dir, model_dir, options, preview, overwrite) -> int:
    # 1. Rank 0 plans and checks every row before any model loads; the others wait for its verdict.
    verdict = None
    if ctx.is_main:
        try:
            check_pipeline_folder(model_dir)  # a folder that is not a model is refused even when all rows are done
            plans = plan_rows(jobs, manifest=manifest, out_dir=out_dir, preview=preview, overwrite=overwrite,
                              **model_outputs(model_dir))
            out_dir.mkdir(parents=True, exist_ok=True)
            verdict = [plan.complete for plan in plans]
        except USER_ERRORS as err:
            ctx.broadcast_object(str(err))
            raise
    verdict = ctx.broadcast_object(verdict)
    if isinstance(verdict, str):  # rank 0 refused the batch and prints why
        return 2
    todo = [i for i, complete in enumerate(verdict) if not complete]
    mine = todo[ctx.rank::ctx.world_size]
    log = ResultsLog(out_dir / RESULTS_NAME, ctx.rank)
    if ctx.is_main:
        log.add([{"id": jobs[i].row_id, "status": "skipped"} for i, complete in enumerate(verdict) if complete])
        if len(todo) < len(jobs) or ctx.distributed:
            print(f"medgen: {len(jobs) - len(todo)} of {len(jobs)} row(s) already complete; generating "
                  f"{len(todo)} on {ctx.world_size} process(es)", file=sys.stderr)

    # 2. Every rank with rows loads the model and checks the options on it.
    pipe, error = None, None
    if mine:
        try:
            pipe = _load(model_dir, ctx.device, jobs[mine[0]].report, options)
        except USER_ERRORS as err:
            error = err
    status = _agree(ctx, error)
    if status is not None:
        return status

    # 3. Generate this rank's rows; a failing row is recorded and the next one goes on.
    written = failed = 0
    for i in _progress(mine, ctx, len(jobs)):
        job, started = jobs[i], time.perf_counter()
        try:
            _generate(pipe, job, options, preview=preview, overwrite=overwrite)
        except Exception as err:  # noqa: BLE001 - any failure of one row is recorded, the batch goes on
            failed += 1
            message = " ".join(str(err).split()) or type(err).__name__
            message = message if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: {message}"
            log.add([{"id": job.row_id, "status": "failed", "error": message,
                      "seconds": time.perf_counter() - started}])
            _say(f"medgen: row {job.row_id!r} failed: {message}")
            continue
        written += 1
        log.add([{"id": job.row_id, "status": "ok", "seconds": time.perf_counter() - started}])

    # 4. Wait for every rank; rank 0 sums up. Every rank exits with the same status.
    counts = ctx.all_gather_object((written, failed))
    written, failed = (sum(c[k] for c in counts) for k in (0, 1))
    if ctx.is_main:
        skipped = len(jobs) - len(todo)
        print(f"wrote {written} volume(s) to {out_dir}" + (f", skipped {skipped} complete row(s)" if skipped else "")
              + (f"; {failed} row(s) FAILED, see {out_dir / RESULTS_NAME}" if failed else ""))
    return 1 if failed else 0


def _load(model_dir: Path, device, report: str, options: dict):
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(model_dir, device=device)
    pipe.check_inputs(report, **options)
    loaded = {"labels": pipe.layout_grounded, "findings": pipe.layout_grounded or pipe.reader is not None}
    if model_outputs(model_dir) != loaded:  # the plan would have missed (or invented) an output
        raise MedgenError(f"{model_dir}: the model's files and its loaded components disagree about its outputs")
    return pipe


def _generate(pipe, job, options: dict, *, preview: bool, overwrite: bool) -> None:
    from medgen.pipelines.layout_stage import LayoutWarning
    from medgen.reader import ReaderWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)  # printed below as medgen: warning lines
        warnings.simplefilter("ignore", LayoutWarning)
        result = pipe(job.report, density=job.density, seed=job.seed, progress=False, **options)
    layout_warnings = result.provenance.get("layout", {}).get("warnings", [])
    for message in [*result.provenance.get("reader_warnings", []), *layout_warnings]:
        _say(f"medgen: warning: {job.out.name}: {message}")
    result.save(job.out, dicom_dir=job.dicom_dir, preview=preview, overwrite=overwrite)


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _progress(rows: list[int], ctx, total: int):
    """A progress bar over this rank's rows, shown by rank 0 only."""
    from tqdm import tqdm

    desc = "generate" if not ctx.distributed else f"generate (rank 0 of {ctx.world_size}, {total} rows in all)"
    return tqdm(rows, desc=desc, unit="volume", file=sys.stderr, disable=not (ctx.is_main and rows))
