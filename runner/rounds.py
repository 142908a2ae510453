"""How many rounds a cell takes: a fixed count, or rounds until a precision target.

A plan of fixed rounds (`[measure] rounds`) gives every cell that many, the reps split over
them. A plan with `[measure] precision` gives every cell `min_rounds` such rounds, then keeps
measuring only the cells whose decode median is not yet known to within +-precision: each
further round is short (one generation, and the prefill and e2e reps in proportion), still
interleaved with the other cells and reshuffled, until the cell reaches its target or
`max_rounds`. Where a budget cannot give every open cell another round, the cells that need
one most go first (the widest interval per round used).

The interval is the analysis's own: Student's t on the log medians of the cell's rounds
(`analysis.intervals`, a leaf module of numpy and scipy; the round median is
`runner.runfiles.decode_round_medians`), so a cell stops where the interval the analysis draws
over its rounds is as narrow as the plan asked. Torch-free: a processes-mode parent decides
which rounds to start from the round files alone.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runner.runfiles import decode_round_medians
from vocabulary import PHASES, STOP_MAX_ROUNDS, STOP_PRECISION

CONFIDENCE = 0.95  # the analysis's intervals are 95% (analysis.stats, analysis.run_results)


def reps_in_round(total: int, rounds: int, round_index: int) -> int:
    """The reps of a phase that round `round_index` takes: the total split as evenly as possible."""
    return total // rounds + (1 if round_index < total % rounds else 0)


def short_round_reps(settings) -> dict[str, int]:
    """The reps of an adaptive round past min_rounds: one generation of decode, and the prefill
    and e2e reps in the plan's proportion to it (at least one each), so a round costs about a
    generation and every phase still gets a median per round."""
    per_generation = {phase: getattr(settings, f"{phase}_reps") / settings.decode_reps for phase in PHASES}
    return {phase: max(1, round(share)) for phase, share in per_generation.items()}


def decode_half_width(round_records: Sequence[Mapping]) -> float | None:
    """The relative half-width of the 95% t interval of the decode median across these rounds
    (one record per round, as `runner.protocol.measure_round` returns them); None below two."""
    from analysis.intervals import relative_half_width

    merged = {"decode": [], "decode_round": []}
    for record in round_records:
        merged["decode"] += record.get("decode") or []
        merged["decode_round"] += [record["round"]] * len(record.get("decode") or [])
    medians = [m for m in decode_round_medians(merged) if m > 0]
    return relative_half_width([math.log(m) for m in medians], CONFIDENCE)


@dataclass(frozen=True)
class RoundPolicy:
    """Which rounds a cell takes and when it is done; `precision` None: a fixed count."""

    min_rounds: int
    max_rounds: int
    precision: float | None = None

    @classmethod
    def of(cls, settings, rounds: int | None = None) -> "RoundPolicy":
        """The policy of a plan's `[measure]`; `rounds` is a fixed run's recorded count (a
        protocol-1 run resumes with 1)."""
        if settings.precision is None:
            count = rounds or settings.rounds
            return cls(count, count)
        return cls(settings.min_rounds, settings.max_rounds, settings.precision)

    @property
    def adaptive(self) -> bool:
        return self.precision is not None

    def reps(self, settings, round_index: int) -> dict[str, int]:
        """The reps of each phase in round `round_index`: the plan's split over its rounds (a
        fixed plan's `rounds`, an adaptive plan's first min_rounds), then short rounds."""
        if self.adaptive and round_index >= self.min_rounds:
            return short_round_reps(settings)
        split = self.min_rounds if self.adaptive else settings.rounds
        return {phase: reps_in_round(getattr(settings, f"{phase}_reps"), split, round_index) for phase in PHASES}

    def stop(self, round_records: Sequence[Mapping]) -> str | None:
        """Why the cell takes no further round (vocabulary.STOP_REASONS; "" in a fixed
        plan whose rounds are all done), or None while it needs another."""
        used = len(round_records)
        if not self.adaptive:
            return "" if used >= self.max_rounds else None
        if used < self.min_rounds:
            return None
        half = decode_half_width(round_records)
        if half is not None and half <= self.precision:
            return STOP_PRECISION
        return STOP_MAX_ROUNDS if used >= self.max_rounds else None

    def need(self, round_records: Sequence[Mapping]) -> float:
        """How much a cell needs another round: its relative half-width per round used (an
        interval that is wide on few rounds first); infinite below two rounds."""
        half = decode_half_width(round_records)
        return math.inf if half is None else half / max(len(round_records), 1)

    def choose(self, order: Sequence[int], records: Mapping[int, Mapping[int, Mapping]],
               seconds_left: float | None) -> list[int]:
        """The cells of one adaptive round past min_rounds, in the order to measure them.

        `order` is the open cells in the round's reshuffled order. With time for all of them (or
        no budget) all of them; else the most needed first while their last rounds' wall time
        fits what is left (at least one). The chosen keep the round's order: need decides who
        gets a round, never the position in it, so drift in time cannot line up with how noisy
        a cell is."""
        def cost(i: int) -> float:
            kept = records.get(i) or {}
            return float(kept[max(kept)].get("round_s") or 0.0) if kept else 0.0

        if seconds_left is None or sum(cost(i) for i in order) <= seconds_left:
            return list(order)
        chosen, spent = set(), 0.0
        for i in sorted(order, key=lambda i: -self.need(list((records.get(i) or {}).values()))):
            if chosen and spent + cost(i) > seconds_left:
                continue
            chosen.add(i)
            spent += cost(i)
        return [i for i in order if i in chosen]
