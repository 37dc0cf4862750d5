"""SDXL-style text -> slice preview: data (`data`), 2D latent space (`autoencoder`), model (`model`), training
(`train`, `recipe`), sampling (`sampling`), the report -> key slice pipeline (`pipeline`) and its PNG (`render`).

    from medgen.slices.generator.pipeline import SlicePreviewPipeline
    result = SlicePreviewPipeline.from_pretrained()("A 25 mm solid nodule in the right lower lobe.", n=4, seed=0)
    result.hu  # (4, 128, 128) HU, display orientation
"""
