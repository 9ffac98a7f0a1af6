"""mathwp: the post's normalisation examples, bracket removal (hypothesis), safe_eval bounds, data, solver."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwell.seq2seq.mathwp import (
    MathWordProblemDataset,
    answers_match,
    normalize_equation,
    normalize_question,
    remove_redundant_brackets,
    safe_eval,
)


@pytest.mark.parametrize(
    ("raw", "normalised", "short", "value"),
    [
        ("x=150*20%/5%-150", "150*(20/100)/(5/100)-150", "150*20/100/(5/100)-150", 450),
        ("x=(3.14*(4+1)**2)-(3.14*4**2)", "(3.14*(4+1)**2)-(3.14*4**2)", "3.14*(4+1)**2-3.14*4**2", 28.26),
        ("x=3(1/2)*4", "(3+1/2)*4", "(3+1/2)*4", 14),
        ("x=(1/2):(1/4)", "(1/2)/(1/4)", "1/2/(1/4)", 2),
        ("x=12-(5-3)", "12-(5-3)", "12-(5-3)", 10),
    ],
)
def test_post_normalisation_examples(raw: str, normalised: str, short: str, value: float) -> None:
    assert normalize_equation(raw) == normalised
    assert remove_redundant_brackets(normalised) == short
    assert answers_match(safe_eval(short), value)


def test_question_normalisation_and_percent_leftovers() -> None:
    assert normalize_question("小明有2(1/3)个苹果，吃了(1/2)个") == "小明有(2+1/3)个苹果，吃了1/2个"
    assert normalize_equation("x=(1+2)%") == "(1+2)/100"
    assert normalize_equation("x=2(3+4)") == "2+(3+4)"
    assert safe_eval("50%") == 0.5 and safe_eval("2^3") == 8 and safe_eval("6×2÷（1+2）") == 4


def test_exact_mode_and_answers_match() -> None:
    assert safe_eval("(1+2)/4", exact=True) == Fraction(3, 4)
    assert safe_eval("0.1+0.2", exact=True) == Fraction(3, 10)
    assert safe_eval("(2/3)**-2", exact=True) == Fraction(9, 4)
    with pytest.raises(ValueError, match="non-integer exponent"):
        safe_eval("4**0.5", exact=True)
    assert safe_eval("4**0.5") == 2.0
    assert answers_match(28.259999999999998, 28.26)
    assert answers_match("3.14*(4+1)**2-3.14*4**2", "28.26")
    assert not answers_match(1.0, 1.00001) and not answers_match("1+", 1)


HOSTILE = [
    "__import__('os').system('echo hi')",
    "x",
    "abs(-1)",
    "(1).real",
    "[1, 2][0]",
    "[i for i in range(10**9)]",
    "lambda: 1",
    "'a' * 10",
    "1 if 1 else 2",
    "1 < 2",
    "True + 1",
    "1j * 2",
    "9**9**9",
    "10**100000",
    "2**10000",
    "(10**200)**(10**200)",
    "10.0**4000",
    "1" * 101,
    "1e400",
    "1e99999999999",
    "(" * 100 + "1" + ")" * 100,
    "-" * 500 + "1",
    "+".join(["1"] * 600),
    "1/0",
    "0**-1",
    "(-8)**(1/3)",
    "",
    "1" * 2000,
    "1 +* 2",
]


@pytest.mark.parametrize("expr", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("exact", [False, True])
def test_safe_eval_rejects_hostile_input(expr: str, exact: bool) -> None:
    with pytest.raises(ValueError, match="safe_eval"):
        safe_eval(expr, exact=exact)


def test_safe_eval_bounds_allow_ordinary_large_values() -> None:
    assert safe_eval("+".join(["1"] * 200)) == 200
    assert safe_eval("2**64", exact=True) == 2**64
    assert safe_eval("9**9") == 387420489
    with pytest.raises(TypeError, match="'expr'"):
        safe_eval(3)  # type: ignore[arg-type]


def _expr(draw_depth: int):
    leaf = st.integers(1, 9).map(str)
    if draw_depth == 0:
        return leaf

    def combine(t: tuple[str, str, str, bool]) -> str:
        a, op, b, wrap = t
        s = f"{a}{op}{b}"
        return f"({s})" if wrap else s

    sub = _expr(draw_depth - 1)
    node = st.tuples(sub, st.sampled_from(["+", "-", "*", "/"]), sub, st.booleans()).map(combine)
    return st.one_of(leaf, node, node.map(lambda s: f"({s})"))


@settings(max_examples=150, deadline=None)
@given(_expr(3))
def test_bracket_removal_preserves_value_and_is_idempotent(expr: str) -> None:
    try:
        value = safe_eval(expr, exact=True)
    except ValueError:  # division by zero in the random tree
        return
    short = remove_redundant_brackets(expr)
    assert safe_eval(short, exact=True) == value
    assert remove_redundant_brackets(short) == short
    assert len(short) <= len(expr)


def test_dataset_reads_ape210k_jsonl(tmp_path) -> None:
    rows = [
        {
            "id": "1",
            "original_text": "一本书150元，打20%的折扣……",
            "equation": "x=150*20%/5%-150",
            "ans": "450",
        },
        {"id": "2", "original_text": "3(1/2)乘以4", "equation": "x=3(1/2)*4", "ans": "14"},
        {"id": "3", "original_text": "坏题", "equation": "x=1+1", "ans": "3"},
        {"id": "4", "original_text": "无法解析", "equation": "x=import os", "ans": "1"},
        {"id": "5", "original_text": "百分数答案", "equation": "x=1/4", "ans": "25%"},
    ]
    path = tmp_path / "ape.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    ds = MathWordProblemDataset(path)
    assert [it["id"] for it in ds] == ["1", "2", "5"] and ds.dropped == ["3", "4"]
    assert ds[0]["equation"] == "150*20/100/(5/100)-150" and ds[0]["answer"] == 450
    assert ds[1]["question"] == "(3+1/2)乘以4"
    assert ds.pairs()[2] == ("百分数答案", "1/4")
    assert len(MathWordProblemDataset(rows)) == 3
    with pytest.raises(ValueError, match="path_or_records"):
        MathWordProblemDataset(tmp_path / "missing.jsonl")
