"""Conditions on saga data: each operator, no coercion, missing paths, hostile data (which
never raises), readable descriptions, and malformed conditions refused in one line."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from orchestrator.core.conditions import (
    MAX_DEPTH,
    AllOf,
    AnyOf,
    Compare,
    Not,
    depth,
    lookup,
    why_false,
)
from orchestrator.core.definition import StepDef

DATA: dict[str, Any] = {
    "amount": 1500,
    "price": 9.5,
    "text_amount": "1500",
    "flag": True,
    "zero": 0,
    "nothing": None,
    "customer": {"tier": "gold", "id": "c-1", "limits": {"daily": 200}},
    "items": [{"sku": "a"}],
    "name": "ada",
}


# ---- operators ---------------------------------------------------------------------------------

CASES = [
    ("amount", "gt", 1000, True),
    ("amount", "gt", 1500, False),
    ("amount", "ge", 1500, True),
    ("amount", "lt", 1500.5, True),
    ("amount", "le", 1499, False),
    ("price", "gt", 9, True),
    ("price", "eq", 9.5, True),
    ("amount", "eq", 1500.0, True),  # 1500 and 1500.0 are the same number
    ("amount", "ne", 1500, False),
    ("customer.tier", "eq", "gold", True),
    ("customer.tier", "ne", "silver", True),
    ("customer.limits.daily", "ge", 200, True),
    ("customer.tier", "in", ["gold", "platinum"], True),
    ("customer.tier", "in", ("silver",), False),
    ("amount", "in", [1, 1500], True),
    ("nothing", "eq", None, True),
    ("nothing", "exists", None, True),
    ("zero", "exists", None, True),
    ("customer.id", "exists", None, True),
    ("flag", "eq", True, True),
]


@pytest.mark.parametrize(("path", "op", "value", "expected"), CASES)
def test_each_operator_compares_as_documented(
    path: str, op: str, value: object, expected: bool
) -> None:
    """Numbers as numbers, text as text, the dotted path walked through objects."""
    assert Compare(path, op, value).evaluate(DATA) is expected  # type: ignore[arg-type]


NO_COERCION = [
    ("text_amount", "gt", 999),  # the string "1500" is not a number
    ("text_amount", "eq", 1500),
    ("amount", "eq", "1500"),
    ("flag", "gt", 0),  # a boolean is not a number
    ("flag", "eq", 1),  # Python says True == 1; a condition does not
    ("zero", "eq", False),
    ("nothing", "lt", 1),
    ("customer", "gt", 1),
    ("items", "eq", "a"),
    ("amount", "in", ["1500"]),
    ("flag", "in", [1]),
]


@pytest.mark.parametrize(("path", "op", "value"), NO_COERCION)
def test_values_of_another_kind_never_match(path: str, op: str, value: object) -> None:
    """No coercion: a string is never a number, a boolean never a number, None never 0."""
    assert Compare(path, op, value).evaluate(DATA) is False  # type: ignore[arg-type]


MISSING = ["missing", "customer.missing", "customer.tier.deeper", "items.0.sku", "name.length",
           "nothing.inside", "amount.x"]  # fmt: skip


@pytest.mark.parametrize("path", MISSING)
@pytest.mark.parametrize(
    ("op", "value"),
    [("gt", 0), ("ge", 0), ("lt", 0), ("le", 0), ("eq", None), ("ne", "x"), ("in", ["x"]),
     ("exists", None)],
)  # fmt: skip
def test_a_missing_path_makes_every_op_false(path: str, op: str, value: object) -> None:
    """A path that is absent, or walks into a list, a string, a number or None, is missing:
    every op is false (even ne and exists) and Not of it is true."""
    c = Compare(path, op, value)  # type: ignore[arg-type]
    assert c.evaluate(DATA) is False
    assert Not(c).evaluate(DATA) is True


@pytest.mark.parametrize("data", [None, [], "amount", 7, 1.5, True, ["amount"], {1: 2}])
def test_data_that_is_not_an_object_is_all_missing(data: object) -> None:
    """Saga data that is not an object (or has no text keys) has no paths; nothing raises."""
    for c in (Compare("amount", "gt", 0), Compare("amount", "exists"), Compare("1", "eq", 2)):
        assert c.evaluate(data) is False


def test_lookup_walks_objects_only() -> None:
    """The value at the path, whatever it is; a list is a leaf, not something to index."""
    assert lookup(DATA, "customer.limits") == {"daily": 200}
    assert lookup(DATA, "items") == [{"sku": "a"}]
    assert (
        lookup(DATA, "items.0") is not None and Compare("items.0", "exists").evaluate(DATA) is False
    )


def test_odd_numbers_in_the_data_compare_safely() -> None:
    """NaN never compares true, infinities order, huge integers compare exactly."""
    data = {"nan": math.nan, "inf": math.inf, "big": 10**40}
    assert not Compare("nan", "gt", 0).evaluate(data) and not Compare("nan", "le", 0).evaluate(data)
    assert Compare("nan", "ne", 0).evaluate(data)
    assert Compare("inf", "gt", 1e308).evaluate(data)
    assert Compare("big", "gt", 10**40 - 1).evaluate(data)
    assert not Compare("big", "eq", float(10**40) + 1e25).evaluate(data)


def test_combinators() -> None:
    """AllOf all, AnyOf any, Not negates; they nest."""
    big = Compare("amount", "gt", 1000)
    gold = Compare("customer.tier", "eq", "gold")
    missing = Compare("nope", "exists")
    assert AllOf([big, gold]).evaluate(DATA) and not AllOf([big, missing]).evaluate(DATA)
    assert AnyOf([missing, gold]).evaluate(DATA) and not AnyOf([missing]).evaluate(DATA)
    assert Not(missing).evaluate(DATA) and not Not(big).evaluate(DATA)
    assert AllOf([AnyOf([missing, big]), Not(AllOf([gold, missing]))]).evaluate(DATA)


# ---- describe ----------------------------------------------------------------------------------

DESCRIBED = [
    (Compare("amount", "gt", 1000), "amount > 1000"),
    (Compare("amount", "ge", 1000.5), "amount >= 1000.5"),
    (Compare("amount", "lt", 0), "amount < 0"),
    (Compare("amount", "le", -3), "amount <= -3"),
    (Compare("customer.tier", "eq", "gold"), 'customer.tier == "gold"'),
    (Compare("flag", "ne", True), "flag != true"),
    (Compare("x", "eq", None), "x == null"),
    (Compare("customer.tier", "in", ["gold", "silver"]), 'customer.tier in ["gold", "silver"]'),
    (Compare("customer.id", "exists"), "customer.id exists"),
    (Not(Compare("a", "exists")), "not (a exists)"),
    (
        AllOf(
            [Compare("amount", "gt", 1000), AnyOf([Compare("a", "exists"), Compare("b", "exists")])]
        ),
        "amount > 1000 and (a exists or b exists)",
    ),
    (AnyOf([Compare("a", "eq", 1), Not(Compare("b", "eq", 2))]), "a == 1 or (not (b == 2))"),
]


@pytest.mark.parametrize(("c", "text"), DESCRIBED, ids=[t for _, t in DESCRIBED])
def test_describe_reads_like_the_condition(c: object, text: str) -> None:
    """describe() is what status, history and the docs show."""
    assert c.describe() == text  # type: ignore[attr-defined]


def test_why_false_reads_unambiguously() -> None:
    """A skipped step's note: `not` binds to the whole condition, with brackets when needed."""
    assert why_false(Compare("amount", "gt", 1000)) == "not amount > 1000"
    both = AllOf([Compare("a", "exists"), Compare("b", "exists")])
    assert why_false(both) == "not (a exists and b exists)"
    assert why_false(Not(Compare("a", "exists"))) == "not (not (a exists))"


