"""`medgen models fetch maisi --out DIR`: download NVIDIA MAISI (rflow-ct) into the folder layout medgen reads.

Configs and the weights' license come from github.com/NVIDIA-Medtech/NV-Generate-CTMR, checkpoints and the
candidate mask database from huggingface.co/nvidia/NV-Generate-CT (``huggingface_hub``). Everything lands in a
staging folder first and is moved into DIR only when every file arrived; without the internet the command
fails in one line that says how to download by hand (docs/maisi.md).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import zipfile
from pathlib import Path

from medgen.errors import MedgenError

HF_REPO = "nvidia/NV-Generate-CT"
GITHUB_RAW = "https://raw.githubusercontent.com/NVIDIA-Medtech/NV-Generate-CTMR/main/"
CONFIG_FILES = ("configs/config_network_rflow.json", "configs/config_infer.json", "configs/label_dict.json",
                "configs/image_median_statistics_ct.json", "LICENSE.weights")
HF_FILES = ("models/autoencoder_v1.pt", "models/diff_unet_3d_rflow-ct.pt", "models/controlnet_3d_rflow-ct.pt")
HF_MASK_FILES = ("datasets/candidate_masks_flexible_size_and_spacing_4000.json",
                 "datasets/all_masks_flexible_size_and_spacing_4000.zip")
BY_HAND = ("download by hand: `git clone https://github.com/NVIDIA-Medtech/NV-Generate-CTMR` and copy its configs/ "
           "and LICENSE.weights into DIR, then `huggingface-cli download nvidia/NV-Generate-CT "
           + " ".join(HF_FILES + HF_MASK_FILES) + " --local-dir DIR` and unzip DIR/datasets/*.zip there "
           "(docs/maisi.md)")


class FetchError(MedgenError):
    """A download that did not complete (no network, a missing file upstream)."""


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="download third-party model weights (MAISI)",
                              description="Download third-party models into the folder layout medgen reads.")
    sub = p.add_subparsers(dest="models_command", required=True)
    f = sub.add_parser("fetch", help="download a model", description="Download a model (needs the internet).")
    f.add_argument("name", choices=("maisi",), help="maisi: NVIDIA MAISI rflow-ct (configs, weights, candidate masks)")
    f.add_argument("--out", metavar="DIR", type=Path, required=True, help="folder to write (created)")
    f.add_argument("--no-masks", action="store_true",
                   help="skip the candidate mask database (~GBs); then generate needs --anatomy SEG.nii.gz")
    f.add_argument("--overwrite", action="store_true", help="replace files already in DIR")
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out
    if out.exists() and not out.is_dir():
        raise MedgenError(f"{out}: exists and is not a folder")
    files = [*CONFIG_FILES, *HF_FILES, *(() if args.no_masks else HF_MASK_FILES)]
    clash = [f for f in files if (out / f).exists()]
    if clash and not args.overwrite:
        raise MedgenError(f"{out / clash[0]} already exists; pass --overwrite to replace the MAISI files in {out}")
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    stage = out / ".medgen-fetch"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        fetch_maisi(stage, masks=not args.no_masks)
        for rel in [p.relative_to(stage) for p in stage.rglob("*") if p.is_file() and ".cache" not in p.parts]:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stage / rel), str(out / rel))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # the folders this call made, innermost first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    print(out)
    return 0


def fetch_maisi(stage: Path, *, masks: bool = True) -> None:
    """Download every MAISI file into `stage` (FetchError in one sentence when anything fails)."""
    import os
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise FetchError(f"cannot download MAISI: HF_HUB_OFFLINE is set; {BY_HAND}")
    try:
        for rel in CONFIG_FILES:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(GITHUB_RAW + rel, timeout=30) as response:  # noqa: S310 (fixed https URL)
                (stage / rel).write_bytes(response.read())
        from huggingface_hub import hf_hub_download

        for rel in [*HF_FILES, *(HF_MASK_FILES if masks else ())]:
            hf_hub_download(HF_REPO, rel, local_dir=str(stage))
    except Exception as err:  # no network, DNS, HTTP errors, a file moved upstream: one line, no traceback
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise FetchError(f"cannot download MAISI ({type(err).__name__}: {first}); {BY_HAND}") from None
    for archive in (stage / "datasets").glob("*.zip") if masks else ():
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(stage / "datasets")
        archive.unlink()
