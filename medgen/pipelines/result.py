"""`GenerationResult`: one generated volume with its latent and provenance, and how it is written to disk."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgen.errors import MedgenError
from medgen.io.atomic import check_output_path, staging_dir
from medgen.io.dicom import write_dicom_series
from medgen.io.dicom_seg import SEG_NAME, write_dicom_seg
from medgen.io.nifti import is_nifti_path, save_nifti
from medgen.io.png import render_orthogonal
from medgen.io.sidecar import FOLDER_SIDECAR_NAME, sidecar_path
from medgen.volume import LUNG_WINDOW, Volume


def preview_path(nifti_path) -> Path:
    """``x.nii.gz`` / ``x.nii`` -> ``x.png``."""
    path = Path(nifti_path)
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".png")


def labels_path(nifti_path) -> Path:
    """``x.nii.gz`` -> ``x_labels.nii.gz`` (the layout label map beside the CT)."""
    path = Path(nifti_path)
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + "_labels" + path.name[len(stem):])


def findings_path(nifti_path) -> Path:
    """``x.nii.gz`` -> ``x_findings.json``."""
    return preview_path(nifti_path).with_name(preview_path(nifti_path).stem + "_findings.json")


def plan_outputs(path, *, dicom_dir=None, preview: bool = True, overwrite: bool = False, labels: bool = False,
                 findings: bool = False) -> dict[str, Path]:
    """The files `GenerationResult.save` writes, checked before any work.

    Returns ``{"nifti", "sidecar"[, "preview"][, "labels"][, "findings"][, "dicom"]} -> Path``. Raises ValueError for a name that is
    not ``.nii``/``.nii.gz``, `OutputExistsError` for an existing output without `overwrite`, and
    `MedgenError` for an output folder that is not writable or an output that is an existing folder.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"output `{path}` must end in .nii.gz or .nii")
    outputs = {"nifti": path, "sidecar": sidecar_path(path)}
    if preview:
        outputs["preview"] = preview_path(path)
    if labels:
        outputs["labels"] = labels_path(path)
    if findings:
        outputs["findings"] = findings_path(path)
    if dicom_dir is not None:
        outputs["dicom"] = _check_dicom_dir(Path(dicom_dir), outputs)
    for key, out in outputs.items():
        check_output_path(out, overwrite)
        if key != "dicom" and out.is_dir():
            raise MedgenError(f"{out}: output is an existing folder, not a file")
    return outputs


def _check_dicom_dir(dicom_dir: Path, outputs: dict[str, Path]) -> Path:
    """A DICOM output folder that holds no other output and, if it exists, only a DICOM series.

    `overwrite` replaces the whole folder, so an existing folder of anything else is refused.
    """
    if dicom_dir.exists() and not dicom_dir.is_dir():
        raise MedgenError(f"{dicom_dir}: DICOM output must be a folder, but a file is there")
    for out in outputs.values():
        if dicom_dir.resolve() in out.resolve().parents:
            raise MedgenError(f"{dicom_dir}: the DICOM folder must not contain the other outputs ({out.name})")
    if dicom_dir.is_dir():
        foreign = [p.name for p in dicom_dir.iterdir() if p.suffix.lower() != ".dcm" and p.name != FOLDER_SIDECAR_NAME]
        if foreign:
            raise MedgenError(
                f"{dicom_dir}: existing folder holds more than a DICOM series ({foreign[0]}); "
                "refusing to replace it"
            )
    return dicom_dir