def test_a_long_value_is_cut_in_the_description() -> None:
    """A description stays one short line."""
    text = Compare("x", "eq", "y" * 500).describe()
    assert len(text) < 100 and text.endswith("...")


def test_conditions_are_hashable_values() -> None:
    """Lists become tuples: a condition (and the step holding it) is a frozen, hashable value."""
    c = AllOf([Compare("t", "in", ["a", "b"])])
    assert c == AllOf((Compare("t", "in", ("a", "b")),)) and hash(c)
    assert hash(StepDef("s", "p", "Do", "Undo", when=c))


# ---- malformed conditions ----------------------------------------------------------------------

deep: Any = Compare("a", "exists")
for _ in range(MAX_DEPTH - 1):
    deep = Not(deep)

MALFORMED = {
    "unknown op": (lambda: Compare("amount", "greater", 1), "op must be one of gt, ge, lt"),
    "op not text": (lambda: Compare("amount", None, 1), "op must be one of"),
    "empty path": (lambda: Compare("", "gt", 1), "the path must be dotted keys"),
    "path with a space": (lambda: Compare("my amount", "gt", 1), "the path must be dotted keys"),
    "path with an empty part": (lambda: Compare("a..b", "gt", 1), "the path must be dotted keys"),
    "path starting with a dot": (lambda: Compare(".a", "gt", 1), "the path must be dotted keys"),
    "path not text": (lambda: Compare(["a"], "gt", 1), "the path must be dotted keys"),
    "path too long": (lambda: Compare("a" * 201, "gt", 1), "longer than 200"),
    "ordering on text": (lambda: Compare("amount", "gt", "1000"), "gt compares numbers"),
    "ordering on a boolean": (lambda: Compare("amount", "lt", True), "lt compares numbers"),
    "ordering on NaN": (lambda: Compare("amount", "ge", math.nan), "ge compares numbers"),
    "ordering on infinity": (lambda: Compare("amount", "le", math.inf), "le compares numbers"),
    "eq on a list": (lambda: Compare("amount", "eq", [1]), "must be a string, a finite number"),
    "eq on an object": (lambda: Compare("amount", "ne", {"a": 1}), "must be a string"),
    "exists with a value": (lambda: Compare("amount", "exists", True), "exists takes no value"),
    "in on a string": (lambda: Compare("t", "in", "gold"), "in takes a non-empty list"),
    "in on nothing": (lambda: Compare("t", "in", []), "in takes a non-empty list"),
    "in with an object": (lambda: Compare("t", "in", [{"a": 1}]), "in takes up to 100"),
    "in too long": (lambda: Compare("t", "in", list(range(101))), "in takes up to 100"),
    "AllOf of nothing": (lambda: AllOf([]), "AllOf takes a non-empty list of conditions"),
    "AllOf of one condition": (lambda: AllOf(Compare("a", "exists")), "not one condition"),
    "AnyOf of a string": (lambda: AnyOf("a > 1"), "AnyOf takes a non-empty list"),
    "AnyOf with a stranger": (
        lambda: AnyOf([Compare("a", "exists"), "b > 1"]),
        'AnyOf: "b > 1" is not a condition (use Compare, AllOf, AnyOf or Not)',
    ),
    "Not of a function": (lambda: Not(lambda d: True), "is not a condition"),
    "too deep": (lambda: Not(deep), f"nest deeper than {MAX_DEPTH} levels"),
    "StepDef.when a function": (
        lambda: StepDef("s", "p", "Do", "Undo", when=lambda d: True),
        "when must be a condition",
    ),
    "StepDef.when a string": (
        lambda: StepDef("s", "p", "Do", "Undo", when="amount > 1000"),
        "when must be a condition (Compare, AllOf, AnyOf or Not), not str",
    ),
}


