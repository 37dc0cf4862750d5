"""A tiny random-weight MAISI folder, so the whole MAISI path runs on a CPU in tests and examples.

    python -m medgen.render.maisi.standin DIR        # or: medgen.render.maisi.standin.write_standin(DIR)

Same file names and config keys as NVIDIA's rflow-ct download (`medgen.render.maisi.bundle`), with a few
channels per layer, random weights (seeded), scale factor 1, permissive HU statistics, and a small candidate
mask database built from medgen's procedural phantom mapped to MAISI ids (bone -> ``vertebrae T6``,
mediastinum -> ``heart``): one 256 x 256 x 128 chest at 1.5 x 1.5 x 2.5 mm (the exact match for that grid),
two coarser chests (chosen, and resampled, for other grids) and one with a lung tumour (always filtered out). ``medgen_standin.json``
marks the folder: everything rendered from it says "standin". Its images are noise, not CT.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from medgen.maisi_labels import LABEL_DICT_FILE, MAISI_LABELS, from_coarse
from medgen.render.maisi.bundle import HU_STATISTICS, INFER_CONFIG, LABEL_DICT, VERSIONS
from medgen.render.maisi.renderer import STANDIN_MARKER

_AE = "monai.apps.generation.maisi.networks.autoencoderkl_maisi.AutoencoderKlMaisi"
_UNET = "monai.apps.generation.maisi.networks.diffusion_model_unet_maisi.DiffusionModelUNetMaisi"
_CN = "monai.apps.generation.maisi.networks.controlnet_maisi.ControlNetMaisi"
_SCHED = "monai.networks.schedulers.rectified_flow.RFlowScheduler"
_UNET_COMMON = {"spatial_dims": "@spatial_dims", "in_channels": "@latent_channels", "num_channels": [4, 4, 4, 8],
                "attention_levels": [False, False, False, True], "num_head_channels": [0, 0, 0, 4],
                "num_res_blocks": 1, "norm_num_groups": 4, "use_flash_attention": True, "num_class_embeds": 128,
                "resblock_updown": True, "include_fc": True}
NETWORK = {
    "spatial_dims": 3, "image_channels": 1, "latent_channels": 4, "include_body_region": False,
    "autoencoder_def": {"_target_": _AE, "spatial_dims": "@spatial_dims", "in_channels": "@image_channels",
                        "out_channels": "@image_channels", "latent_channels": "@latent_channels",
                        "num_channels": [4, 4, 4], "num_res_blocks": [1, 1, 1], "norm_num_groups": 4,
                        "norm_eps": 1e-06, "attention_levels": [False, False, False],
                        "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False,
                        "use_checkpointing": False, "use_convtranspose": False, "norm_float16": True,
                        "num_splits": 2, "dim_split": 1},
    "diffusion_unet_def": {"_target_": _UNET, **_UNET_COMMON, "out_channels": "@latent_channels",
                           "include_top_region_index_input": "@include_body_region",
                           "include_bottom_region_index_input": "@include_body_region", "include_spacing_input": True},
    "controlnet_def": {"_target_": _CN, **_UNET_COMMON, "conditioning_embedding_in_channels": 8,
                       "conditioning_embedding_num_channels": [4, 4, 4]},
    "noise_scheduler": {"_target_": _SCHED, "num_train_timesteps": 1000, "use_discrete_timesteps": False,
                        "use_timestep_transform": True, "sample_method": "uniform", "scale": 1.4},
}
INFER = {"num_inference_steps": 30, "autoencoder_sliding_window_infer_size": [64, 64, 64],
         "autoencoder_sliding_window_infer_overlap": 0.4, "modality": 1, "cfg_guidance_scale": 0.0}
_WIDE = {"min_median": -1000.0, "max_median": 1000.0, "percentile_0_5": -1000.0, "percentile_99_5": 1000.0,
         "sigma_6_low": -1000.0, "sigma_6_high": 1000.0, "sigma_12_low": -1000.0, "sigma_12_high": 1000.0}
# (file, shape, spacing, phantom seed, add a lung tumour)
MASKS = (("standin_chest_0.nii.gz", (256, 256, 128), (1.5, 1.5, 2.5), 0, False),
         ("standin_chest_1.nii.gz", (160, 160, 80), (2.4, 2.4, 4.0), 1, False),
         ("standin_chest_2.nii.gz", (160, 160, 160), (2.4, 2.4, 2.0), 2, False),
         ("standin_tumour.nii.gz", (160, 160, 80), (2.4, 2.4, 4.0), 3, True))


def phantom_mask(shape, spacing, seed: int, tumour: bool = False) -> np.ndarray:
    """uint8 MAISI-id chest label map from medgen's procedural phantom (no findings) on that grid."""
    from medgen.findings import Findings, Lesion
    from medgen.phantom.chest import make_phantom_with_tissues

    findings = Findings(lesions=[Lesion("right_upper", 20.0, 0.9)]) if tumour else Findings()
    case, _ = make_phantom_with_tissues(findings, shape=shape, spacing=spacing, seed=int(seed))
    coarse = np.asarray(case.labels.array).astype(np.uint8)
    return from_coarse(coarse, fallback={"bone": MAISI_LABELS["vertebrae T6"], "mediastinum": MAISI_LABELS["heart"]})


