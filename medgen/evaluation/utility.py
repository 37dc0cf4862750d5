"""Downstream utility benchmark: does adding generated volumes (with their label maps) to a small real training
set make a lesion / effusion segmentation model better on held-out real data?

Arms (same network, steps, augmentation and seeds; only the training data differ):
  a  N real phantoms
  b  the N real + 4N volumes of the layout-grounded model with their layout label maps
  c  the 4N generated volumes alone
  d  the N real + 4N volumes of the text-only ablation model, labelled from their reports' layouts only where
     the finding analyzer confirms the finding (a lesion found near the laid-out one, an effusion on its side)
Scored on held-out real phantoms of an untouched seed range: lesion Dice, lesion detection P/R/F1 by size
band, effusion Dice (`medgen.evaluation.utility_metrics`). Generated volumes are drawn from reports of the
training phrasing families with findings sampled like the phantoms', and cached by model sha256 + report +
seed + grid (a rerun regenerates nothing); each finished training run is saved, so a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medgen.evaluation.utility_metrics import EFFUSION, LESION, score_volume, summarise_scores
from medgen.evaluation.utility_report import aggregate_arms, utility_bars
from medgen.seeds import SEED_RANGES


@dataclass
class UtilitySettings:
    n_real: int = 40
    synthetic_per_real: int = 4
    n_test: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 800
    batch_size: int = 4
    roi: int = 32
    lr: float = 2e-3
    init_filters: int = 8
    shape: int = 64
    spacing: float = 5.0
    real_seed: int = SEED_RANGES["utility.real"].start  # subject seeds of the real training phantoms
    test_seed: int = SEED_RANGES["utility.test"].start  # held-out real phantoms (medgen.seeds)
    report_seed: int = 5_150
    phantom_version: int = 1  # real phantoms of the layout model's own phantom (`medgen.phantom.versions`)


CLASS_WEIGHTS = (1.0, 30.0, 5.0)  # background, lesion, effusion (cross-entropy)
QUICK = UtilitySettings(n_real=2, synthetic_per_real=1, n_test=2, seeds=(0,), steps=2, roi=16, shape=32,
                        spacing=10.0)


@dataclass
class Sample:
    """One training or test volume: HU (int16), class map (0/1/2) and, for real phantoms, lesion ids."""

    hu: np.ndarray
    target: np.ndarray
    lesion_ids: np.ndarray | None = None
    diameters: dict[int, float] = field(default_factory=dict)


def real_sample(seed: int, settings: UtilitySettings) -> Sample:
    from medgen.findings import LABELS
    from medgen.phantom.versions import make_case

    case = make_case(None, shape=settings.shape, spacing=settings.spacing, seed=seed, version=settings.phantom_version)
    labels = np.asarray(case.labels.array)
    target = np.where(labels == LABELS["lesion"], LESION, np.where(labels == LABELS["effusion"], EFFUSION, 0))
    diameters = {i + 1: float(lesion.diameter_mm) for i, lesion in enumerate(case.findings.lesions)}
    return Sample(np.asarray(case.image.array, np.int16), target.astype(np.uint8), case.lesion_ids, diameters)


def training_reports(n: int, settings: UtilitySettings) -> list[tuple[str, object, int]]:
    """(report, findings, seed) drawn like the training data: phantom findings, training phrasing families."""
    from medgen.phantom.chest import sample_findings
    from medgen.reports.writer import write_report

    out = []
    for i in range(n):
        rng = np.random.default_rng([settings.report_seed, i])
        findings = sample_findings(rng)
        report = write_report(findings, language=("en", "zh")[i % 2], rng=rng, split="train")
        out.append((report.text, findings, settings.report_seed + i))
    return out


class GeneratedSource:
    """Volumes + class maps from a pipeline, cached on disk by model sha256 + report + seed + grid."""

    def __init__(self, pipe, cache_dir, settings: UtilitySettings, *, confirm_with_analyzer: bool):
        self.pipe, self.settings, self.confirm = pipe, settings, confirm_with_analyzer
        self.model_sha = _model_sha(pipe)
        self.cache_dir = Path(cache_dir) / self.model_sha[:16]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.n_generated = 0

    def sample(self, report: str, findings, seed: int) -> Sample:
        key = hashlib.sha256(json.dumps([self.model_sha, report, seed, self.settings.shape, self.settings.spacing,
                                         self.confirm]).encode()).hexdigest()[:24]
        path = self.cache_dir / f"{key}.npz"
        if path.is_file():
            data = np.load(path)
            return Sample(data["hu"], data["target"])
        if self.pipe.layout_grounded:
            result = self.pipe(report, findings=findings, seed=seed, progress=False)
            target = _layout_target(np.asarray(result.labels.array))
        else:
            result = self.pipe(report, seed=seed, progress=False)
            target = self._confirmed_target(result.volume, findings, seed)
        self.n_generated += 1
        hu = np.clip(np.rint(result.volume.array), -1024, 3071).astype(np.int16)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, hu=hu, target=target)
        tmp.replace(path)
        return Sample(hu, target)

    def _confirmed_target(self, volume, findings, seed: int) -> np.ndarray:
        """The report's layout, keeping only the findings the analyzer confirms in the generated volume."""
        from medgen.analysis import analyze_volume
        from medgen.evaluation.fidelity import layout_centroids
        from medgen.findings import LABELS
        from medgen.layout import make_layout
        from medgen.layout.labels import FIRST_LESION_LABEL

        layout = make_layout(findings, shape=self.settings.shape, spacing=self.settings.spacing, seed=seed)
        labels = np.asarray(layout.labels.array).copy()
        analysis = analyze_volume(volume)
        found = [np.asarray(les.center_mm) for les in analysis.lesions]
        for i, centre in enumerate(layout_centroids(layout.labels)):
            reach = max(15.0, 0.75 * findings.lesions[i].diameter_mm)
            if not any(np.linalg.norm(f - np.asarray(centre)) <= reach for f in found):
                labels[labels == FIRST_LESION_LABEL + i] = 0
        effusion = findings.effusion
        if effusion is not None and (analysis.effusion is None or
                                     analysis.effusion.side not in (effusion.side, "bilateral")):
            labels[labels == LABELS["effusion"]] = 0
        return _layout_target(labels)


