"""Linear probes of a slice reader's vision tower: does what the reader must say (lesion presence, the largest
lesion's side, lobe and type, the effusion) lie in the tower's features, on training slices and on held-out
ones? Three sets: the slices the probe is fitted on, other training slices (seen by the tower, not by the
probe: the probe's own overfitting) and held-out key slices (seen by neither). A gap that opens only at the
held-out set locates the reader's errors in the tower's fit to its training phantoms, not in its language model.

    .venv/bin/python docs/studies/probe_slice_tower.py --reader medgen/assets/default-model/slice_reader \
        --pairs runs/preview-model.work/pairs.npz --out docs/studies

Features: the mean and the max over the tower's patch tokens (CLS dropped, as the reader feeds them). Probe:
multinomial logistic regression (L-BFGS, L2 1e-3, standardised features) fitted on the first `--n-train`
training pairs, scored on them, on the next `--n-train` training pairs and on the held-out key slices (`medgen.slices.describer.recipe.held_out_slices`,
phantom seeds no training set draws from). Writes ``tower_probe.md`` and ``tower_probe.json`` to `--out`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medgen.io.atomic import atomic_path
from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.recipe import held_out_slices
from medgen.slices.generator.data import PreviewPairs

KEYS = ("presence", "side", "lobe", "type", "effusion")


def tower_features(reader: SliceReader, hu_slices, batch: int = 64) -> np.ndarray:
    tower = reader.model.model.vision_tower.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(hu_slices), batch):
            tokens = tower(reader.pixels(hu_slices[i:i + batch])).last_hidden_state[:, 1:]
            out.append(torch.cat([tokens.mean(1), tokens.amax(1)], 1).numpy())
    return np.concatenate(out)


def target(findings: dict, key: str):
    top = findings["lesions"][0] if findings["lesions"] else None
    if key == "presence":
        return str(top is not None)
    if key == "effusion":
        return str(findings.get("effusion"))
    return None if top is None else str(top[key])


def probe(x_train, y_train, tests) -> list[float]:
    """[fit accuracy, accuracy on each (x, y) of `tests`] of a logistic regression; rows labelled None skipped."""
    tr = [i for i, y in enumerate(y_train) if y is not None]
    classes = sorted({y_train[i] for i in tr})
    index = {c: k for k, c in enumerate(classes)}
    mu, sd = x_train[tr].mean(0), x_train[tr].std(0) + 1e-6
    a = torch.tensor((x_train[tr] - mu) / sd, dtype=torch.float32)
    b = torch.tensor([index[y_train[i]] for i in tr])
    linear = torch.nn.Linear(a.shape[1], len(classes))
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(a), b) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    out = []
    with torch.no_grad():
        out.append(float((linear(a).argmax(1) == b).float().mean()))
        for x_test, y_test in tests:
            te = [i for i, y in enumerate(y_test) if y is not None]
            guess = linear(torch.tensor((x_test[te] - mu) / sd, dtype=torch.float32)).argmax(1).tolist()
            out.append(float(np.mean([classes[k] == y_test[i] for k, i in zip(guess, te, strict=True)])))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", action="append", required=True, help="slice reader folder (repeatable)")
    parser.add_argument("--pairs", required=True, help="training pairs (.npz) the readers were trained on")
    parser.add_argument("--n-train", type=int, default=2400)
    parser.add_argument("--n-held-out", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/studies"))
    args = parser.parse_args(argv)
    pairs = PreviewPairs.load(args.pairs)
    hu = [img.astype(np.float32) * 1024.0 for img in pairs.image[:2 * args.n_train]]
    train_hu, other_hu = hu[:args.n_train], hu[args.n_train:]
    train_findings, other_findings = pairs.findings[:args.n_train], pairs.findings[args.n_train:2 * args.n_train]
    held_hu, held_findings = held_out_slices(args.n_held_out)
    results = {"pairs": str(args.pairs), "n_train": len(train_hu), "n_held_out": len(held_hu), "readers": {}}
    for folder in args.reader:
        reader = SliceReader.from_pretrained(folder)
        x_train, x_other, x_held = (tower_features(reader, h) for h in (train_hu, other_hu, held_hu))
        results["readers"][folder] = {
            key: dict(zip(("fit", "other_train", "held_out"), probe(
                x_train, [target(f, key) for f in train_findings],
                [(x_other, [target(f, key) for f in other_findings]), (x_held, [target(f, key) for f in held_findings])]),
                strict=True))
            for key in KEYS}
    lines = ["# Linear probes of the slice reader's vision tower", "",
             f"Logistic regression on mean + max pooled patch tokens, fitted on {results['n_train']} training "
             f"slices ({args.pairs}), scored on them / on {len(other_hu)} other training slices (the tower saw "
             f"them, the probe did not) / on {results['n_held_out']} held-out key slices (seen by neither). "
             "% correct. Command: `docs/studies/probe_slice_tower.py` (see its docstring).", "",
             "| tower | " + " | ".join(KEYS) + " |", "|" + " --- |" * (len(KEYS) + 1)]
    for folder, row in results["readers"].items():
        lines.append(f"| {folder} | " + " | ".join(
            " / ".join(f"{100 * row[k][s]:.0f}" for s in ("fit", "other_train", "held_out")) for k in KEYS) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "tower_probe.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_path(args.out / "tower_probe.json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