@dataclass
class GenerationResult:
    """One generated CT volume.

    Args:
        volume: HU (float32) on an RAS+ grid centred on the world origin; ``volume.meta`` is `provenance`.
        latent: the denoised latent (C, x, y, z) on the CPU, before the scale factor is undone.
        provenance: report, density, seed, steps, guidance, model id and weight sha256, version, time, device.
        labels: the layout label map the volume was rendered from (layout-grounded models), same affine.
        findings: what the volume was asked to show (the reader's or the given findings, with lesion centres).
        edit_region: for an edited CT, the voxels the edit changed (bool, on the volume's grid); None otherwise.
        storage: for an edited CT, how the input NIfTI stored its voxels (``{"dtype", "slope", "inter"}``): the
            outputs keep the input's voxel order, affine, dtype and scaling. None: RAS+ int16 HU.
    """

    volume: Volume
    latent: object
    provenance: dict
    labels: Volume | None = None
    findings: object = None
    edit_region: object = None
    storage: dict | None = None

    def save(self, path, *, dicom_dir=None, preview: bool = True, overwrite: bool = False) -> dict[str, Path]:
        """Write NIfTI (int16 HU, descrip ``SYNTHETIC ...``) + sidecar JSON [+ PNG preview] [+ DICOM series]
        [+ ``x_labels.nii.gz`` layout label map] [+ ``x_findings.json``] (the last two when the result has them).

        Every output is checked before any work, everything is written to temporary names beside the
        targets first, then renamed into place: a failure leaves no partial output.

        Args:
            path: ``.nii.gz`` or ``.nii`` file; the sidecar is ``x.json`` and the preview ``x.png`` beside it.
            dicom_dir: also write a DICOM series into this folder.
            preview: write the orthogonal lung-window PNG.
            overwrite: replace existing outputs (otherwise `OutputExistsError` before any work).

        Returns:
            ``{"nifti", "sidecar"[, "preview"][, "dicom"]} -> Path`` of what was written.
        """
        outputs = plan_outputs(path, dicom_dir=dicom_dir, preview=preview, overwrite=overwrite,
                               labels=self.labels is not None, findings=self.findings is not None)
        stages: dict[Path, Path] = {}  # output folder -> private staging folder inside it (removed on SIGTERM)
        created: list[Path] = []  # output folders this call made (removed again on failure)
        cleanup = contextlib.ExitStack()

        def staged(out: Path) -> Path:
            parent = out.parent
            if parent not in stages:
                created.extend(p for p in reversed((parent, *parent.parents)) if not p.exists())
                stages[parent] = cleanup.enter_context(staging_dir(parent))
            return stages[parent] / out.name

        ct_format, label_format = {}, {}  # generated: RAS+ int16 HU
        if self.storage is not None:  # edited: the input's voxel order, affine, dtype and scaling
            label_format = {"canonical": False}
            ct_format = {"canonical": False, "dtype": self.storage["dtype"],
                         "scaling": (self.storage.get("slope", 1.0), self.storage.get("inter", 0.0))}
        try:
            files = {"nifti": staged(outputs["nifti"])}
            save_nifti(self.volume, files["nifti"], sidecar=self.provenance, descrip=self._descrip(), **ct_format)
            files["sidecar"] = sidecar_path(files["nifti"])
            if "labels" in outputs:
                files["labels"] = staged(outputs["labels"])
                save_nifti(self.labels, files["labels"], dtype=np.uint8, descrip="SYNTHETIC medgen layout labels",
                           **label_format)
            if "findings" in outputs:
                files["findings"] = staged(outputs["findings"])
                files["findings"].write_text(self.findings.to_json() + "\n", encoding="utf-8")
            if "preview" in outputs:
                files["preview"] = staged(outputs["preview"])
                render_orthogonal(self.volume, files["preview"], window=LUNG_WINDOW, title=self._title())
            if "dicom" in outputs:
                files["dicom"] = staged(outputs["dicom"])
                slices = write_dicom_series(
                    self.volume, files["dicom"], series_description=self._descrip(), provenance=self.provenance
                )
                if self.labels is not None:  # the label map as a SEG referencing those slices
                    table = (self.provenance.get("layout") or {}).get("label_table") or {}
                    write_dicom_seg(self.labels, slices, files["dicom"] / SEG_NAME, table)
            _commit([(files[key], outputs[key]) for key in outputs])
        except BaseException:
            cleanup.close()
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
            raise
        cleanup.close()
        return outputs

    def _descrip(self) -> str:
        return f"SYNTHETIC medgen {self.provenance.get('model_id') or ''} seed={self.provenance.get('seed')}"

    def _title(self) -> str:
        report = " ".join(str(self.provenance.get("report", "")).split())
        title = f"SYNTHETIC - {self.provenance.get('model_id')} - seed {self.provenance.get('seed')}"
        return f"{title} - {report[:60]}" if report.isascii() else title  # the PNG font has no CJK glyphs


def _commit(moves: list[tuple[Path, Path]]) -> None:
    """Rename staged outputs onto their targets; on failure remove what was already renamed."""
    done: list[Path] = []
    try:
        for src, dst in moves:
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(src, dst)
            done.append(dst)
    except BaseException:
        for dst in done:
            shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
        raise