def _layout_target(labels: np.ndarray) -> np.ndarray:
    from medgen.findings import LABELS
    from medgen.layout.labels import FIRST_LESION_LABEL

    return np.where(labels >= FIRST_LESION_LABEL, LESION,
                    np.where(labels == LABELS["effusion"], EFFUSION, 0)).astype(np.uint8)


def _model_sha(pipe) -> str:
    from medgen.io import weights as storage

    if pipe.weights_sha256:
        return storage.combined_checksum(pipe.weights_sha256)
    return hashlib.sha256(repr(sorted(pipe.config.items())).encode()).hexdigest()


# --------------------------------------------------------------------------------------- segmentation

def _transforms(settings: UtilitySettings, train: bool):
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        CopyItemsd,
        DeleteItemsd,
        RandCropByLabelClassesd,
        RandFlipd,
        ScaleIntensityRanged,
    )

    # two windows as two channels: lung (lesions against aerated lung) and soft tissue (pleural fluid, ~10 HU,
    # against chest-wall muscle, ~40 HU: 2 % of the lung window's range, 8 % of this one's)
    steps = [CopyItemsd(keys="image", names="soft_tissue"),
             ScaleIntensityRanged(keys="image", a_min=-1000, a_max=400, b_min=0.0, b_max=1.0, clip=True),
             ScaleIntensityRanged(keys="soft_tissue", a_min=-160, a_max=240, b_min=0.0, b_max=1.0, clip=True),
             ConcatItemsd(keys=["image", "soft_tissue"], name="image"), DeleteItemsd(keys="soft_tissue")]
    if train:  # lesions fill ~0.03 % of a chest: crops centred on each class in turn, or the net learns "none"
        steps += [RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=(settings.roi,) * 3,
                                          ratios=[1, 2, 1], num_classes=3, num_samples=1, allow_smaller=True,
                                          warn=False),
                  RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2)]
    return Compose(steps)


def _network(settings: UtilitySettings):
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=2, out_channels=3, init_filters=settings.init_filters,
                     blocks_down=(1, 2, 2), blocks_up=(1, 1))


def _loss():
    """Dice over the findings only, pooled over the batch (a crop without a finding adds no 0/0 term), plus
    cross-entropy weighted up for the findings: lesions are ~0.03 % of a chest's voxels at 5 mm, and an unweighted
    net settles on "none" (measured: lesion Dice 0 after 1,000 steps)."""
    from monai.losses import DiceLoss

    dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True, include_background=False)
    cross_entropy = torch.nn.CrossEntropyLoss(weight=torch.tensor(CLASS_WEIGHTS))
    return lambda logits, label: dice(logits, label) + cross_entropy(logits, label[:, 0].long())


