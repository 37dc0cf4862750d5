"""LLaVA-style slice reader: questions and answers (`questions`), the model (`model`), LLaVA's training stages
(`train`, `recipe`), held-out scoring (`evaluate`) and `medgen describe` (`describe`).

    from medgen.slices.describer.model import SliceReader
    reader = SliceReader.from_pretrained("medgen/assets/default-model/slice_reader")
    reader.read([hu_slice], ["Is there a lesion?", "Which lobe is the largest lesion in?"])
"""
