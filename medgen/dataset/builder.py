"""Build a synthetic training set: phantom chest CTs + label maps + EN/ZH reports + ``manifest.jsonl``.

Layout of ``out_dir``::

    manifest.jsonl            one row per subject (see medgen.dataset.manifest)
    dataset.json              the build parameters (n, seed, shape, spacing, fractions, version)
    images/case00000.nii.gz   int16 HU, RAS+, with images/case00000.json (findings, seed, report, density)
    dicom/case00001/          the same for subjects written as a DICOM series (``dicom_fraction``)
    labels/case00000.nii.gz   uint8 label map (values: medgen.findings.LABELS)
    reports/case00000.txt     the report text

Determinism: subject ``i`` draws everything from ``SeedSequence(seed, spawn_key=(0, i))`` and the
split / language / format assignment from ``SeedSequence(seed, spawn_key=(1,))``, so a seed gives the
same manifest and the same voxels whatever the number of worker processes. (Sidecar creation times
and DICOM UIDs are fresh on every build.)

Workers are ``spawn``-ed processes that import only numpy/scipy/nibabel/pydicom (no torch).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medgen._version import __version__
from medgen.dataset.manifest import write_manifest
from medgen.errors import OutputExistsError
from medgen.findings import LABELS
from medgen.io.atomic import atomic_dir
from medgen.seeds import is_held_out
from medgen.volume import DENSITY_WORD_DEFAULTS, density_class, hu_to_density

LANGUAGES = ("en", "zh")
LABEL_DESCRIP = "SYNTHETIC medgen phantom labels"


@dataclass(frozen=True)
class SubjectPlan:
    """What one worker builds: subject `index` of the dataset seeded by `seed`."""

    index: int
    seed: int
    split: str
    language: str
    format: str

    @property
    def id(self) -> str:
        return f"case{self.index:05d}"


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of subject `index`: independent of every other subject and of the worker count."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))


def _exact_subset(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Boolean mask with exactly round(n * fraction) True entries at random places."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(n * fraction))]] = True
    return mask


def plan_subjects(n: int, *, seed: int = 0, dicom_fraction: float = 0.0, languages=LANGUAGES, zh_fraction=0.4,
                  val_fraction=0.05, test_fraction=0.1) -> list[SubjectPlan]:
    """Assign split, language and file format: exact counts (rounded), random positions."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    split = np.full(n, "train", dtype=object)
    order = rng.permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    split[order[:n_test]] = "test"
    split[order[n_test: n_test + n_val]] = "val"
    if set(languages) == set(LANGUAGES):
        zh = _exact_subset(rng, n, zh_fraction)
    else:
        zh = np.full(n, languages[0] == "zh")
    dicom = _exact_subset(rng, n, dicom_fraction)
    return [
        SubjectPlan(i, seed, str(split[i]), "zh" if zh[i] else "en", "dicom" if dicom[i] else "nifti")
        for i in range(n)
    ]


def lesion_density_label(image: np.ndarray, labels: np.ndarray, findings) -> tuple[float | None, str]:
    """Density label of a subject and where it came from.

    "mask": `hu_to_density` of the mean HU inside the lesion label; "words": no lesion voxel on this
    grid (tiny lesion), so the default of the density class the report names; "unknown": no lesion.
    """
    if not findings.lesions:
        return None, "unknown"
    mask = labels == LABELS["lesion"]
    if mask.any():
        return hu_to_density(float(image[mask].astype(np.float64).mean())), "mask"
    return DENSITY_WORD_DEFAULTS[density_class(findings.mean_lesion_density)], "words"


@dataclass
class Subject:
    """One synthesised subject: phantom, report and density label (see `synthesize_subject`)."""

    case: Any  # medgen.phantom.chest.PhantomCase
    report: Any  # medgen.reports.writer.Report
    phantom_seed: int
    density: float | None
    density_source: str

    def provenance(self, **fields) -> dict:
        """Sidecar record: synthetic label, version, time, then the ground truth and `fields`."""
        from medgen.io.sidecar import provenance

        return provenance(kind="phantom", phantom_seed=self.phantom_seed, report=self.report.text,
                          language=self.report.language, density=self.density,
                          density_source=self.density_source, findings=self.case.findings.to_dict(),
                          subject=self.case.subject, **fields)


