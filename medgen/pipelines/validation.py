"""Input checks for the text-to-volume pipeline and the `medgen generate` CLI.

Every check raises one clear sentence (``ValueError`` or a `MedgenError`) naming the bad value, and runs
before any model work, so a bad request never leaves a half-written output behind.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from pathlib import Path

import numpy as np

from medgen.errors import InputFileError
from medgen.volume import CT_HU_RANGE, check_density

MAX_REPORT_CHARS = 20_000
# A report is rejected as binary when more than this fraction of its characters are control/unassigned.
MAX_UNPRINTABLE_FRACTION = 0.1
_ALLOWED_CONTROLS = frozenset("\n\r\t")
MAX_SEED = 2**63 - 1
MAX_STEPS = 1000  # sampler steps: the noise schedules have 1000 training timesteps
MAX_GUIDANCE = 50.0  # guidance weights; the models are run at 1-4, and far larger ones overflow to NaN
MAX_MARGIN_MM = 100.0  # an edit's regenerated margin (the default model's field of view is 320 mm)


def check_report(report, name: str = "report") -> str:
    """A non-empty, printable text of at most `MAX_REPORT_CHARS` characters; returned unchanged."""
    if not isinstance(report, str):
        raise ValueError(f"`{name}` must be a string, got {type(report).__name__}")
    if not report.strip():
        raise ValueError(f"`{name}` is empty: give the radiology report text")
    if len(report) > MAX_REPORT_CHARS:
        raise ValueError(f"`{name}` has {len(report)} characters; the limit is {MAX_REPORT_CHARS}")
    if "\x00" in report:
        raise ValueError(f"`{name}` contains NUL characters: it looks like binary data, not text")
    unprintable = sum(
        1 for ch in report if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch).startswith("C")
    )
    if unprintable > MAX_UNPRINTABLE_FRACTION * len(report):
        raise ValueError(
            f"`{name}` is mostly non-printable ({unprintable} of {len(report)} characters): "
            "it looks like binary data, not text"
        )
    return report


def check_reports(report) -> list[str]:
    """One report (str) or a non-empty list of reports -> list of checked reports."""
    if isinstance(report, str):
        return [check_report(report)]
    if not isinstance(report, (list, tuple)) or not report:
        raise ValueError(f"`report` must be a string or a non-empty list of strings, got {report!r:.80}")
    return [check_report(r, f"report[{i}]") for i, r in enumerate(report)]


def read_report_file(path) -> str:
    """Read a UTF-8 report file; binary, oversized or undecodable files raise `InputFileError`."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "report file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size > 4 * MAX_REPORT_CHARS + 4:  # UTF-8 needs at most 4 bytes a character
        raise InputFileError(path, f"report file is too large (the limit is {MAX_REPORT_CHARS} characters)")
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputFileError(path, "contains NUL bytes: it is a binary file, not a text report")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputFileError(path, f"not valid UTF-8 text (byte {err.start}): is it a binary file?") from None
    try:
        return check_report(text)
    except ValueError as err:
        raise InputFileError(path, str(err)) from None


def check_densities(density, batch: int) -> list[float | None] | None:
    """`density`: None, one value for the whole batch, or one value (or None = unknown) per report."""
    if density is None:
        return None
    if isinstance(density, (list, tuple)):
        if len(density) != batch:
            raise ValueError(f"`density` has {len(density)} values for {batch} reports")
        values = [check_density(d) for d in density]
        return None if all(v is None for v in values) else values
    return [check_density(density)] * batch


def check_positive_int(value, name: str, maximum: int | None = None) -> int:
    """An integer > 0 (and <= `maximum`); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be at most {maximum}, got {value}")
    return int(value)


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None) -> float:
    """A finite real number in [`minimum`, `maximum`] (and > `above`); bools, strings, NaN and inf are refused.

    The numeric options of `generate`, `edit`, `preview` and `describe` and of their Python API go through here
    (directly or by the checks below), so a NaN or an absurd value is refused in one sentence before any work."""
    parts = [f"> {above:g}" if above is not None else None, f">= {minimum:g}" if minimum is not None else None,
             f"<= {maximum:g}" if maximum is not None else None]
    bounds = " and ".join(p for p in parts if p)
    if minimum is not None and maximum is not None and above is None:
        bounds = f"in [{minimum:g}, {maximum:g}]"
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and value <= above)):
        raise ValueError(f"`{name}` must be a finite number {bounds}".rstrip() + f", got {value!r}")
    return float(value)


def check_guidance(value, name: str) -> float:
    """A guidance weight in [0, `MAX_GUIDANCE`] (1.0 = conditional only, no extra branch)."""
    return check_number(value, name, minimum=0.0, maximum=MAX_GUIDANCE)


def check_margin_mm(value, name: str = "margin_mm") -> float:
    """An edit's regenerated margin in mm: > 0 and at most `MAX_MARGIN_MM`."""
    return check_number(value, name, above=0.0, maximum=MAX_MARGIN_MM)


