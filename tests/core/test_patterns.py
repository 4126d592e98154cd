"""The receive pattern language: ``matches`` (and the matcher built from patterns) agree
with the language as ``receive`` documents it, on any value and pattern.

``matches`` takes shortcuts for the common patterns (plain values, tuples); the reference
below is the language written out plainly, one rule per line, in the documented order.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nodelab import ANY, on
from nodelab.runtime.mailbox import NO_MATCH
from nodelab.runtime.patterns import Matched, matcher, matches


def reference(pattern: Any, value: Any) -> bool:
    if pattern is ANY:
        return True
    if isinstance(pattern, type):
        return isinstance(value, pattern)
    if isinstance(pattern, tuple):
        return (type(value) is tuple and len(value) == len(pattern)
                and all(reference(p, v) for p, v in zip(pattern, value, strict=True)))
    if isinstance(pattern, list):
        return (type(value) is list and len(value) == len(pattern)
                and all(reference(p, v) for p, v in zip(pattern, value, strict=True)))
    if callable(pattern):
        return bool(pattern(value))
    return pattern == value


leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                   st.text(max_size=3), st.binary(max_size=2))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)), max_leaves=8)
pattern_leaves = st.one_of(
    leaves, st.just(ANY), st.sampled_from([int, str, bool, float, tuple, list, object]),
    st.just(lambda v: isinstance(v, int) and v > 0))
patterns = st.recursive(pattern_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)), max_leaves=8)


@given(patterns, values)
def test_matches_agrees_with_the_language(pattern: Any, value: Any) -> None:
    assert matches(pattern, value) == reference(pattern, value)


@given(values)
def test_a_pattern_made_from_a_value_matches_it(value: Any) -> None:
    assert matches(value, value)


@given(st.lists(patterns, min_size=1, max_size=3), values)
def test_the_matcher_takes_what_any_pattern_matches(some: list[Any], value: Any) -> None:
    expected = value if any(reference(p, value) for p in some) else NO_MATCH
    assert matcher(tuple(some))(value) is expected


@given(st.lists(patterns, min_size=1, max_size=3), values)
def test_clauses_run_the_handler_of_the_first_clause_that_matches(some: list[Any],
                                                                  value: Any) -> None:
    clauses = tuple(on(p, lambda m, i=i: (i, m)) for i, p in enumerate(some))
    result = matcher(clauses)(value)
    first = next((i for i, p in enumerate(some) if reference(p, value)), None)
    if first is None:
        assert result is NO_MATCH
    else:
        assert type(result) is Matched and result.handler(result.message) == (first, value)
