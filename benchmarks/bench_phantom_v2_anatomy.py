"""Phantom v2 against published adult anatomy: lung volumes, lobe fractions, heart/thorax ratio, tissue HU,
airway calibres by generation, vertebra and rib counts, over N subjects; the dataset-build time bar; the
picture grid.

    python benchmarks/bench_phantom_v2_anatomy.py                 # 200 subjects, figures, docs/phantom_v2_anatomy.md
    python benchmarks/bench_phantom_v2_anatomy.py --quick         # smoke run: 6 subjects, small figures

Each subject is rendered normal (no findings) at 64^3 x 5 mm, and its label map again on a taller field of
view (64 x 64 x 112 at 5 mm) for the vertebra and rib counts. The recorded run writes the table to
docs/phantom_v2_anatomy.md and the pictures to docs/figures/phantom_v2_*.png.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import harness
import numpy as np

from medgen.findings import LOBES, Findings
from medgen.phantom.v2 import make_phantom_v2, render_phantom_v2
from medgen.phantom.v2 import measure as m
from medgen.phantom.v2.subject import predicted_tlc
from medgen.seeds import SEED_RANGES

DOCS = harness.ROOT / "docs"
FIRST_SEED = SEED_RANGES["phantom_v2.anatomy"].start  # subjects, then timing at + 10_000 (medgen.seeds)
# Weibel 1963, model A: airway lumen diameter (mm) by generation, trachea = 0
WEIBEL_MM = {1: 12.2, 2: 8.3, 3: 5.6, 4: 4.5, 5: 3.5, 6: 2.8}
YAMADA = {"right_fraction": (53.6, 1.5), "right_upper": (17.9, 2.4), "right_middle": (9.3, 1.6),
          "right_lower": (26.5, 2.6), "left_upper": (23.1, 2.1), "left_lower": (23.2, 2.4)}
TISSUE_REF = {"fat": (-120, -80), "muscle": (35, 55), "blood": (30, 50), "liver": (50, 70), "spleen": (40, 55),
              "kidney": (25, 45), "air": (-1010, -990)}


def dome_difference(labels) -> float:
    """Right minus left dome height (mm): for each lung, the highest point of its base (the lowest lung voxel of
    a column) over the columns outside the heart's shadow whose base rests on the diaphragm: the 20 mm below it
    hold only abdominal organs (liver, stomach, spleen) and diaphragm / fat, and at least one organ voxel."""
    from medgen.phantom.v2.labels import BODY, label_id

    lab = labels.array
    z = labels.affine[2, 3] + np.arange(lab.shape[2]) * labels.spacing[2]
    organs = [label_id(n) for n in ("liver", "stomach", "spleen")]
    n_below = max(1, int(round(20.0 / labels.spacing[2])))
    heart_cols = np.isin(lab, (label_id("heart"), label_id("left atrial appendage"))).any(axis=2)
    out = {}
    for side in ("right", "left"):
        lung = np.isin(lab, [m.LOBE_IDS[lb] for lb in LOBES if lb.startswith(side)])
        cols = lung.any(axis=2) & ~heart_cols
        k0 = np.where(cols, lung.argmax(axis=2), 0)
        best = -np.inf
        for i, j in zip(*np.nonzero(cols & (k0 >= n_below)), strict=True):
            under = lab[i, j, k0[i, j] - n_below:k0[i, j]]
            if np.isin(under, [*organs, BODY]).all() and np.isin(under, organs).any():
                best = max(best, z[k0[i, j]])
        out[side] = best
    return float(out["right"] - out["left"])


def measure_subject(seed: int) -> dict:
    case = render_phantom_v2(Findings(), seed=seed)
    a = case.subject["anatomy"]
    tall = render_phantom_v2(Findings(), shape=(64, 64, 112), spacing=5.0, seed=seed, noise=False, tissue_map=False)
    radii = {}
    for b in case.trees["airway"]:
        radii.setdefault(b.generation, []).append(2 * b.radius)
    tlc, rsd = predicted_tlc(a["sex"], a["height_m"])
    z_car = float(case.trees["named"]["RMB"].start[2])
    return {
        "seed": seed, "sex": a["sex"], "height_m": a["height_m"], "tlc_pred_l": tlc, "tlc_rsd_l": rsd,
        "volumes": m.lung_volumes(case.labels), "ctr": m.cardiothoracic_ratio(case.labels),
        "tissue_hu": m.tissue_hu(case.ct, case.tissue), "trabecular_hu": m.trabecular_hu(case.ct, case.labels),
        "density": m.lung_density(case.ct, case.labels), "skeleton": m.skeleton_counts(tall.labels),
        "trees": m.tree_summary(case.trees), "airway_mm": {g: float(np.mean(v)) for g, v in radii.items() if g <= 6},
        "trachea_mm": m.trachea_diameter(case.ct, case.labels, z_car), "dome_diff_mm": dome_difference(case.labels),
    }


def _row(name, values, ref_text, source, ok=None, fmt="{:.2f}"):
    """A table row; subjects where the figure could not be measured (NaN: e.g. no spleen voxel free of partial
    volume in the field of view) are left out of the statistics and of the within-range share."""
    v = np.asarray(values, float)
    have = np.isfinite(v)
    stat = (f"{fmt.format(v[have].mean())} ± {fmt.format(v[have].std())} "
            f"({fmt.format(v[have].min())}–{fmt.format(v[have].max())})") if have.any() else "not measured"
    if have.sum() < len(v):
        stat += f", n = {int(have.sum())}"
    frac = "by construction" if ok is None else f"{100 * np.mean(np.asarray(ok)[have]):.1f} %"
    return [name, stat, ref_text, source, frac]


def table(results: list[dict]) -> tuple[str, list[float]]:
    rows, fracs = [], []

    def add(row, ok):
        rows.append(row)
        if ok is not None:
            fracs.append(float(np.mean(ok)))

    vol = [r["volumes"]["total_l"] for r in results]
    ok = [abs(r["volumes"]["total_l"] - r["tlc_pred_l"]) <= 1.645 * r["tlc_rsd_l"] for r in results]
    add(_row("total lung volume (L)", vol, "predicted TLC ± 1.645 RSD for the subject's sex and height "
             "(men 7.99H−7.08, RSD 0.70; women 6.60H−5.79, RSD 0.60)", "ECSC: Quanjer et al. 1993", ok), ok)
    rl = [r["volumes"]["right_left_ratio"] for r in results]
    mu, sd = YAMADA["right_fraction"]
    lo, hi = (mu - 2 * sd) / (100 - mu + 2 * sd), (mu + 2 * sd) / (100 - mu - 2 * sd)
    ok = [lo <= v <= hi for v in rl]
    add(_row("right / left lung volume", rl, f"{lo:.2f}–{hi:.2f} (right lung {mu} ± {sd} % of total, ± 2 SD)",
             "Yamada et al. 2020, supine CT, n = 32", ok), ok)
    for lobe in LOBES:
        f = [100 * r["volumes"]["lobe_fraction"][lobe] for r in results]
        mu, sd = YAMADA[lobe]
        ok = [mu - 2 * sd <= v <= mu + 2 * sd for v in f]
        add(_row(f"{lobe.replace('_', ' ')} lobe (% of lung)", f, f"{mu - 2 * sd:.1f}–{mu + 2 * sd:.1f} ({mu} ± {sd}, ± 2 SD)",
                 "Yamada et al. 2020", ok, "{:.1f}"), ok)
    ctr = [r["ctr"]["ctr"] for r in results]
    ok = [v <= 0.50 for v in ctr]
    add(_row("cardiothoracic ratio (frontal projection)", ctr, "≤ 0.50", "Danzer 1919 (PA radiograph criterion)", ok), ok)
    dd = [r["dome_diff_mm"] for r in results]
    ok = [0 <= v <= 30 for v in dd]
    add(_row("right dome above left dome (mm)", dd, "0–30 (right higher in most adults)",
             "Felson, Principles of Chest Roentgenology", ok, "{:.0f}"), ok)
    for name, (lo, hi) in TISSUE_REF.items():
        v = [r["tissue_hu"].get(name, np.nan) for r in results]
        ok = [lo <= x <= hi for x in v]
        add(_row(f"{name} HU (voxels without partial volume)", v, f"{lo} to {hi}",
                 "unenhanced CT textbook values (e.g. Prokop & Galanski 2003)", ok, "{:.0f}"),
            [o for o, x in zip(ok, v, strict=True) if np.isfinite(x)])
    v = [r["trabecular_hu"] for r in results]
    ok = [160 < x < 400 for x in v]
    add(_row("vertebral cancellous bone HU", v, "> 160 (≤ 160 suggests osteoporosis), < 400",
             "Pickhardt et al. 2013", ok, "{:.0f}"), ok)
    v = [r["density"]["laa950_percent"] for r in results]
    ok = [x <= 7.4 for x in v]
    add(_row("lung voxels below −950 HU (%)", v, "≤ 7.4 (2.0 ± 2.7, mean + 2 SD)",
             "Zach et al. 2012, healthy non-smokers (COPDGene)", ok, "{:.1f}"), ok)
    v = [r["density"]["mean_hu"] for r in results]
    ok = [-870 <= x <= -820 for x in v]
    add(_row("mean lung HU (with vessels)", v, "−870 to −820", "medgen HU convention for normal lung", ok, "{:.0f}"), ok)
    v = [r["trachea_mm"] for r in results]
    ok = [(13 <= x <= 25) if r["sex"] == "male" else (10 <= x <= 21) for x, r in zip(v, results, strict=True)]
    add(_row("tracheal air-column diameter (mm)", v, "men 13–25, women 10–21", "Breatnach et al. 1984", ok, "{:.1f}"), ok)
    for g, ref in WEIBEL_MM.items():
        v = [r["airway_mm"].get(g, np.nan) for r in results]
        ok = [ref / 1.5 <= x <= ref * 1.5 for x in v]
        add(_row(f"airway lumen diameter, generation {g} (mm)", v, f"{ref / 1.5:.1f}–{ref * 1.5:.1f} (Weibel {ref} ×/÷ 1.5)",
                 "Weibel 1963, model A", ok, "{:.1f}"), ok)
    t = [r["trees"] for r in results]
    add(_row("segmental bronchi, right + left", [x["segmental_right"] + x["segmental_left"] for x in t],
             "10 + 8 (Boyden)", "Boyden 1955", None, "{:.0f}"), None)
    for key, label in (("airway_generations", "deepest airway generation (lumen ≥ 1.4 mm)"),
                       ("artery_generations", "deepest pulmonary-artery generation"),
                       ("vein_generations", "deepest pulmonary-vein generation")):
        add(_row(label, [x[key] for x in t], "conducting airways: generations 0–16; arteries follow them",
                 "Weibel 1963", None, "{:.0f}"), None)
    sk = [r["skeleton"] for r in results]
    ok = [s["thoracic_vertebrae"] == 12 and s["vertebrae"] >= 14 for s in sk]
    add(_row("vertebrae drawn (T1–T12 + L1–L2 [+ C7])", [s["vertebrae"] for s in sk], "12 thoracic", "standard anatomy",
             ok, "{:.0f}"), ok)
    ok = [s["ribs_right"] == 12 and s["ribs_left"] == 12 for s in sk]
    add(_row("rib pairs", [min(s["ribs_right"], s["ribs_left"]) for s in sk], "12", "standard anatomy", ok, "{:.0f}"), ok)
    header = ["measure", "phantom: mean ± SD (min–max)", "published reference", "source", "subjects within"]
    return harness.markdown_table(header, rows), fracs


def time_bar(n: int, first: int) -> dict:
    """Seconds for `n` subjects at 64^3 x 5 mm with sampled findings (one process): wall and CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    for s in range(first, first + n):
        make_phantom_v2(None, shape=64, spacing=5.0, seed=s)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"n": n, "wall_s": wall, "cpu_s": cpu, "cpu_per_subject_s": cpu / n,
            "extrapolated_1200_on_2_cores_min": 1200 * cpu / n / 2 / 60}