def write_standin(root, *, seed: int = 0, masks: bool = True) -> Path:
    """Write the stand-in MAISI folder at `root` (created; existing files replaced) and return its path."""
    import torch

    from medgen.io.nifti import save_nifti
    from medgen.render.maisi.bundle import instantiate, resolve_config
    from medgen.volume import Volume, make_affine

    root = Path(root)
    spec = VERSIONS["rflow-ct"]
    for sub in ("configs", "models", "datasets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / spec["network"]).write_text(json.dumps(NETWORK, indent=2) + "\n", encoding="utf-8")
    (root / INFER_CONFIG).write_text(json.dumps(INFER, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(LABEL_DICT_FILE, root / LABEL_DICT)
    stats = {k: dict(_WIDE) for k in ("liver", "spleen", "pancreas", "kidney", "lung", "bone", "brain")}
    (root / HU_STATISTICS).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (root / "LICENSE.weights").write_text("medgen stand-in: random weights, not NVIDIA MAISI (tests only)\n",
                                          encoding="utf-8")
    (root / STANDIN_MARKER).write_text(json.dumps({"standin": True, "seed": int(seed)}) + "\n", encoding="utf-8")
    torch.manual_seed(int(seed))

    def build(key):
        definition = resolve_config(NETWORK, NETWORK[key])
        definition["use_flash_attention"] = False
        definition.pop("norm_float16", None)
        return instantiate(definition)

    autoencoder, unet, controlnet = build("autoencoder_def"), build("diffusion_unet_def"), build("controlnet_def")
    torch.save(autoencoder.state_dict(), root / spec["autoencoder"])
    torch.save({"unet_state_dict": unet.state_dict(), "scale_factor": torch.tensor(1.0)}, root / spec["diffusion"])
    torch.save({"controlnet_state_dict": controlnet.state_dict()}, root / spec["controlnet"])
    if masks:
        folder = root / spec["masks"]
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for name, shape, spacing, mask_seed, tumour in MASKS:
            labels = phantom_mask(shape, spacing, mask_seed, tumour)
            save_nifti(Volume(labels, make_affine(shape, spacing), {}), folder / name, dtype=np.uint8,
                       descrip="SYNTHETIC medgen stand-in MAISI mask")
            present = sorted(int(v) for v in np.unique(labels) if v > 0)
            entries.append({"pseudo_label_filename": f"./{name}", "dim": list(shape), "spacing": list(spacing),
                            "label_list": present, "top_region_index": [0, 1, 0, 0],
                            "bottom_region_index": [0, 1, 0, 0]})
        (root / spec["candidates"]).write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return root


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m medgen.render.maisi.standin DIR   (writes a tiny random-weight MAISI folder)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    print(write_standin(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
