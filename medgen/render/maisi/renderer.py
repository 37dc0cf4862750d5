"""`MaisiRenderer`: a MAISI-id label map -> CT in HU with NVIDIA MAISI's networks, plus what MAISI cannot draw.

    renderer = MaisiRenderer("models/maisi", device="cuda")
    renderer.check_grid((512, 512, 256), (0.75, 0.75, 1.25))   # before any weights load
    hu = renderer.render(layout.labels, density=layout.density, seed=0)
    hu.meta["maisi"]   # what was done: steps, attempts, per-organ check, lesion calibration, effusion, emphysema

The grid is checked first; weights load on the first render. medgen's own ids are not MAISI's: the
ControlNet sees pleural fluid (210) as body (200) and emphysematous lung (211) as its lobe, then
`medgen.render.maisi.compose` paints them (and calibrates each lesion to its density target) after decoding.
A failed per-organ HU check draws new noise (seed + 1000 k) up to `quality_retries` more times, as NVIDIA's
sampler does; the last try is kept and the failure recorded and warned about.
"""

from __future__ import annotations

import json
import time

import numpy as np

from medgen.maisi_labels import (
    BODY_ID,
    LOBE_IDS,
    LUNG_TUMOR_ID,
    MEDGEN_EFFUSION_ID,
    MEDGEN_EMPHYSEMA_ID,
)
from medgen.render.maisi import compose
from medgen.render.maisi.bundle import MaisiBundle
from medgen.render.maisi.grid import check_maisi_grid
from medgen.volume import Volume

STANDIN_MARKER = "medgen_standin.json"


