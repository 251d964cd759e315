"""The fuzz targets (tools/fuzz) in the suite, bounded: every input of the committed corpus,
which holds the seeds and what coverage-guided runs found, then inputs that Hypothesis derives
from it. Each must end as a valid value or the project's own error (see tools/fuzz/targets.py);
``python -m tools.fuzz`` is the long mode, a million inputs per target."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.fuzz import __main__ as fuzz
from tools.fuzz.targets import TARGETS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_corpus_input_ends_in_a_value_or_a_clear_error(target: str) -> None:
    inputs = fuzz.corpus(target)
    assert inputs, f"tools/fuzz/corpus/{target} is empty: run python -m tools.fuzz --seed"
    for data in inputs:
        TARGETS[target](data)


@pytest.mark.parametrize("target", sorted(set(TARGETS) - {"config"}))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_corpus_inputs_end_in_a_value_or_a_clear_error(
    target: str, data: st.DataObject
) -> None:
    pool = fuzz.corpus(target)
    seed = data.draw(st.sampled_from(pool))
    rng = data.draw(st.randoms(use_true_random=False))
    TARGETS[target](fuzz.mutate(seed, rng))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_config_files_of_any_bytes_end_in_settings_or_a_config_error(raw: bytes) -> None:
    TARGETS["config"](raw)


def test_the_seeds_are_accepted_as_valid(tmp_path: Path) -> None:
    """A corpus of inputs every parser refuses would fuzz nothing but the first byte."""
    from ambrosia_edge.checkpoint import decode_checkpoint
    from ambrosia_edge.page import decode_page
    from tools.fuzz.seeds import seeds

    made = seeds()
    decode_checkpoint(made["checkpoint"][0], "seed")
    for body in made["page"]:
        decode_page(body, "seed")