def _axial(ct, k):
    return ct[::-1, ::-1, k].T  # anterior up, the patient's right on the image's left (radiological)


def make_figures(seed: int, shape: int, out_dir: Path) -> list[str]:
    """Axial (5 levels, lung and soft-tissue windows), coronal, sagittal, 3-D projections, labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.phantom.v2.labels import AIRWAY, LUNG_IDS, label_id
    from medgen.phantom.v2.subject import Subject

    sp = 320.0 / shape
    case = render_phantom_v2(Findings(), shape=shape, spacing=sp, seed=seed)
    S = Subject(case.subject["anatomy"])
    from medgen.phantom.v2.mediastinum import Mediastinum

    z_floor = Mediastinum(S).z_floor
    ct, lab = case.ct.array.astype(np.float32), case.labels.array
    idx = lambda v, d: int(np.clip(round((v - case.ct.affine[d, 3]) / sp), 0, shape - 1))  # noqa: E731
    levels = {"apex": S.z_apex - 18, "aortic arch": S.z_car + 22, "carina / hila": S.z_car - 12,
              "heart": z_floor + 45, "domes": S.dome[1] - 15}
    lung_w, soft_w = dict(cmap="gray", vmin=-1350, vmax=150), dict(cmap="gray", vmin=-160, vmax=240)
    out = []
    fig, axes = plt.subplots(2, 5, figsize=(20, 8.4))
    for j, (name, z) in enumerate(levels.items()):
        k = idx(z, 2)
        axes[0, j].imshow(_axial(ct, k), **lung_w)
        axes[1, j].imshow(_axial(ct, k), **soft_w)
        axes[0, j].set_title(f"{name} (z = {z:.0f} mm)")
    out.append(_save(fig, axes, out_dir / "phantom_v2_axial.png"))
    yc, xr = idx(S.y0 + 10, 1), idx(0.42 * S.A, 0)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.6))
    cor = ct[::-1, yc, :].T[::-1]
    axes[0].imshow(cor, **lung_w), axes[0].set_title("coronal (lung window)")
    axes[1].imshow(cor, **soft_w), axes[1].set_title("coronal (soft tissue)")
    axes[2].imshow(ct[xr, ::-1, :].T[::-1], **lung_w), axes[2].set_title("sagittal, right lung")
    axes[3].imshow(ct[shape // 2, ::-1, :].T[::-1], cmap="gray", vmin=-250, vmax=900)
    axes[3].set_title("sagittal, midline (bone window)")
    out.append(_save(fig, axes, out_dir / "phantom_v2_coronal_sagittal.png"))
    lung = np.isin(lab, (*LUNG_IDS, AIRWAY))
    airway = np.isin(lab, (AIRWAY, label_id("trachea")))
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
    axes[0].imshow(np.where(lung, ct, -1000).max(axis=1)[::-1].T[::-1], cmap="gray", vmin=-900, vmax=100)
    axes[0].set_title("lungs: frontal maximum-intensity projection (vessels)")
    axes[1].imshow(np.where(airway, ct, 0).min(axis=1)[::-1].T[::-1], cmap="gray_r", vmin=-1000, vmax=-300)
    axes[1].set_title("airway tree: frontal minimum-intensity projection")
    axes[2].imshow(ct.max(axis=1)[::-1].T[::-1], cmap="gray", vmin=100, vmax=1300)
    axes[2].set_title("skeleton: frontal maximum-intensity projection")
    out.append(_save(fig, axes, out_dir / "phantom_v2_3d.png"))
    colours = np.random.default_rng(1).uniform(0.15, 1.0, (256, 3))
    colours[0] = 0.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    axes[0].imshow(colours[lab[::-1, yc, :].T[::-1]], interpolation="nearest")
    axes[0].set_title("MAISI label ids, coronal (one colour per id)")
    axes[1].imshow(colours[_axial(lab, idx(S.z_car - 40, 2))], interpolation="nearest")
    axes[1].set_title("MAISI label ids, axial")
    out.append(_save(fig, axes, out_dir / "phantom_v2_labels.png"))
    return out


def _save(fig, axes, path: Path) -> str:
    import matplotlib.pyplot as plt

    for a in np.ravel(axes):
        a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    p = harness.parser("phantom_v2_anatomy", __doc__)
    p.add_argument("--n", type=int, default=200, help="subjects measured")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--timing-n", type=int, default=20, help="subjects timed for the dataset-build bar")
    p.add_argument("--figure-shape", type=int, default=256, help="voxels per side of the picture subject (320 mm)")
    p.add_argument("--figure-seed", type=int, default=FIRST_SEED + 3)
    args = harness.parse(p, argv, quick={"n": 6, "timing_n": 2, "figure_shape": 96})
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.n))
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(measure_subject, seeds))
    text, fracs = table(results)
    timing = time_bar(args.timing_n, FIRST_SEED + 10_000)
    fig_dir = DOCS / "figures" if not args.quick else args.out
    figures = make_figures(args.figure_seed, args.figure_shape, fig_dir)
    summary = (f"# Phantom v2 anatomy\n\n{args.n} subjects (seeds {seeds[0]}–{seeds[-1]}), normal, rendered at "
               f"64³ × 5 mm (skeleton counts on 64 × 64 × 112 at 5 mm).\n\n{text}\n\n"
               f"Rows with a range: {sum(f >= 0.95 for f in fracs)} of {len(fracs)} at ≥ 95 % of subjects "
               f"(lowest {100 * min(fracs):.1f} %).\n\n## Dataset-build time bar\n\n"
               f"{timing['n']} subjects at 64³ × 5 mm with sampled findings, one process: {timing['cpu_s']:.1f} s CPU "
               f"({timing['cpu_per_subject_s']:.2f} s per subject; wall {timing['wall_s']:.1f} s on a shared machine). "
               f"Extrapolated, not measured: 1,200 subjects on 2 cores = {timing['extrapolated_1200_on_2_cores_min']:.1f} min "
               f"of phantom generation (writing files not included).\n\nFigures: {', '.join(Path(f).name for f in figures)}\n\n"
               f"Command: `{harness.command_line(argv)}`  \nMachine: {harness.machine()}\n")
    harness.write_summary(args.out, summary)
    harness.write_json(args.out, {"timing": timing, "subjects": json.loads(json.dumps(results, default=float))})
    if not args.quick:
        (DOCS / "phantom_v2_anatomy.md").write_text(summary, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
