"""The pipeline's reading and layout steps: the reader's findings (with their provenance record), then
findings (read from the report, or given) + an anatomy -> `Layout`, and the layout as the networks see it
(channels at image resolution for the decoder, pooled to the latent grid for the UNet).

The layout step runs only for layout-grounded models (``unet.layout_channels > 0``); the text-only ablation
skips it.
"""

from __future__ import annotations

import numpy as np
import torch

from medgen.errors import InputFileError
from medgen.findings import Findings
from medgen.layout import AnatomyBank, Layout, make_layout
from medgen.layout.labels import FIRST_LESION_LABEL, density_map, known_values, label_table, pool_layout
from medgen.pipelines.validation import check_label_map, check_lesion_count
from medgen.volume import Volume


def findings_for(reading, findings: Findings | None, density: float | None) -> Findings:
    """The findings to lay out: given ones, else the reader's; an explicit `density` overrides every lesion's."""
    chosen = findings if findings is not None else (reading.findings if reading is not None else Findings())
    chosen = Findings.from_dict(chosen.to_dict())
    if density is not None and not np.isnan(density):
        for lesion in chosen.lesions:
            lesion.density = float(density)
    return chosen


def plan_layout(findings: Findings, *, shape, spacing, seed: int, pooled_embedding, bank: AnatomyBank | None) -> Layout:
    """Lay `findings` out on an anatomy retrieved from `bank` by the report embedding (or drawn from `seed`)."""
    anatomy, info = (None, None) if bank is None else bank.retrieve(pooled_embedding, seed)
    return make_layout(findings, shape=shape, spacing=spacing, seed=seed, anatomy=anatomy, anatomy_info=info)


def user_layout(labels: Volume, findings: Findings, *, shape, spacing, affine) -> Layout:
    """A label map the user brought (mask-to-CT), checked: same grid as the output, only known labels, and a
    lesion label for every lesion of `findings` (whose densities fill the density map).

    Raises:
        InputFileError: another grid, an unknown label, or lesion labels that do not match the findings.
    """
    array = np.asarray(labels.array)
    where = labels.meta.get("path", "layout")
    if tuple(array.shape) != tuple(shape) or not np.allclose(labels.affine, affine, atol=1e-3):
        raise InputFileError(where, f"layout grid {tuple(array.shape)} at spacing "
                                    f"{tuple(round(s, 3) for s in labels.spacing)} mm (affine "
                                    f"{np.round(labels.affine, 2).tolist()}) is not the output grid {tuple(shape)} "
                                    f"at {tuple(spacing)} mm (affine {np.round(affine, 2).tolist()}); pass "
                                    "--shape/--spacing to match it, with the output's RAS+ centred geometry")
    array = check_label_map(array, where)
    values = set(np.unique(array).astype(int).tolist())
    unknown = sorted(values - known_values())
    if unknown:
        raise InputFileError(where, f"unknown label value(s) {unknown[:5]}; known: {label_table(0)} and lesions "
                                    f"from {FIRST_LESION_LABEL}")
    lesion_values = sorted(v for v in values if v >= FIRST_LESION_LABEL)
    expected = [FIRST_LESION_LABEL + i for i in range(len(findings.lesions))]
    if lesion_values != expected:
        raise InputFileError(where, f"lesion labels {lesion_values} do not match the {len(findings.lesions)} "
                                    f"lesion(s) of the findings (expected {expected}); pass --findings with "
                                    "one lesion per lesion label, in label order")
    density = density_map(array, [lesion.density for lesion in findings.lesions])
    meta = {"synthetic": True}
    return Layout(Volume(array, np.asarray(affine, float), meta), Volume(density, np.asarray(affine, float), meta),
                  findings, [], {"source": "user"})


