"""The statistics of the suite: percentiles, medians, ratios and the rate of a throughput run.

A leaf module, used both while measuring (the progress lines, the rate of each run) and when
reporting (medians over repetitions, ratios against baselines).
"""

from __future__ import annotations

import statistics
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b, or NaN when either is missing (NaN) or b is zero: a ratio never raises."""
    return a / b if b and b == b and a == a else float("nan")


def throughput_rate(r: dict[str, Any]) -> tuple[float, str]:
    """Messages/s after the first page the server saw, up to the last message (for the
    typical app: after the first message the server executed).

    When nearly everything arrived in that first page (a run too small for the rate to settle),
    fall back to the whole run, from the client's go to the server's last message.
    """
    s = r["server"]
    if "first_executed_t" in s and s["last_t"] > s["first_executed_t"]:
        # the typical app's server notes its first executed message itself
        return (s["last_n"] - 1) / (s["last_t"] - s["first_executed_t"]), "first-executed-to-last"
    after_first = s["last_n"] - s["first_n"]
    if after_first >= r["total"] // 2 and s["last_t"] > s["first_t"]:
        return after_first / (s["last_t"] - s["first_t"]), "first-to-last"
    return r["total"] / (s["last_t"] - r["client"]["go_t"]), "go-to-last"
