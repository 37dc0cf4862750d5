"""``medgen train``: train the VAE, cache latents, train the LDM, or all three in order.

    medgen train vae --config configs/phantom-64.yaml [--resume] [--device cpu|cuda] [--set key.sub=value ...]
    medgen train latents --config configs/phantom-64.yaml [--force]
    medgen train ldm --config configs/phantom-64.yaml [--resume]
    medgen train all --config configs/phantom-64.yaml [--resume]
    medgen train reader --out runs/reader [--encoder DIR] [--steps N] [--n-train N] [--seed S]
    medgen train refiner --out runs/refiner [--stages 3] [--steps N] [--n-patches N] [--model DIR]

Multi-GPU: ``torchrun --nproc_per_node=N -m medgen.cli.main train ldm --config ...`` (DDP; rank 0 writes).
Outputs go under the config's ``output_dir``: ``autoencoder/``, ``latents/``, ``pipeline/``,
``checkpoints/{vae,ldm}/``, ``logs/`` (TensorBoard + metrics.jsonl) and ``samples/`` (validation PNGs).
"""

from __future__ import annotations

from pathlib import Path

STAGES = ("vae", "latents", "ldm", "all")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train the VAE and the report-conditioned latent diffusion model")
    sub = parser.add_subparsers(dest="train_command", required=True)
    helps = {"vae": "train the KL autoencoder (writes OUTPUT_DIR/autoencoder)",
             "latents": "encode the train/val volumes with the trained VAE (OUTPUT_DIR/latents)",
             "ldm": "train the conditional UNet on cached latents (writes OUTPUT_DIR/pipeline)",
             "all": "vae, then latents, then ldm"}
    for stage in STAGES:
        p = sub.add_parser(stage, help=helps[stage])
        p.add_argument("--config", type=Path, required=True, help="experiment YAML (e.g. configs/phantom-64.yaml)")
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                       help="override a config value (parsed as YAML), e.g. --set train_ldm.batch_size=4; repeatable")
        if stage == "latents":
            p.add_argument("--force", action="store_true", help="re-encode even if the cache is fresh")
        else:
            p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of each stage")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=run)
    _register_reader(sub)
    _register_refiner(sub)
    _register_slices(sub)


def _register_refiner(sub) -> None:
    p = sub.add_parser("refiner", help="train the learned x2 resolution-cascade stages on fine phantom patches")
    p.add_argument("--out", type=Path, required=True, help="output refiner folder (stage_1/, stage_2/, ...)")
    p.add_argument("--model", type=Path, default=None,
                   help="pipeline folder whose native spacing stage 1 starts from (default: the embedded model)")
    p.add_argument("--stages", type=int, default=3, help="x2 stages to train (1-3)")
    p.add_argument("--steps", type=int, default=1200, help="optimisation steps per stage")
    p.add_argument("--n-patches", type=int, default=600, help="training patches per stage")
    p.add_argument("--patch", type=int, default=32, help="patch size in fine voxels")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_refiner)


def run_refiner(args) -> int:
    from medgen.io.atomic import check_output_path
    from medgen.io.weights import INDEX_NAME, read_json
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.refine.train import RefinerTrainConfig, train_refiner

    check_output_path(args.out, overwrite=True)
    spacing = read_json(resolve_model_path(args.model) / INDEX_NAME).get("config", {}).get("spacing", [5.0])
    if len(set(spacing)) != 1:
        raise ValueError(f"the refiner is trained for isotropic native spacing; the model's is {spacing}")
    config = RefinerTrainConfig(out=str(args.out), native_spacing=float(spacing[0]), stages=args.stages,
                                steps=args.steps, n_patches=args.n_patches, patch=args.patch,
                                channels=args.channels, blocks=args.blocks, seed=args.seed)
    summary = train_refiner(config, progress=not args.quiet)
    for stage in summary["stages"]:
        v = stage["validation"]
        print(f"stage {stage['stage']} ({stage['spacing_mm']:g} mm): MAE {v['mae_hu']['refiner']:.1f} HU vs "
              f"trilinear {v['mae_hu']['trilinear']:.1f}; edges {v['edge_mae_hu']['refiner']:.1f} vs "
              f"{v['edge_mae_hu']['trilinear']:.1f}")
    print(f"refiner: {args.out} ({summary['train_seconds']:.0f} s)")
    return 0


