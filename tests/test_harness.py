"""The bench harness (benches/python/harness.py) the benches, the demo and the Redis fixtures
share: its one percentile definition and its seeded Zipf sampler."""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches" / "python"))
from harness import free_port, pct, zipf


def test_pct_is_the_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert pct(values, 50) == 50.0
    assert pct(values, 99) == 99.0
    assert pct(values, 99.9) == 100.0
    assert pct(values, 100) == 100.0
    assert pct(values, 0) == 1.0
    assert pct([1.0, 2.0], 50) == 1.0  # the lower middle of an even count
    assert pct([7.0], 99) == 7.0
    assert math.isnan(pct([], 50))


def test_zipf_is_seeded_in_range_and_skewed() -> None:
    draw = zipf(50, random.Random(7))
    ranks = [draw() for _ in range(5000)]
    again = zipf(50, random.Random(7))
    assert ranks == [again() for _ in range(5000)]
    assert all(0 <= r < 50 for r in ranks)
    counts = Counter(ranks)
    assert counts[0] > counts[1] > counts[10] > 0


def test_free_port_is_bindable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
