"""A MAISI folder on disk: which files it must hold, its configs, and its networks built with MONAI's own
MAISI classes and loaded with ``torch.load(weights_only=True)`` (nothing is ever unpickled).

Folder layout (NV-Generate-CTMR's, what ``medgen models fetch maisi --out DIR`` writes)::

    DIR/configs/config_network_rflow.json     network definitions (or config_network_ddpm.json for ddpm-ct)
    DIR/configs/config_infer.json             optional: steps, VAE sliding-window size/overlap, tp splits
    DIR/configs/label_dict.json               the label dictionary (must match medgen's copy)
    DIR/configs/image_median_statistics_ct.json   optional: per-organ HU ranges of real CT (quality check)
    DIR/models/autoencoder_v1.pt              VAE
    DIR/models/diff_unet_3d_rflow-ct.pt       diffusion UNet + "scale_factor" (ddpm-ct: diff_unet_3d_ddpm-ct.pt)
    DIR/models/controlnet_3d_rflow-ct.pt      ControlNet (ddpm-ct: controlnet_3d_ddpm-ct.pt)
    DIR/datasets/candidate_masks_flexible_size_and_spacing_4000.json  + the unzipped mask folder of that name
    DIR/LICENSE.weights                       optional: the weights' license (its first line is recorded)

Configs are read as data: ``@name`` references are resolved, ``_target_`` must name one of the MONAI classes
in `TARGETS`, and ``$`` expressions are refused (they would run code from a downloaded file).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from medgen.errors import MedgenError, ModelNotFoundError

VERSIONS = {
    "rflow-ct": {"network": "configs/config_network_rflow.json", "autoencoder": "models/autoencoder_v1.pt",
                 "diffusion": "models/diff_unet_3d_rflow-ct.pt", "controlnet": "models/controlnet_3d_rflow-ct.pt",
                 "candidates": "datasets/candidate_masks_flexible_size_and_spacing_4000.json",
                 "masks": "datasets/all_masks_flexible_size_and_spacing_4000", "steps": 30},
    "ddpm-ct": {"network": "configs/config_network_ddpm.json", "autoencoder": "models/autoencoder_v1.pt",
                "diffusion": "models/diff_unet_3d_ddpm-ct.pt", "controlnet": "models/controlnet_3d_ddpm-ct.pt",
                "candidates": "datasets/candidate_masks_flexible_size_and_spacing_3000.json",
                "masks": "datasets/all_masks_flexible_size_and_spacing_3000", "steps": 1000},
}
INFER_CONFIG = "configs/config_infer.json"
LABEL_DICT = "configs/label_dict.json"
HU_STATISTICS = "configs/image_median_statistics_ct.json"
LICENSE_FILES = ("LICENSE.weights", "LICENSE")
DEFAULT_LICENSE = "NVIDIA Open Model License (huggingface.co/nvidia/NV-Generate-CT)"
TARGETS = {
    "monai.apps.generation.maisi.networks.autoencoderkl_maisi.AutoencoderKlMaisi",
    "monai.apps.generation.maisi.networks.diffusion_model_unet_maisi.DiffusionModelUNetMaisi",
    "monai.apps.generation.maisi.networks.controlnet_maisi.ControlNetMaisi",
    "monai.networks.schedulers.rectified_flow.RFlowScheduler",
    "monai.networks.schedulers.ddpm.DDPMScheduler",
}
# NVIDIA's 80 GB settings (config_infer_80g_*.json) when the folder has no config_infer.json.
INFER_DEFAULTS = {"autoencoder_sliding_window_infer_size": [80, 80, 80],
                  "autoencoder_sliding_window_infer_overlap": 0.4, "modality": 1, "cfg_guidance_scale": 0.0}
HOW_TO_GET = ("get it with `medgen models fetch maisi --out DIR` where the internet is reachable, or by hand "
              "(docs/maisi.md: clone github.com/NVIDIA-Medtech/NV-Generate-CTMR for configs/ and download "
              "models/ and datasets/ from huggingface.co/nvidia/NV-Generate-CT)")


class MaisiConfigError(MedgenError, ValueError):
    """A MAISI config that medgen will not build (unknown class, code expression, bad reference)."""


@dataclass
class MaisiBundle:
    """A checked MAISI folder (configs read, checkpoints present but not loaded)."""

    root: Path
    version: str
    network: dict
    infer: dict
    label_dict: dict[str, int]
    files: dict[str, Path]
    license: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root) -> MaisiBundle:
        """Check a MAISI folder (configs parsed, every needed file present); reads no weights.

        Raises:
            ModelNotFoundError: no folder, or a file missing (one sentence: where and how to get it).
            MaisiConfigError: a config that is not valid JSON or a label dictionary that is not MAISI's.
        """
        root = Path(root)
        if not root.is_dir():
            raise ModelNotFoundError(f"no MAISI folder at {root}; {HOW_TO_GET}")
        version = next((v for v, f in VERSIONS.items() if (root / f["diffusion"]).is_file()), None)
        if version is None:
            wanted = " or ".join(f["diffusion"] for f in VERSIONS.values())
            raise ModelNotFoundError(f"{root} holds no MAISI diffusion checkpoint ({wanted}); {HOW_TO_GET}")
        spec = VERSIONS[version]
        files = {key: root / spec[key] for key in ("network", "autoencoder", "diffusion", "controlnet")}
        files["label_dict"] = root / LABEL_DICT
        missing = [str(p.relative_to(root)) for p in files.values() if not p.is_file()]
        if missing:
            raise ModelNotFoundError(f"the MAISI folder {root} lacks {', '.join(missing)}; {HOW_TO_GET}")
        for key in ("candidates", "masks"):
            files[key] = root / spec[key]
        for key, rel in (("infer", INFER_CONFIG), ("hu_statistics", HU_STATISTICS)):
            if (root / rel).is_file():
                files[key] = root / rel
        network = _read_json(files["network"])
        infer = {**INFER_DEFAULTS, "num_inference_steps": spec["steps"],
                 **(_read_json(files["infer"]) if "infer" in files else {})}
        label_dict = _read_json(files["label_dict"])
        _check_label_dict(label_dict, files["label_dict"])
        return cls(root, version, network, infer, label_dict, files, _license(root))

    @property
    def num_inference_steps(self) -> int:
        return int(self.infer["num_inference_steps"])

    def network_def(self, key: str, device_type: str = "cuda") -> dict:
        """The resolved constructor config of one network (``autoencoder_def``, ``diffusion_unet_def``,
        ``controlnet_def``, ``noise_scheduler``), with NVIDIA's inference overrides and, off a GPU, flash
        attention and fp16 normalisation switched off (they need CUDA)."""
        if key not in self.network:
            raise MaisiConfigError(f"{self.files['network']}: no `{key}` entry")
        spec = resolve_config(self.network, self.network[key])
        if key == "autoencoder_def" and "autoencoder_tp_num_splits" in self.infer:
            spec["num_splits"] = int(self.infer["autoencoder_tp_num_splits"])
        if device_type != "cuda":
            for name in ("use_flash_attention", "norm_float16"):
                if name in spec:
                    spec[name] = False
        return spec


def resolve_config(root: dict, value):
    """A config value with every ``"@name"`` replaced by ``root[name]`` (recursively); ``$`` refused."""
    if isinstance(value, str):
        if value.startswith("$"):
            raise MaisiConfigError(f"config expression {value[:40]!r} is code; medgen reads configs as data only")
        if value.startswith("@"):
            name = value[1:]
            if name not in root:
                raise MaisiConfigError(f"config reference {value!r} names no entry")
            return resolve_config(root, root[name])
        return value
    if isinstance(value, dict):
        return {k: resolve_config(root, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_config(root, v) for v in value]
    return copy.deepcopy(value)


def instantiate(spec: dict):
    """Build ``spec["_target_"](**rest)`` for one of the allowed MONAI classes."""
    import importlib

    spec = dict(spec)
    target = spec.pop("_target_", None)
    if target not in TARGETS:
        raise MaisiConfigError(f"config class {target!r} is not one of MAISI's networks or schedulers")
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**spec)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MaisiConfigError(f"{path}: not a readable JSON config ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise MaisiConfigError(f"{path}: expected a JSON object")
    return data


def _check_label_dict(label_dict: dict, path: Path) -> None:
    from medgen.maisi_labels import MAISI_LABELS

    changed = sorted(k for k, v in MAISI_LABELS.items() if label_dict.get(k) != v)
    if changed:
        raise MaisiConfigError(f"{path}: label dictionary differs from MAISI's CT dictionary medgen targets "
                               f"(e.g. {changed[0]!r}); use the rflow-ct / ddpm-ct configs/label_dict.json")


def _license(root: Path) -> dict:
    from medgen.io.weights import sha256_file

    for name in LICENSE_FILES:
        path = root / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
            first = next((line.lstrip("\ufeff") for line in lines if line), "")
            return {"name": first[:120] or DEFAULT_LICENSE, "file": name, "sha256": sha256_file(path)}
    return {"name": DEFAULT_LICENSE, "file": None}
