"""Latent cache: every train/val volume encoded once by the trained VAE, for LDM training.

``<output_dir>/latents/``::

    latents.safetensors   "train": (N, C, *S) and "val": (M, C, *S) float32 = VAE posterior mean x scale_factor;
                          with a layout-aware VAE also "train_layout" / "val_layout": (N, L, *S) float16, the
                          layout channels average-pooled to the latent grid (what the UNet joins to its input)
    index.json            {"key": ..., "scale_factor": ..., "splits": {"train": [{id, report, density, language}], ...}}

``key`` hashes the autoencoder (config + weights), the manifest file and the data settings; `cache_latents`
reuses a cache whose key matches and re-encodes otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medgen.config import resolve_path
from medgen.engine.distributed import DistContext, init_distributed
from medgen.io.atomic import atomic_dir

__all__ = ["LatentDataset", "cache_key", "cache_latents", "collate_latents", "load_latents", "read_index"]

SPLITS = ("train", "val")
ROW_KEYS = ("id", "report", "density", "language", "findings")


def _sha256(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h


def cache_key(config: dict, autoencoder_dir: Path) -> str:
    """Hash of the autoencoder folder (config.json + weights), the manifest file, the data settings and, for a
    layout-aware autoencoder, every layout label map."""
    h = hashlib.sha256()
    for f in sorted(autoencoder_dir.glob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors"):
            h.update(f.name.encode())
            _sha256(f, h)
    _sha256(resolve_path(config["data"]["manifest"], config, must_exist=True), h)
    data = {k: v for k, v in config["data"].items() if k in ("shape", "spacing", "hu_window")}
    data["layout"] = "label_nc" in config.get("autoencoder", {})
    if data["layout"]:  # the layout maps are files of their own: a re-made layout must re-encode
        from medgen.dataset.manifest import read_manifest

        for row in read_manifest(resolve_path(config["data"]["manifest"], config, must_exist=True)):
            if row.get("layout"):
                _sha256(Path(row["layout"]), h)
    h.update(json.dumps(data, sort_keys=True).encode())
    return h.hexdigest()[:16]


def read_index(path) -> dict:
    """The ``index.json`` of a cache folder."""
    return json.loads((Path(path) / "index.json").read_text(encoding="utf-8"))


def load_latents(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors by split, index) of a cache folder."""
    return load_file(str(Path(path) / "latents.safetensors")), read_index(path)


def _is_fresh(path: Path, key: str) -> bool:
    try:
        return read_index(path).get("key") == key and (path / "latents.safetensors").is_file()
    except (OSError, json.JSONDecodeError):
        return False


@torch.no_grad()
def _encode_rows(config: dict, rows: list[dict], autoencoder, scale: float, device, batch_size: int,
                 progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(latents, layout channels pooled to the latent grid or None) of `rows`."""
    from medgen.dataset.transforms import DataConfig, build_dataset, collate_reports
    from medgen.layout.labels import pool_layout
    from medgen.models.autoencoder import is_layout_aware
    from medgen.training.vae import batch_layout

    layout_aware = is_layout_aware(autoencoder)
    data = {**config["data"], "cache": "none"}
    if layout_aware:
        data.update(with_label=True, label_key="layout")
    dataset = build_dataset([dict(r) for r in rows], DataConfig.from_dict(data))
    out, layouts = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress, leave=False):
        batch = collate_reports([dataset[i] for i in range(start, min(len(rows), start + batch_size))])
        x = batch["image"].as_tensor().to(device).float()
        z = autoencoder.encode(x)[0].float()
        out.append((z * scale).cpu())
        if layout_aware:
            layout = batch_layout(batch, device)
            layouts.append(pool_layout(layout, x.shape[2] // z.shape[2]).half().cpu())
    return torch.cat(out), (torch.cat(layouts) if layouts else None)


def cache_latents(config: dict, *, device=None, autoencoder_dir=None, force: bool = False, progress: bool = True,
                  ctx: DistContext | None = None) -> Path:
    """Encode the train and val splits with the trained VAE unless a fresh cache exists; return its folder.

    Under torchrun rank 0 encodes while the others wait.
    """
    from medgen.models.autoencoder import TrainedAutoencoder
    from medgen.training.vae import load_splits

    ctx = ctx or init_distributed(device)
    out_dir = resolve_path(config["output_dir"], config)
    ae_dir = Path(autoencoder_dir) if autoencoder_dir else out_dir / "autoencoder"
    path = out_dir / "latents"
    if ctx.is_main:
        key = cache_key(config, ae_dir)
        if force or not _is_fresh(path, key):
            trained = TrainedAutoencoder.from_pretrained(ae_dir, device=ctx.device)
            autoencoder, scale = trained.model, float(trained.config.get("scale_factor", 1.0))
            rows = load_splits(config)
            batch_size = int(config.get("train_vae", {}).get("batch_size", 4))
            tensors, splits = {}, {}
            for split in SPLITS:
                chosen = rows[split]
                if chosen:
                    latents, layouts = _encode_rows(config, chosen, autoencoder, scale, ctx.device, batch_size,
                                                    progress, f"encoding {split}")
                    tensors[split] = latents.contiguous()
                    if layouts is not None:
                        tensors[f"{split}_layout"] = layouts.contiguous()
                splits[split] = [{k: r.get(k) for k in ROW_KEYS} for r in chosen]
            if "train" not in tensors:
                raise ValueError(f"{config['data']['manifest']}: no rows with split 'train' to encode")
            index = {"key": key, "scale_factor": scale, "latent_shape": list(tensors["train"].shape[1:]),
                     "autoencoder": str(ae_dir), "splits": splits}
            with atomic_dir(path, overwrite=True) as tmp:
                save_file(tensors, str(tmp / "latents.safetensors"))
                (tmp / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    ctx.barrier()
    return path


class LatentDataset(Dataset):
    """Items ``{"latent": (C, *S), "report": str, "density": float (NaN = unknown), "id": str}`` of one split,
    plus ``"layout"`` (L, *S) when the cache holds layouts."""

    def __init__(self, path, split: str = "train"):
        tensors, index = load_latents(path)
        if split not in tensors:
            raise ValueError(f"{path}: the latent cache has no {split!r} split")
        self.latents = tensors[split]
        self.layouts = tensors.get(f"{split}_layout")
        self.rows = index["splits"][split]
        self.scale_factor = float(index["scale_factor"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        density = math.nan if row.get("density") is None else float(row["density"])
        item = {"latent": self.latents[i], "report": row["report"], "density": density, "id": row["id"]}
        if self.layouts is not None:
            item["layout"] = self.layouts[i].float()
        return item


def collate_latents(items: list[dict]) -> dict:
    """Stack latents (and layouts), density as a float32 tensor (NaN = unknown), reports and ids as lists."""
    out = {"latent": torch.stack([it["latent"] for it in items]),
           "density": torch.tensor([it["density"] for it in items], dtype=torch.float32),
           "report": [it["report"] for it in items], "id": [it["id"] for it in items]}
    if "layout" in items[0]:
        out["layout"] = torch.stack([it["layout"] for it in items])
    return out