def synthesize_subject(rng: np.random.Generator, *, shape=64, spacing=5.0, language="en", split="train",
                       p_normal: float = 0.25, phantom_version: int = 1) -> Subject:
    """Findings, phantom, report and density label, all drawn from `rng` (in that order).

    Args:
        split: "train" or "heldout" phrasing families for the report.
        p_normal: probability of a subject without findings.
        phantom_version: 1 (medgen labels) or 2 (`medgen.phantom.v2`, its label map in medgen's coarse table).
    """
    from medgen.phantom.chest import sample_findings
    from medgen.phantom.versions import make_case
    from medgen.reports.writer import write_report

    findings = sample_findings(rng, p_normal=p_normal)
    phantom_seed = int(rng.integers(0, 2**31 - 1))
    while is_held_out(phantom_seed):  # training data never draws an evaluation's subject
        phantom_seed = int(rng.integers(0, 2**31 - 1))
    case = make_case(findings, shape=shape, spacing=spacing, seed=phantom_seed, version=phantom_version)
    report = write_report(case.findings, language=language, rng=rng, split=split)
    density, source = lesion_density_label(case.image.array, case.labels.array, case.findings)
    return Subject(case, report, phantom_seed, density, source)


def build_subject(plan: SubjectPlan, *, root, shape: int, spacing: float, phantom_version: int = 1) -> dict:
    """Build and write one subject under `root`; returns its manifest row (paths relative to `root`)."""
    from medgen.io import save_nifti, write_dicom_series

    root = Path(root)
    subject = synthesize_subject(subject_rng(plan.seed, plan.index), shape=shape, spacing=spacing,
                                 language=plan.language, split="heldout" if plan.split == "test" else "train",
                                 phantom_version=phantom_version)
    case, report = subject.case, subject.report
    row = {
        "id": plan.id, "image": None, "label": f"labels/{plan.id}.nii.gz",
        "report": report.text, "language": plan.language,
        "density": subject.density, "density_source": subject.density_source,
        "findings": case.findings.to_dict(), "split": plan.split, "phrasing": report.family,
        "format": plan.format, "seed": subject.phantom_seed,
    }
    record = subject.provenance(dataset_seed=plan.seed, subject_index=plan.index)
    if plan.format == "dicom":
        row["image"] = f"dicom/{plan.id}"
        write_dicom_series(case.image, root / row["image"], series_description=f"medgen phantom {plan.id}",
                           provenance=record)
    else:
        row["image"] = f"images/{plan.id}.nii.gz"
        save_nifti(case.image, root / row["image"], sidecar=record)
    save_nifti(case.labels, root / row["label"], dtype=np.uint8, descrip=LABEL_DESCRIP)
    if phantom_version == 2:  # the exact layout comes with the subject (`medgen data layouts` is for v1 sets)
        from medgen.dataset.layouts import LAYOUT_DESCRIP
        from medgen.layout.layout import layout_of_v2

        layout = layout_of_v2(case.v2)
        row["phantom_version"], row["layout"] = 2, f"layouts/{plan.id}.nii.gz"
        save_nifti(layout.labels, root / row["layout"], dtype=np.uint8, descrip=LAYOUT_DESCRIP,
                   sidecar={"synthetic": True, **layout.to_dict()})
    (root / "reports" / f"{plan.id}.txt").write_text(report.text + "\n", encoding="utf-8")
    return row