def _register_reader(sub) -> None:
    p = sub.add_parser("reader", help="train the report reader (text encoder + tagging head) on written reports")
    p.add_argument("--out", type=Path, required=True, help="output folder for the trained reader")
    p.add_argument("--encoder", default=None,
                   help="text encoder folder or cached hub id to start from (default: the embedded model's encoder)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--n-train", type=int, default=16000, help="written training reports")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate of the head (and encoder unless --encoder-lr)")
    p.add_argument("--encoder-lr", type=float, default=None, help="learning rate of the encoder")
    p.add_argument("--token-dropout", type=float, default=0.0,
                   help="fraction of tokens masked in training batches (robustness to unseen words)")
    p.add_argument("--freeze-embeddings", action="store_true", help="keep the encoder's word embeddings fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_reader)


def run_reader(args) -> int:
    from medgen.io.atomic import check_output_path
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.reader.train import ReaderTrainConfig, train_reader

    check_output_path(args.out, overwrite=True)
    encoder = args.encoder or str(resolve_model_path(None) / "text_encoder")
    if not 0.0 <= args.token_dropout < 1.0:
        raise ValueError(f"--token-dropout must be in [0, 1), got {args.token_dropout}")
    config = ReaderTrainConfig(encoder=encoder, out=str(args.out), n_train=args.n_train, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, encoder_lr=args.encoder_lr,
                               token_dropout=args.token_dropout, freeze_embeddings=args.freeze_embeddings)
    summary = train_reader(config, progress=not args.quiet)
    scores = summary["val_scores_training_families"]
    print(f"reader: {args.out} ({summary['train_seconds']:.0f} s; validation on training families: all-correct "
          f"{scores['all_correct']['accuracy']:.3f})")
    return 0


def run(args) -> int:
    from medgen.config import load_config

    stage = args.train_command
    needs = {"vae": ("vae",), "latents": (), "ldm": ("ldm",), "all": ("vae", "ldm")}[stage]
    config = load_config(args.config, args.overrides, stages=needs)
    progress = not args.quiet
    resume = getattr(args, "resume", False)
    if stage in ("vae", "all"):
        from medgen.training import train_vae

        path = train_vae(config, resume=resume, device=args.device, progress=progress)
        print(f"autoencoder: {path}")
    if stage in ("latents", "all"):
        from medgen.training import cache_latents

        path = cache_latents(config, device=args.device, force=getattr(args, "force", False), progress=progress)
        print(f"latents: {path}")
    if stage in ("ldm", "all"):
        from medgen.training import train_ldm

        path = train_ldm(config, resume=resume, device=args.device, progress=progress)
        print(f"pipeline: {path}")
    return 0


# integer options of `medgen train slices reader` (None: the recipe's default) and their help
_SLICE_READER_INT_OPTIONS = {"n_subjects": None, "lm_steps": None,
                             "ground_steps": "vision grounding steps on per-patch layout labels (0 = none)",
                             "align_steps": None, "instruct_steps": None, "batch_size": None, "n_held_out": None}


def _register_slices(sub) -> None:
    slices = sub.add_parser("slices", help="train the 2D slice models (preview)")
    models = slices.add_subparsers(dest="slices_model", required=True)
    p = models.add_parser("preview", help="SDXL-style text->slice preview: 2D autoencoder, base and refiner UNets")
    p.add_argument("--out", type=Path, required=True, help="output preview model folder")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML of recipe options (configs/slices-preview.yaml); flags below override it")
    p.add_argument("--model", type=Path, default=None,
                   help="pipeline folder whose text encoder, reader and anatomy bank the preview uses "
                        "(default: the embedded model)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder of finished stages (default OUT.work); a rerun resumes from it")
    for name in ("n_subjects", "vae_steps", "base_steps", "refiner_steps", "student_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None,
                       help="distilled student sampler steps (0 = none)" if name == "student_steps" else None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run_slices_preview)
    r = models.add_parser("reader", help="LLaVA-style slice reader: LM, projector alignment, instruction tuning")
    r.add_argument("--out", type=Path, required=True, help="output slice reader folder")
    r.add_argument("--pairs", type=Path, default=None,
                   help="training pairs (the preview's OUT.work/pairs.npz); default: build them")
    for name, help_text in _SLICE_READER_INT_OPTIONS.items():
        r.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None, help=help_text)
    r.add_argument("--clip", type=Path, default=None,
                   help="slice CLIP folder (`medgen slices train-clip`) whose image tower starts the vision tower")
    r.add_argument("--frozen-vision", action="store_true", help="keep the vision tower frozen in stage 2 (LLaVA 1.5)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    r.set_defaults(func=run_slices_reader)


def run_slices_preview(args) -> int:
    import yaml

    from medgen.pipelines.default_model import resolve_model_path
    from medgen.slices.generator.recipe import train_preview_model

    options = {}
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: config file not found")
        options = yaml.safe_load(args.config.read_text()) or {}
    options.update({k: getattr(args, k) for k in ("n_subjects", "vae_steps", "base_steps", "refiner_steps",
                                                  "student_steps")
                    if getattr(args, k) is not None})
    model = resolve_model_path(args.model)
    bank = model / "anatomy_bank"
    record = train_preview_model(args.out, text_encoder_dir=model / "text_encoder", reader_dir=model / "reader",
                                 anatomy_bank_dir=bank if bank.is_dir() else None, work=args.work,
                                 overwrite=args.overwrite, **options)
    print(f"preview model: {args.out}; autoencoder ceiling {record['vae']['ceiling_held_out']}")
    return 0


def run_slices_reader(args) -> int:
    from medgen.io.atomic import check_output_path
    from medgen.slices.describer.recipe import train_slice_reader

    check_output_path(args.out, overwrite=args.overwrite)
    options = {k: getattr(args, k) for k in _SLICE_READER_INT_OPTIONS if getattr(args, k) is not None}
    record = train_slice_reader(args.out, pairs_path=args.pairs, clip=args.clip, overwrite=args.overwrite,
                                train_vision=not args.frozen_vision, **options)
    print(f"slice reader: {args.out}; held-out: {record['held_out']['en']} (EN), {record['held_out']['zh']} (ZH)")
    return 0
