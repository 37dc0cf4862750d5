"""Anatomy by retrieval: a bank of training subjects' anatomies keyed by their reports' embeddings.

At generation the report's pooled text embedding is compared (cosine) with the bank's; the anatomy is drawn
among the `k` nearest by the seed, so the same report and seed give the same anatomy, and a seed sweep
explores plausible anatomies for that report (as retrieval-augmented anatomical guidance does).
Saved as ``anatomy_bank.json`` (subject ids and anatomy parameters) + ``embeddings.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medgen.errors import InputFileError
from medgen.io.weights import PretrainedMixin

BANK_NAME = "anatomy_bank.json"
EMBEDDINGS_NAME = "embeddings.safetensors"


class AnatomyBank(PretrainedMixin):
    """Args:
        ids: subject ids (N).
        anatomies: anatomy parameter dicts (N).
        embeddings: (N, D) pooled report embeddings (L2-normalised here).
        k: how many nearest subjects a seed chooses among.
    """

    config_name, weights_name = BANK_NAME, EMBEDDINGS_NAME
    config_indent = None  # one line: the anatomies make a long config

    def __init__(self, ids: list[str], anatomies: list[dict], embeddings: np.ndarray, *, k: int = 8):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if not (len(ids) == len(anatomies) == len(embeddings) > 0):
            raise ValueError(f"a bank needs as many ids, anatomies and embeddings (> 0), got {len(ids)}, "
                             f"{len(anatomies)}, {len(embeddings)}")
        if not 1 <= k:
            raise ValueError(f"`k` must be >= 1, got {k}")
        self.ids, self.anatomies, self.k = list(ids), list(anatomies), int(k)
        self.embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-8)

    def __len__(self) -> int:
        return len(self.ids)

    def retrieve(self, embedding: np.ndarray, seed: int) -> tuple[dict, dict]:
        """(anatomy parameters, info) for one pooled report embedding (D,)."""
        query = np.asarray(embedding, dtype=np.float32).ravel()
        query = query / max(float(np.linalg.norm(query)), 1e-8)
        similarity = self.embeddings @ query
        nearest = np.argsort(-similarity, kind="stable")[: min(self.k, len(self))]
        pick = int(nearest[np.random.default_rng(int(seed)).integers(len(nearest))])
        return dict(self.anatomies[pick]), {"source": "bank", "subject": self.ids[pick],
                                           "similarity": round(float(similarity[pick]), 4), "k": len(nearest)}

    @classmethod
    def from_manifest_rows(cls, rows: list[dict], text_encoder, *, k: int = 8, batch_size: int = 32) -> AnatomyBank:
        """A bank from dataset manifest rows (``id``, ``report``, phantom ``seed``), embedded by `text_encoder`.
        A phantom-v2 row's anatomy is its subject seed (``{"phantom_version": 2, "seed": s}``)."""
        from medgen.phantom.chest import anatomy_of_seed

        ids = [str(r["id"]) for r in rows]
        anatomies = [{"phantom_version": 2, "seed": int(r["seed"])} if r.get("phantom_version") == 2
                     else anatomy_of_seed(int(r["seed"])) for r in rows]
        chunks = []
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                chunks.append(text_encoder([r["report"] for r in rows[i:i + batch_size]]).pooled.float().cpu().numpy())
        return cls(ids, anatomies, np.concatenate(chunks), k=k)

    # ---------------------------------------------------------------------------------- persistence
    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        save_file({"embeddings": torch.from_numpy(self.embeddings.astype(np.float16))}, str(folder / EMBEDDINGS_NAME))
        return {"k": self.k, "ids": self.ids, "anatomies": self.anatomies}

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> AnatomyBank:
        try:
            embeddings = load_file(str(folder / EMBEDDINGS_NAME))["embeddings"].float().numpy()
            return cls(config["ids"], config["anatomies"], embeddings, k=config["k"])
        except (OSError, KeyError, ValueError) as err:
            raise InputFileError(folder, f"not a readable anatomy bank ({type(err).__name__}: {err})") from None

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return InputFileError(folder, f"not a readable anatomy bank (no {BANK_NAME})")