def layout_tensors(layouts: list[Layout], factor: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(channels at image resolution (B, C, X, Y, Z), channels pooled to the latent grid (B, C, x, y, z));
    (None, None) without layouts (a text-only model)."""
    if not layouts:
        return None, None
    full = torch.from_numpy(np.stack([layout.channels() for layout in layouts])).to(device)
    return full, pool_layout(full, factor)


def read_reports(reader, reports: list[str]) -> list:
    """The reader's `ReadResult` per report, its warnings also raised as `ReaderWarning`s; [] without a reader."""
    if reader is None:
        return []
    import warnings

    from medgen.reader import ReaderWarning

    readings = reader.read_batch(reports)
    for i, reading in enumerate(readings):
        for message in reading.warnings:
            warnings.warn(f"report {i}: {message}" if len(reports) > 1 else message, ReaderWarning, stacklevel=5)
    return readings


def reading_record(reading, layout: Layout | None) -> dict:
    """Provenance of what a volume was asked to show: the reader's findings and warnings, and the layout
    (whose findings, with lesion centres, take the place of the reader's)."""
    out = {}
    if reading is not None:
        out.update(findings=reading.findings.to_dict(), reader_warnings=list(reading.warnings))
    if layout is not None:
        out.update(findings=layout.findings.to_dict(), layout=layout.to_dict())
    return out


class LayoutWarning(UserWarning):
    """A finding could not be laid out as asked (outside its aerated lobe, outside the field of view)."""


def check_layout_inputs(pipe, report, findings, layout) -> tuple[Findings | None, Volume | None]:
    """Check `findings` / `layout` arguments before any work; returns them as `Findings` / `Volume`.

    Raises:
        ValueError: findings or a layout for a text-only model or a batch, no report and no findings.
        FindingsError / InputFileError: findings or a layout file that cannot be read.
    """
    if findings is None and layout is None:
        if pipe.layout_grounded and pipe.reader is None:
            raise ValueError("this layout-grounded model has no report reader: pass `findings` (or a model "
                             "folder with reader/)")
        return None, None
    if not pipe.layout_grounded:
        raise ValueError("`findings` / `layout` need a layout-grounded model; this one is text-only")
    if isinstance(report, (list, tuple)):
        raise ValueError("`findings` / `layout` go with one report at a time, not a batch")
    if findings is not None and not isinstance(findings, Findings):
        findings = Findings.from_dict(findings) if isinstance(findings, dict) else None
        if findings is None:
            raise ValueError("`findings` must be a medgen Findings or its dict")
    if findings is not None:
        check_lesion_count(findings)  # before a report is written from them (it would be too long to read)
    if layout is not None and not isinstance(layout, Volume):
        from medgen.io import load_nifti

        path = layout
        layout = load_nifti(path)
        layout.meta["path"] = str(path)
    if report is None and findings is None:
        raise ValueError("give a report or findings to go with the layout")
    return findings, layout


def check_layout_shape(pipe, shape) -> None:
    """Layout-grounded models decode whole volumes (the anatomy-aware decoder is not tiled yet): refuse a grid
    whose latent exceeds the pipeline's decode tile, before any work."""
    tile = pipe.config.get("decode_tile")
    if pipe.layout_grounded and tile and any(s // pipe.latent_factor > int(tile) for s in shape):
        limit = int(tile) * pipe.latent_factor
        raise ValueError(f"`shape` {tuple(shape)} is larger than this layout-grounded model decodes in one piece "
                         f"({limit} voxels per axis); ask for at most {limit}")


def report_from_findings(findings: Findings) -> str:
    """The text condition for findings given without a report: a structured English report written from them."""
    from medgen.reports.writer import write_report

    definite = Findings.from_dict(findings.to_dict())
    for item in (*definite.lesions, definite.effusion, definite.emphysema):
        if item is not None:
            item.certainty = "definite"
    return write_report(definite, language="en", rng=np.random.default_rng(0), family="en.sectioned").text


def lay_out(pipe, request, readings: list, encoding) -> list[Layout]:
    """`Layout` of each report of a request (warnings raised as `LayoutWarning` and kept in the layout)."""
    import warnings

    out = []
    for i in range(len(request.reports)):
        reading = readings[i] if readings else None
        density = request.densities[i] if request.densities is not None else None
        findings = findings_for(reading, request.findings, density)
        if request.layout is not None:
            affine = _output_affine(request)
            layout = user_layout(request.layout, findings, shape=request.shape, spacing=request.spacing, affine=affine)
        else:
            layout = plan_layout(findings, shape=request.shape, spacing=request.spacing, seed=request.seed + i,
                                 pooled_embedding=encoding.pooled[i].float().cpu().numpy(), bank=pipe.anatomy_bank)
        for message in layout.warnings:
            warnings.warn(message, LayoutWarning, stacklevel=5)
        out.append(layout)
    return out


def _output_affine(request) -> np.ndarray:
    from medgen.volume import make_affine

    return make_affine(request.shape, request.spacing)


def unet_density(request, layouts: list[Layout]):
    """The UNet's density condition: the explicit densities, else (layout models) each report's lesion density
    from its findings' words (NaN = unknown when there is no lesion), else None (text-only: unknown)."""
    if request.densities is not None:
        return torch.tensor([np.nan if d is None else d for d in request.densities], dtype=torch.float32)
    if not layouts:
        return None
    values = [layout.findings.mean_lesion_density for layout in layouts]
    return torch.tensor([np.nan if v is None else v for v in values], dtype=torch.float32)
