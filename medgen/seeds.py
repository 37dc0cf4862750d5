"""Phantom seed ranges: which part of medgen draws its subjects from where.

A held-out range is only ever drawn from by its one evaluation; no other range may overlap it
(tests/test_seeds.py checks), and the dataset builder's random subject seeds skip every held-out range.
Training ranges may overlap each other: they only ever feed training.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRange:
    start: int
    size: int
    held_out: bool
    used_by: str

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, seed: int) -> bool:
        return self.start <= int(seed) < self.stop

    def seed(self, i: int) -> int:
        """The `i`-th seed of the range (ValueError past its end)."""
        if not 0 <= int(i) < self.size:
            raise ValueError(f"seed index {i} is outside the {self.size} seeds reserved for {self.used_by}")
        return self.start + int(i)


FIDELITY_CASE_SEED = 2024  # `medgen evaluate` held-out cases: subject i has seed FIDELITY_CASE_SEED * 100_000 + i
REFINER_SEED = 0  # the refiner recipe's default seed: stage k (1-3), patch i has seed k * 100_000 + i (+ 1_000_000 for val)

SEED_RANGES: dict[str, SeedRange] = {
    "utility.real": SeedRange(310_000, 100_000, False, "medgen evaluate --utility: real training phantoms"),
    "utility.test": SeedRange(770_000, 100_000, True, "medgen evaluate --utility: held-out real phantoms"),
    "slices.train": SeedRange(530_000, 100_000, False, "2D slice training sets"),
    "slices.eval": SeedRange(885_000, 100_000, True, "2D slice evaluation"),
    "evaluation.cases": SeedRange(FIDELITY_CASE_SEED * 100_000, 100_000, True,
                                  "medgen evaluate: held-out report/phantom cases"),
    "evaluation.alignment": SeedRange(10_000_000, 10_000_000, False, "medgen evaluate: alignment-model training"),
    "refiner.train": SeedRange(REFINER_SEED * 10_000_000 + 100_000, 300_000, False, "refiner training patches"),
    "refiner.val": SeedRange(REFINER_SEED * 10_000_000 + 1_100_000, 300_000, True, "refiner validation patches"),
    # the lesion analyzer's thresholds are calibrated on the first range and reported on the second, which no
    # tuning ever drew from (docs/studies/validate_analyzer.py); case i with lesions has seed start + i, normal
    # case i seed start + ANALYSIS_NORMAL_OFFSET + i (phantom-v2 cases of validate_analyzer.py: index 90,000+ / 95,000+)
    "analysis.calibration": SeedRange(51_000_000, 100_000, False,
                                      "validate_analyzer.py --ranges analysis.calibration: analyzer tuning phantoms"),
    "analysis.validation": SeedRange(50_000_000, 100_000, True,
                                     "validate_analyzer.py: held-out analyzer recall phantoms"),
    "phantom_v2.anatomy": SeedRange(70_000_000, 100_000, True,
                                    "benchmarks/bench_phantom_v2_anatomy.py: phantom v2 anatomy measurement"),
    "studies.blob_source": SeedRange(60_000_000, 100_000, True, "docs/studies/blob_source.py: normal subjects"),
}
ANALYSIS_NORMAL_OFFSET = 50_000


def held_out_ranges() -> list[SeedRange]:
    return [r for r in SEED_RANGES.values() if r.held_out]


def is_held_out(seed: int) -> bool:
    """Whether `seed` belongs to a held-out evaluation range (training data must not draw it)."""
    return any(seed in r for r in held_out_ranges())