def check_steps(value, name: str = "num_inference_steps") -> int:
    """Sampler steps: an integer in [1, `MAX_STEPS`]."""
    return check_positive_int(value, name, maximum=MAX_STEPS)


def check_ct_hu(array, where="the CT") -> np.ndarray:
    """A CT's voxels as float32 HU: finite and inside `CT_HU_RANGE` (what CT scanners store); refused otherwise
    (scaled or raw stored values would be clipped by the edit, not edited)."""
    hu = np.asarray(array, np.float32)
    bad = int(np.size(hu) - np.count_nonzero(np.isfinite(hu)))
    if bad:
        raise InputFileError(where, f"holds {bad} non-finite voxel(s) (NaN or inf); expected HU")
    lo, hi = (float(hu.min()), float(hu.max())) if hu.size else (0.0, 0.0)
    if lo < CT_HU_RANGE[0] or hi > CT_HU_RANGE[1]:
        raise InputFileError(where, f"values run from {lo:g} to {hi:g}, outside the CT range "
                                    f"[{CT_HU_RANGE[0]:g}, {CT_HU_RANGE[1]:g}] HU: is it in HU (rescale slope and "
                                    "intercept applied)?")
    return hu


def check_lesion_count(findings, where="findings"):
    """`findings` (as given), refused when they hold more lesions than a layout can (`MAX_LESIONS`)."""
    from medgen.layout.labels import MAX_LESIONS

    if len(findings.lesions) > MAX_LESIONS:
        raise InputFileError(where, f"holds {len(findings.lesions)} lesions; a layout holds at most {MAX_LESIONS}")
    return findings


def check_label_map(array, where="label map") -> np.ndarray:
    """A label map's voxels as uint8: finite non-negative integers up to 255; refused otherwise (a CT, a
    probability map or a NaN-filled file given as a label map)."""
    values = np.asarray(array)
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise InputFileError(where, f"holds {bad} non-finite voxel(s) (NaN or inf); a label map holds "
                                        "non-negative integer labels")
        if not np.allclose(values, np.rint(values)):
            raise InputFileError(where, "label values must be non-negative integers (a label map), got "
                                        "fractional values")
        values = np.rint(values)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise InputFileError(where, f"label values must be non-negative integers up to 255 (a label map), got "
                                    f"{values.min():g} to {values.max():g}")
    return values.astype(np.uint8)


def check_seed(seed) -> int:
    """An integer in [0, 2**63 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"`seed` must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def check_shape(shape, factor: int) -> tuple[int, int, int]:
    """(X, Y, Z) positive voxel counts, each divisible by the latent downsampling `factor`."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"`shape` must be three positive integers (X, Y, Z), got {shape!r}") from None
    if len(dims) != 3 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in dims):
        raise ValueError(f"`shape` must be three positive integers (X, Y, Z), got {shape!r}")
    if any(s % factor for s in dims):
        raise ValueError(f"`shape` must be divisible by the latent factor {factor} on every axis, got {dims}")
    return tuple(int(s) for s in dims)


def check_spacing(spacing) -> tuple[float, float, float]:
    """One positive spacing (isotropic) or three, in mm."""
    values = (spacing,) * 3 if isinstance(spacing, numbers.Real) else spacing
    try:
        values = tuple(float(s) for s in values)
    except (TypeError, ValueError):
        raise ValueError(f"`spacing` must be one or three positive numbers (mm), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"`spacing` must be one or three positive numbers (mm), got {spacing!r}")
    return values


def check_device(device):
    """'cpu', 'cuda', 'cuda:N' (or a `torch.device`) that exists on this machine -> `torch.device`."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"`device` must be 'cpu' or 'cuda[:N]', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} requested but CUDA is not available on this machine; use 'cpu'")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"`device` {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev
