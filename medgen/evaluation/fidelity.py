"""Report fidelity: generate from held-out-phrasing reports, analyze the volumes, compare with the truth.

The ground truth is procedural: `make_heldout_cases` draws findings with `sample_findings`, builds the
phantom with those findings (the *real* reference volume, also used by the realism and alignment
sections) and writes a report in a held-out phrasing family (alternating English / Chinese).
A *generator* is any callable ``generate(reports, *, seed, density=None) -> list[Volume]``:
`PipelineGenerator` runs a `ReportToVolumePipeline`; `PhantomOracle` returns the phantoms themselves
(the scorer's ceiling: it shows what the analyzer can recover from a perfect generator).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from medgen.findings import Findings
from medgen.seeds import FIDELITY_CASE_SEED
from medgen.volume import Volume

__all__ = ["EvalCase", "PhantomOracle", "PipelineGenerator", "aggregate_records", "attribute_record",
           "make_heldout_cases", "score_fidelity", "without_centres"]

LANGUAGE_CYCLE = ("en", "zh")


@dataclass
class EvalCase:
    """One held-out subject: report (held-out phrasing), true findings and the real phantom volume.

    Args:
        index: position in the case list.
        report: report text.
        language: "en" or "zh".
        family: phrasing-family id (held-out split).
        findings: the truth (lesion centres filled in by the phantom).
        real: the phantom image (HU, int16) on the model's grid.
        subject_seed: seed of the phantom's anatomy.
    """

    index: int
    report: str
    language: str
    family: str
    findings: Findings
    real: Volume
    subject_seed: int
    phantom_version: int = 1


def make_heldout_cases(n: int, *, shape, spacing, seed: int = FIDELITY_CASE_SEED, languages: Sequence[str] = LANGUAGE_CYCLE,
                       phantom_version: int = 1) -> list[EvalCase]:
    """`n` held-out subjects on the grid (shape, spacing) from phantom `phantom_version` (the one the model was
    trained on); languages alternate (half EN, half ZH for n even)."""
    from medgen.phantom.chest import sample_findings
    from medgen.phantom.versions import make_case
    from medgen.reports.writer import write_report

    if int(n) < 1:
        raise ValueError(f"`n` (number of evaluation reports) must be >= 1, got {n}")
    cases = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        subject_seed = int(seed) * 100_000 + i
        phantom = make_case(sample_findings(rng), shape=shape, spacing=spacing, seed=subject_seed,
                            version=phantom_version)
        language = languages[i % len(languages)]
        report = write_report(phantom.findings, language=language, rng=rng, split="heldout")
        cases.append(EvalCase(i, report.text, language, report.family, phantom.findings, phantom.image, subject_seed,
                              int(phantom_version)))
    return cases


class PipelineGenerator:
    """``generate(reports, seed=, density=)`` over a `ReportToVolumePipeline`; counts what it made.

    Args:
        pipe: the pipeline.
        num_inference_steps, guidance_scale, density_guidance_scale: overrides (None = the model's).
        shape, spacing: output grid (None = the model's).
    """

    def __init__(self, pipe, *, num_inference_steps=None, guidance_scale=None, density_guidance_scale=None,
                 shape=None, spacing=None):
        self.pipe = pipe
        self.kwargs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                       "density_guidance_scale": density_guidance_scale, "shape": shape, "spacing": spacing}
        self.n_generated = 0

    def __call__(self, reports: list[str], *, seed: int, density=None) -> list[Volume]:
        results = self.pipe(list(reports), density=density, seed=int(seed), progress=False, **self.kwargs)
        self.n_generated += len(results)
        for r in results:  # layout-grounded models: where each lesion was laid out (layout <-> CT agreement)
            if r.labels is not None:
                r.volume.meta["layout_lesion_centroids_mm"] = layout_centroids(r.labels)
        return [r.volume for r in results]


def layout_centroids(labels: Volume) -> list[list[float]]:
    """World (RAS+ mm) centroid of every lesion label of a layout label map, in lesion order."""
    from medgen.layout.labels import FIRST_LESION_LABEL

    array = np.asarray(labels.array)
    out = []
    for value in sorted(int(v) for v in np.unique(array) if v >= FIRST_LESION_LABEL):
        ijk = np.argwhere(array == value).mean(0)
        out.append([float(c) for c in (labels.affine @ np.append(ijk, 1.0))[:3]])
    return out


LAYOUT_AGREEMENT_MM = 5.0


def layout_agreement(volume: Volume, analysis) -> list[float] | None:
    """Per laid-out lesion: 1 when the analyzer found a lesion within `LAYOUT_AGREEMENT_MM` of its label
    centroid in the generated CT, else 0; None for volumes without a layout."""
    centroids = volume.meta.get("layout_lesion_centroids_mm")
    if centroids is None:
        return None
    found = [np.asarray(lesion.center_mm, float) for lesion in analysis.lesions]
    return [float(any(np.linalg.norm(f - np.asarray(c)) <= LAYOUT_AGREEMENT_MM for f in found)) for c in centroids]


class PhantomOracle:
    """A "perfect generator": returns the real phantom of each case (rebuilt at the requested density).

    With ``density=None`` the case's own phantom is returned; with a density every lesion of the
    findings gets that density and the same subject (same anatomy seed) is rebuilt.
    """

    def __init__(self, cases: Sequence[EvalCase]):
        self.cases = {c.report: c for c in cases}
        self.n_generated = 0

    def __call__(self, reports: list[str], *, seed: int, density=None) -> list[Volume]:
        from medgen.phantom.versions import make_case

        densities = density if isinstance(density, (list, tuple)) else [density] * len(reports)
        out = []
        for report, d in zip(reports, densities, strict=True):
            case = self.cases[report]
            if d is None:
                out.append(case.real)
                continue
            findings = copy.deepcopy(case.findings)
            for lesion in findings.lesions:
                lesion.density = float(d)
            out.append(make_case(findings, shape=case.real.shape, spacing=case.real.spacing, seed=case.subject_seed,
                                 version=case.phantom_version).image)
        self.n_generated += len(out)
        return out


def _numeric(value) -> float | None:
    """A compare_findings value as a float (bools -> 0/1); None / non-numeric / non-finite -> None."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
        return float(value)
    return None


def aggregate_records(records: list[dict], group_key: str = "language") -> dict:
    """Mean (and count) of every numeric field of `records`, overall and per `group_key` value.

    Fields that are None in a record (attribute not applicable to that case, e.g. effusion grade
    when there is no effusion) are left out of that field's mean, so each mean has its own ``n``;
    list fields (one value per lesion) contribute every item.
    Returns ``{"overall": {field: {"mean", "n"}}, "by_<group_key>": {value: {...}}}``.
    """

    def summarise(rows):
        fields: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key in ("case", "seed", group_key):
                    continue
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    number = _numeric(item)
                    if number is not None:
                        fields.setdefault(key, []).append(number)
        return {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in sorted(fields.items())}

    groups = sorted({r[group_key] for r in records if group_key in r})
    return {"overall": summarise(records),
            f"by_{group_key}": {g: summarise([r for r in records if r.get(group_key) == g]) for g in groups}}


def attribute_record(comparison: dict, truth: Findings) -> dict:
    """One volume's `compare_findings` output -> the attributes of the fidelity table.

    Lesion attributes are lists (one value per true / matched lesion) so that they are averaged over
    lesions; a None value means "does not apply to this volume" and is left out of that mean.
    """
    les, eff, emph, normal = (comparison[k] for k in ("lesions", "effusion", "emphysema", "normal"))
    matches = les["matches"]
    return {
        "lesion_detected": [1.0] * les["n_matched"] + [0.0] * (les["n_truth"] - les["n_matched"]),
        "lesion_side": [m["side_ok"] for m in matches],
        "lesion_zone": [m["zone_ok"] for m in matches],
        "lesion_lobe": [m["lobe_ok"] for m in matches],
        "lesion_size_abs_rel_error": [abs(m["size_rel_error"]) for m in matches],
        "lesion_size_within_30pct_ge20mm": [abs(m["size_rel_error"]) <= 0.3 for m in matches
                                            if m["truth_diameter_mm"] >= 20.0],
        "lesion_density_class": [m["density_class_ok"] for m in matches],
        "false_positive_lesions_per_volume": len(les["false_positives"]),
        "effusion_presence": eff["presence_ok"],
        "effusion_side": eff["side_ok"],
        "effusion_grade": eff["grade_ok"],
        "emphysema_presence": emph["presence_ok"],
        "emphysema_grade": emph["grade_ok"],
        "normal_specificity": normal["ok"] if truth.is_normal else None,
        "abnormal_sensitivity": normal["ok"] if not truth.is_normal else None,
    }


def without_centres(findings: Findings) -> Findings:
    """A copy of `findings` whose lesions carry no centre: lesions are then paired by side / lobe / size.

    A report never states where in the lobe a lesion sits, so a generated lesion cannot be expected at
    the phantom's centre; pairing by attributes judges what the report does say.
    """
    out = copy.deepcopy(findings)
    for lesion in out.lesions:
        lesion.center_mm = None
    return out


def score_fidelity(cases: Sequence[EvalCase], generate: Callable, seeds: Sequence[int], *, batch_size: int = 4,
                   analyze: Callable | None = None, compare: Callable | None = None, progress: bool = False):
    """Generate every case's report with every seed, analyze, compare with the truth.

    Args:
        cases: from `make_heldout_cases`.
        generate: ``generate(reports, seed=, density=None) -> list[Volume]``.
        seeds: one generation per case and seed; batch k of a seed uses seed ``1000 * seed + k``.
        batch_size: reports per generator call.
        analyze, compare: default `medgen.analysis.analyze_volume` / `compare_findings`.
        progress: show a tqdm bar (volumes generated).

    Returns:
        (summary dict, {(case index, seed): Volume} of the generated volumes, list of per-volume records).
    """
    if analyze is None or compare is None:
        from medgen.analysis import analyze_volume, compare_findings

        analyze, compare = analyze or analyze_volume, compare or compare_findings
    if not seeds:
        raise ValueError("`seeds` must hold at least one seed")
    batch_size = max(1, int(batch_size))
    generated: dict[tuple[int, int], Volume] = {}
    records = []
    bar = tqdm(total=len(cases) * len(seeds), desc="fidelity", unit="volume", disable=not progress)
    for seed in seeds:
        for k, start in enumerate(range(0, len(cases), batch_size)):
            batch = list(cases[start:start + batch_size])
            volumes = generate([c.report for c in batch], seed=1000 * int(seed) + k)
            if len(volumes) != len(batch):
                raise RuntimeError(f"the generator returned {len(volumes)} volumes for {len(batch)} reports")
            for case, volume in zip(batch, volumes, strict=True):
                generated[(case.index, int(seed))] = volume
                truth = without_centres(case.findings)
                analysis = analyze(volume)
                row = attribute_record(compare(truth, analysis), truth)
                agreement = layout_agreement(volume, analysis)
                if agreement is not None:
                    row["layout_ct_agreement"] = agreement
                records.append({"case": case.index, "seed": int(seed), "language": case.language, **row})
            bar.update(len(batch))
    bar.close()
    summary = {
        "n_reports": len(cases),
        "n_seeds": len(seeds),
        "n_generated": len(generated),
        "languages": {lang: sum(c.language == lang for c in cases) for lang in sorted({c.language for c in cases})},
        "families": sorted({c.family for c in cases}),
        "n_normal_cases": sum(c.findings.is_normal for c in cases),
        **aggregate_records(records),
    }
    return summary, generated, records