def _check_fraction(value, name):
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out_dir` unless overwrite; even then only replace an earlier dataset."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"{out_dir}: folder is not empty (pass overwrite=True / --overwrite to replace it)")
    if not (out_dir / "manifest.jsonl").is_file():
        raise OutputExistsError(f"{out_dir}: not a medgen dataset (no manifest.jsonl); refusing to replace it")


def build_synthetic_dataset(out_dir, *, n: int, shape=64, spacing=5.0, seed: int = 0, dicom_fraction: float = 0.0,
                            languages=LANGUAGES, zh_fraction=0.4, val_fraction=0.05, test_fraction=0.1,
                            workers: int | None = None, progress: bool = True, overwrite=False,
                            phantom_version: int = 1) -> Path:
    """Write `n` phantom subjects (image, label map, report) and their manifest under `out_dir`.

    Args:
        n: number of subjects.
        shape, spacing: phantom grid (cube of `shape` voxels of `spacing` mm).
        seed: dataset seed; the output is identical for a seed whatever `workers` is.
        dicom_fraction: share of subjects written as DICOM series folders instead of NIfTI.
        languages: report languages; with both, a `zh_fraction` share is Chinese.
        val_fraction, test_fraction: split shares (the test split uses held-out phrasing families).
        workers: processes (default: all CPU cores; 1 builds in this process).
        progress: show a tqdm bar.
        overwrite: replace an existing dataset folder (a non-empty folder without manifest.jsonl is
            always refused).
        phantom_version: 1 or 2 (`medgen.phantom.v2`; each row then also has its exact ``layout``).

    Returns:
        Path of ``out_dir/manifest.jsonl``. The folder appears only when the whole build succeeded.
    """
    from tqdm.auto import tqdm

    if int(n) < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    from medgen.phantom.versions import VERSIONS

    if phantom_version not in VERSIONS:
        raise ValueError(f"`phantom_version` must be 1 or 2, got {phantom_version!r}")
    for name, value in (("dicom_fraction", dicom_fraction), ("zh_fraction", zh_fraction),
                        ("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        _check_fraction(value, name)
    if val_fraction + test_fraction > 1.0:
        raise ValueError(f"`val_fraction` + `test_fraction` must be <= 1, got {val_fraction + test_fraction}")
    languages = tuple(languages)
    if not languages or not set(languages) <= set(LANGUAGES):
        raise ValueError(f"`languages` must be a non-empty subset of {LANGUAGES}, got {languages}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    n = int(n)
    if workers is not None and int(workers) < 1:
        raise ValueError(f"`workers` must be >= 1 or None, got {workers}")
    workers = min(n, int(workers) if workers is not None else os.cpu_count() or 1)

    plans = plan_subjects(n, seed=seed, dicom_fraction=dicom_fraction, languages=languages,
                          zh_fraction=zh_fraction, val_fraction=val_fraction, test_fraction=test_fraction)
    params = {"n": n, "shape": int(shape), "spacing": float(spacing), "seed": int(seed),
              "dicom_fraction": dicom_fraction, "languages": list(languages), "zh_fraction": zh_fraction,
              "val_fraction": val_fraction, "test_fraction": test_fraction, "phantom_version": int(phantom_version), "medgen_version": __version__}
    with atomic_dir(out_dir, overwrite=True) as tmp, contextlib.ExitStack() as stack:
        for folder in ("images", "labels", "reports", "dicom", *(("layouts",) if phantom_version == 2 else ())):
            (tmp / folder).mkdir()
        job = partial(build_subject, root=tmp, shape=int(shape), spacing=float(spacing),
                      phantom_version=int(phantom_version))
        if workers == 1:
            results = map(job, plans)
        else:  # spawn: workers start clean (no torch, no inherited threads); chunks amortise the IPC
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results = pool.imap(job, plans, chunksize=max(1, min(16, n // (workers * 8))))
        rows = list(tqdm(results, total=n, desc=f"synth {out_dir.name}", unit="case", disable=not progress))
        if not any((tmp / "dicom").iterdir()):
            (tmp / "dicom").rmdir()
        (tmp / "dataset.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp / "manifest.jsonl", rows)
    return out_dir / "manifest.jsonl"