def condition_labels(labels: np.ndarray) -> np.ndarray:
    """The ControlNet's label map: medgen's effusion id -> body, emphysema id -> the nearest lobe's id."""
    cond = np.asarray(labels).astype(np.uint8).copy()
    cond[cond == MEDGEN_EFFUSION_ID] = BODY_ID
    emph = cond == MEDGEN_EMPHYSEMA_ID
    if emph.any():
        from scipy.ndimage import distance_transform_edt

        step = 4  # nearest lobe on a 4x coarser grid: bounded memory on 512 x 512 x 768
        coarse = cond[::step, ::step, ::step]
        lobes = np.isin(coarse, list(LOBE_IDS.values()))
        if not lobes.any():
            cond[emph] = BODY_ID
        else:
            _, idx = distance_transform_edt(~lobes, return_indices=True)
            nearest = coarse[tuple(idx)]
            where = np.nonzero(emph)
            cond[where] = nearest[tuple(np.minimum(w // step, s - 1) for w, s in zip(where, nearest.shape, strict=True))]
    return cond


def _grid_of(volume: Volume):
    spacing = tuple(float(s) for s in np.abs(np.diag(volume.affine)[:3]))
    return tuple(int(s) for s in np.asarray(volume.array).shape), spacing


class MaisiRenderer:
    """NVIDIA MAISI (rflow-ct / ddpm-ct) behind medgen's `Renderer` interface.

    Args:
        root: a MAISI folder (`medgen.render.maisi.bundle`); checked now, weights load on first use.
        device: "cpu" or "cuda[:N]".
    """

    name = "maisi"

    def __init__(self, root, device="cpu"):
        self.bundle = MaisiBundle.open(root)
        self.device = str(device)
        self._networks = None
        marker = self.bundle.root / STANDIN_MARKER
        self.standin = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
        stats = self.bundle.files.get("hu_statistics")
        self.hu_statistics = json.loads(stats.read_text(encoding="utf-8")) if stats else None

    @property
    def model_id(self) -> str:
        return f"maisi-{self.bundle.version}" + ("-standin" if self.standin else "")

    @staticmethod
    def check_grid(shape, spacing):
        return check_maisi_grid(shape, spacing)

    @property
    def networks(self):
        if self._networks is None:
            from medgen.render.maisi.networks import load_networks

            self._networks = load_networks(self.bundle, self.device)
        return self._networks

    def describe(self) -> dict:
        """Provenance of the renderer (loads the weights: their sha256 is part of it)."""
        nets = self.networks
        return {"renderer": "maisi", "version": self.bundle.version, "model_id": self.model_id,
                "folder": str(self.bundle.root), "weights_sha256": dict(nets.sha256), "license": self.bundle.license,
                "scale_factor": nets.scale_factor, "load_report": nets.load_report,
                **({"standin": self.standin} if self.standin else {})}

    def render(self, layout_labels: Volume, *, density: Volume | None = None, seed: int = 0, steps: int | None = None,
               quality_retries: int = 1, progress: bool = False) -> Volume:
        """HU (float32) on `layout_labels`' grid; ``meta["maisi"]`` records the procedure and measurements."""
        from medgen.render.maisi.sampler import decode_latent, sample_latent

        shape, spacing = _grid_of(layout_labels)
        check_maisi_grid(shape, spacing)
        labels = np.asarray(layout_labels.array).astype(np.uint8)
        steps = int(steps or self.bundle.num_inference_steps)
        cond = condition_labels(labels)
        nets = self.networks
        infer = self.bundle.infer
        record = {**self.describe(), "steps": steps, "seed": int(seed), "attempts": []}
        for attempt in range(int(quality_retries) + 1):
            noise_seed = int(seed) + 1000 * attempt
            t0 = time.perf_counter()
            latent = sample_latent(nets, cond, spacing, steps=steps, seed=noise_seed,
                                   modality=int(infer.get("modality", 1)), progress=progress)
            t1 = time.perf_counter()
            hu = decode_latent(nets, latent, roi=infer["autoencoder_sliding_window_infer_size"],
                               overlap=float(infer["autoencoder_sliding_window_infer_overlap"]))
            hu[cond == 0] = -1000.0  # NVIDIA's background crop
            check = compose.quality_check(hu, cond, self.hu_statistics)
            passed = all(v["ok"] for v in check.values())
            record["attempts"].append({"noise_seed": noise_seed, "diffusion_s": round(t1 - t0, 2),
                                       "decode_s": round(time.perf_counter() - t1, 2), "quality_check": check,
                                       "passed": passed})
            if passed:
                break
        record["quality_check_passed"] = passed
        record["warnings"] = [] if passed else [
            "MAISI's per-organ HU check failed after {} tr{}: {}".format(
                len(record["attempts"]), "y" if len(record["attempts"]) == 1 else "ies",
                ", ".join(f"{k} median {v['median_hu']:g} HU outside [{v['low']:g}, {v['high']:g}]"
                          for k, v in check.items() if not v["ok"]))]
        record.update(self._compose(hu, labels, cond, density, spacing, seed))
        meta = {"synthetic": True, "maisi": record}
        return Volume(hu, np.asarray(layout_labels.affine, float).copy(), meta)

    @staticmethod
    def _compose(hu, labels, cond, density, spacing, seed) -> dict:
        out = {}
        components, n = compose.lesion_components(labels, LUNG_TUMOR_ID)
        if n:
            dmap = np.asarray(density.array) if density is not None else np.zeros(labels.shape, np.float32)
            targets = [round(float(np.median(dmap[components == i])), 6) for i in range(1, n + 1)]
            out["lesions"] = compose.calibrate_lesions(hu, components, targets, spacing)
        fluid = labels == MEDGEN_EFFUSION_ID
        if fluid.any():
            tissue = np.isin(cond, [BODY_ID, 115, 6, 11, 125, 7]) & ~fluid  # body, heart, great vessels
            out["effusion"] = compose.paint_effusion(hu, fluid, tissue, spacing, seed)
        emph = labels == MEDGEN_EMPHYSEMA_ID
        if emph.any():
            lung = np.isin(labels, [*LOBE_IDS.values(), MEDGEN_EMPHYSEMA_ID])
            out["emphysema"] = compose.paint_emphysema(hu, emph, lung)
        return out