@pytest.mark.parametrize(("build", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_condition_is_refused_in_one_line(build: object, message: str) -> None:
    """Each mistake is a ValueError whose one line names the condition and the problem."""
    with pytest.raises(ValueError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_deepest_allowed_nesting_is_accepted() -> None:
    """MAX_DEPTH levels build and evaluate."""
    assert deep.evaluate({"a": 1}) is (MAX_DEPTH % 2 == 1)


# ---- hostile data never raises ------------------------------------------------------------------

json_values = hst.recursive(
    hst.none() | hst.booleans() | hst.integers() | hst.floats() | hst.text(max_size=5),
    lambda inner: (
        hst.lists(inner, max_size=3)
        | hst.dictionaries(hst.sampled_from(["a", "b", "amount", "0"]), inner, max_size=3)
    ),
    max_leaves=12,
)
conditions = hst.recursive(
    hst.builds(
        Compare,
        hst.sampled_from(["a", "b", "amount", "a.b", "a.0", "b.amount.a"]),
        hst.sampled_from(["gt", "ge", "lt", "le"]),
        hst.integers(-5, 5),
    )
    | hst.builds(
        Compare,
        hst.sampled_from(["a", "amount", "a.b"]),
        hst.sampled_from(["eq", "ne"]),
        hst.none() | hst.booleans() | hst.integers(-2, 2) | hst.text(max_size=2),
    )
    | hst.builds(Compare, hst.sampled_from(["a", "a.b"]), hst.just("exists"))
    | hst.builds(Compare, hst.just("a"), hst.just("in"), hst.lists(hst.integers(0, 2), min_size=1)),
    lambda inner: (
        hst.builds(AllOf, hst.lists(inner, min_size=1, max_size=3))
        | hst.builds(AnyOf, hst.lists(inner, min_size=1, max_size=3))
        | hst.builds(Not, inner)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(conditions, json_values)
def test_any_condition_on_any_data_returns_a_bool(c: Any, data: object) -> None:
    """Total: hostile data of any shape gives True or False, and Not is its opposite."""
    got = c.evaluate(data)
    assert isinstance(got, bool)
    if depth(c) < MAX_DEPTH:
        assert Not(c).evaluate(data) is (not got)
    assert isinstance(c.describe(), str) and "\n" not in c.describe()
