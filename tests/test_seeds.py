"""Held-out phantom seed ranges never overlap any other range, and training data never draws from them."""

import itertools

import pytest

from medgen.seeds import SEED_RANGES, is_held_out


def test_held_out_ranges_overlap_nothing():
    for (a_name, a), (b_name, b) in itertools.combinations(SEED_RANGES.items(), 2):
        if a.held_out or b.held_out:
            assert a.stop <= b.start or b.stop <= a.start, f"{a_name} overlaps {b_name}"


def test_consumers_draw_from_their_ranges():
    from medgen.evaluation.fidelity import make_heldout_cases
    from medgen.evaluation.utility import UtilitySettings
    from medgen.slices.sources import EVAL_SEED0, TRAIN_SEED0

    assert EVAL_SEED0 in SEED_RANGES["slices.eval"] and TRAIN_SEED0 in SEED_RANGES["slices.train"]
    settings = UtilitySettings()
    assert settings.test_seed in SEED_RANGES["utility.test"]
    assert settings.real_seed + settings.n_real - 1 in SEED_RANGES["utility.real"]
    cases = make_heldout_cases(2, shape=16, spacing=20.0)
    assert all(c.subject_seed in SEED_RANGES["evaluation.cases"] for c in cases)


def test_seed_index_past_the_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        SEED_RANGES["utility.test"].seed(SEED_RANGES["utility.test"].size)


def test_dataset_builder_skips_held_out_seeds(monkeypatch):
    import medgen.phantom.chest as chest
    from medgen.dataset.builder import synthesize_subject

    held = SEED_RANGES["utility.test"].start
    draws = iter([held, SEED_RANGES["slices.eval"].start + 5, 12345])

    class Rng:  # draws the given seeds
        def integers(self, *args, **kwargs):
            return next(draws)

    rng = Rng()
    used = []

    class Drawn(Exception):
        pass

    def fake_phantom(findings, **kwargs):
        used.append(kwargs["seed"])
        raise Drawn

    monkeypatch.setattr(chest, "make_phantom", fake_phantom)
    monkeypatch.setattr(chest, "sample_findings", lambda rng, p_normal: None)
    with pytest.raises(Drawn):
        synthesize_subject(rng, shape=16, spacing=20.0)
    assert used == [12345] and is_held_out(held) and not is_held_out(12345)