def train_segmenter(samples: list[Sample], settings: UtilitySettings, seed: int, progress: bool = False):
    """SegResNet + Dice and weighted cross-entropy on finding-centred crops of `samples`; returns the trained network (eval mode)."""
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    data = [{"image": s.hu[None].astype(np.float32), "label": s.target[None].astype(np.int64)} for s in samples]
    dataset = CacheDataset(data, transform=_transforms(settings, train=True), progress=False)
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    net = _network(settings)
    loss_fn = _loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    net.train()
    batches = iter(loader)
    for _ in tqdm(range(settings.steps), desc="segmenter", leave=False, disable=not progress, mininterval=5):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        loss = loss_fn(net(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    set_determinism(seed=None)
    return net.eval()


def evaluate_segmenter(net, test: list[Sample], settings: UtilitySettings) -> dict:
    from monai.inferers import sliding_window_inference

    scale = _transforms(settings, train=False)
    rows = []
    with torch.no_grad():
        for sample in test:
            image = torch.as_tensor(scale({"image": sample.hu[None].astype(np.float32)})["image"])[None]
            logits = sliding_window_inference(image, (settings.roi,) * 3, 2, net, overlap=0.25)
            pred = logits.argmax(1)[0].numpy()
            rows.append(score_volume(pred, sample.target, sample.lesion_ids, sample.diameters,
                                     (settings.spacing,) * 3))
    return summarise_scores(rows)


def arm_training_sets(real: list[Sample], layout_samples: list[Sample], ablation_samples: list[Sample] | None) -> dict:
    """Training data of every arm: one code path, only the lists differ."""
    sets = {"a": list(real), "b": list(real) + list(layout_samples), "c": list(layout_samples)}
    if ablation_samples is not None:
        sets["d"] = list(real) + list(ablation_samples)
    return sets


def run_utility(out_dir, *, layout_pipe, ablation_pipe=None, settings: UtilitySettings | None = None,
                cache_dir="runs/utility-cache", progress: bool = True) -> dict:
    """Build the data, train every arm with every seed (resuming finished runs), write results + summary.
    Without `ablation_pipe` (a text-only model) arm d is left out. Real phantoms come from the layout model's
    phantom (``settings.phantom_version``)."""
    import time

    settings = settings or UtilitySettings()
    if not layout_pipe.layout_grounded:
        raise ValueError("arms b and c need a layout-grounded model (--model); the given one is text-only")
    if ablation_pipe is not None and ablation_pipe.layout_grounded:
        raise ValueError("arm d is the text-only ablation: --ablation must be a text-only model")
    started = time.time()
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    seeds = [settings.real_seed + i for i in range(settings.n_real)] + [settings.test_seed + i
                                                                         for i in range(settings.n_test)]
    phantoms = [real_sample(s, settings) for s in tqdm(seeds, desc="real phantoms", disable=not progress)]
    real, test = phantoms[:settings.n_real], phantoms[settings.n_real:]
    reports = training_reports(settings.n_real * settings.synthetic_per_real, settings)
    generated, newly_generated = {}, {}
    for arm, pipe, confirm in (("layout", layout_pipe, False), ("ablation", ablation_pipe, True)):
        if pipe is None:
            continue
        source = GeneratedSource(pipe, cache_dir, settings, confirm_with_analyzer=confirm)
        generated[arm] = [source.sample(*r) for r in tqdm(reports, desc=f"generate ({arm})", disable=not progress)]
        newly_generated[arm] = source.n_generated
    sets = arm_training_sets(real, generated["layout"], generated.get("ablation"))
    runs = {}
    for arm, samples in sets.items():
        for seed in settings.seeds:
            path = out_dir / "runs" / f"{arm}-seed{seed}.json"
            if path.is_file():
                runs[(arm, seed)] = json.loads(path.read_text())
                continue
            t0 = time.time()
            scores = evaluate_segmenter(train_segmenter(samples, settings, seed, progress), test, settings)
            scores.update(arm=arm, seed=seed, n_train=len(samples), train_eval_s=round(time.time() - t0, 1))
            path.write_text(json.dumps(scores, indent=2) + "\n")
            runs[(arm, seed)] = scores
    results = {"settings": asdict(settings), "arms": aggregate_arms(runs, settings.seeds),
               "labelled_fraction_ablation": (_labelled_fraction(generated["ablation"]) if "ablation" in generated
                                              else None),
               "newly_generated": newly_generated,
               "elapsed_s": round(time.time() - started, 1), "hardware": _hardware()}
    results["bars"] = utility_bars(results["arms"])
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _hardware() -> str:
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


def _labelled_fraction(samples: list[Sample]) -> float:
    return float(np.mean([(s.target > 0).any() for s in samples])) if samples else 0.0
