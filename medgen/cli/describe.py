"""`medgen describe VOLUME`: what the LLaVA-style slice reader sees on the volume's key axial slices.

    medgen describe volumes/demo.nii.gz [--labels demo_labels.nii.gz] [--out demo_described.json]

Prints one sentence; with --out writes the per-slice answers and the summary as JSON. A ``<name>_labels.nii.gz``
beside the volume (as `medgen generate` writes) is used to pick the key slice unless --no-labels.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("describe", help="read a CT volume's key slices with the slice reader (text + JSON)")
    p.add_argument("volume", type=Path, help="NIfTI file or DICOM folder")
    p.add_argument("--labels", type=Path, help="label map to pick the key slice (default: <name>_labels.nii.gz)")
    p.add_argument("--no-labels", action="store_true", help="ignore any label map: spread slices over the lungs")
    p.add_argument("--n-slices", type=int, default=8, help="axial slices to read (default 8, at most 64)")
    p.add_argument("--language", choices=("en", "zh"), default="en")
    p.add_argument("--out", type=Path, help="write the description JSON here")
    p.add_argument("--model", type=Path, help="slice reader folder (default: the embedded one)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from medgen.errors import InputFileError, ModelNotFoundError
    from medgen.io import load_volume
    from medgen.io.atomic import atomic_path, check_output_path
    from medgen.pipelines.default_model import default_model_path
    from medgen.pipelines.validation import check_ct_hu, check_label_map, check_positive_int
    from medgen.slices.describer.describe import MAX_SLICES, default_labels_path, describe_volume
    from medgen.slices.describer.model import SliceReader

    # 1. Check every input and output before loading the model.
    if args.out is not None:
        check_output_path(args.out, args.overwrite)
    check_positive_int(args.n_slices, "n-slices", maximum=MAX_SLICES)
    volume = load_volume(args.volume)
    check_ct_hu(volume.array, args.volume)
    labels_path = None if args.no_labels else (args.labels or default_labels_path(args.volume))
    labels = load_volume(labels_path) if labels_path is not None else None
    if labels is not None:
        check_label_map(labels.array, labels_path)  # the check `generate --layout` makes
        if labels.shape != volume.shape:
            raise InputFileError(labels_path, f"label map shape {labels.shape} is not the volume's {volume.shape}")
    folder = args.model or default_model_path() / "slice_reader"
    if args.model is None and not folder.is_dir():
        raise ModelNotFoundError(f"the embedded slice reader is not installed (looked in {folder}); pass --model DIR")
    reader = SliceReader.from_pretrained(folder)
    description = describe_volume(reader, volume, labels=labels, n_slices=args.n_slices, language=args.language)
    if args.out is not None:
        with atomic_path(args.out, overwrite=True) as tmp:
            tmp.write_text(json.dumps(description.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(description.text)
    return 0
