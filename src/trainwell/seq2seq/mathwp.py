"""Math word problems as seq2seq: expression normalisation, a bounded AST evaluator, data and a solver.

The model reads the question and writes a directly executable arithmetic expression, which is evaluated and
compared with the answer (Ape210K; kexue.fm/archives/7809). Targets are normalised first (author's order):

1. mixed numbers ``a(b/c)`` → ``(a+b/c)``; then a leftover ``digit(`` in an equation/answer → ``digit+(``;
2. proper fractions ``(a/b)`` in the question → ``a/b``;
3. percentages ``a%`` → ``(a/100)`` in equations/answers; a leftover ``%`` → ``/100``;
4. ratio colons ``:`` → ``/``; a leading ``x=`` is stripped;

and redundant brackets are removed (shorter targets are easier to generate). Model output is never given to
Python's ``eval``: :func:`safe_eval` walks the syntax tree, allows only numbers, ``+ - * /``, ``**``/``^``,
unary signs and brackets, and bounds the input length, nesting depth, literal digits, exponents and the size
of every intermediate result, so hostile text is refused at once instead of hanging or exhausting memory.

Source: kexue.fm/archives/7809; Zhao et al., "Ape210K" (arXiv:2009.11506).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from trainwell._validation import check_bool, check_int, check_module, fail

__all__ = [
    "MathSolver",
    "MathWordProblemDataset",
    "answers_match",
    "normalize_answer",
    "normalize_equation",
    "normalize_question",
    "remove_redundant_brackets",
    "safe_eval",
]

MAX_LENGTH = 1000  # characters of an expression
MAX_DEPTH = 64  # bracket nesting
MAX_AST_DEPTH = 256  # depth of the syntax tree (a long flat sum is a deep left-leaning tree)
MAX_LITERAL_DIGITS = 100  # digits of one number literal
MAX_RESULT_DIGITS = 1000  # decimal digits of any intermediate value (numerator and denominator in exact mode)
_MAX_BITS = int(MAX_RESULT_DIGITS * math.log2(10)) + 1

_MIXED = re.compile(r"(\d+)\((\d+/\d+)\)")
_DIGIT_BRACKET = re.compile(r"(\d+)\(")
_FRACTION_IN_BRACKETS = re.compile(r"\((\d+/\d+)\)")
_PERCENT = re.compile(r"([.\d]+)%")
_LITERAL = re.compile(r"\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_TRANSLATE = str.maketrans(
    {
        "×": "*",
        "÷": "/",
        "（": "(",
        "）": ")",
        "：": ":",
        "＋": "+",
        "－": "-",
        "＊": "*",
        "／": "/",
        "％": "%",
        "—": "-",
        "−": "-",
    }
)


# --------------------------------------------------------------------------------------- normalisation


def _check_str(fn: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        fail(fn, name, "a str", value, exc=TypeError)
    return value


def normalize_question(question: str) -> str:
    """Question text: mixed numbers ``a(b/c)`` → ``(a+b/c)``, then proper fractions ``(a/b)`` → ``a/b``."""
    q = _check_str("normalize_question", "question", question)
    q = _MIXED.sub(r"(\1+\2)", q)
    return _FRACTION_IN_BRACKETS.sub(r"\1", q)


def normalize_equation(equation: str) -> str:
    """Equation (or answer) text in the author's order: mixed numbers, ``digit(`` → ``digit+(``,
    percentages ``a%`` → ``(a/100)`` (leftover ``%`` → ``/100``), ``:`` → ``/``, a leading ``x=`` stripped.

    Example: ``x=150*20%/5%-150`` → ``150*(20/100)/(5/100)-150``; ``x=3(1/2)*4`` → ``(3+1/2)*4``.
    Brackets are kept (see :func:`remove_redundant_brackets`).
    """
    e = _check_str("normalize_equation", "equation", equation).strip().translate(_TRANSLATE)
    e = e.replace(" ", "")
    e = _MIXED.sub(r"(\1+\2)", e)
    e = _DIGIT_BRACKET.sub(r"\1+(", e)
    e = _PERCENT.sub(r"(\1/100)", e)
    e = e.replace(":", "/").replace("%", "/100")
    if e[:2] in ("x=", "X="):
        e = e[2:]
    return e


def normalize_answer(answer: str) -> str:
    """An answer string normalised like an equation (mixed numbers, percentages, ratios)."""
    return normalize_equation(_check_str("normalize_answer", "answer", answer))


# ------------------------------------------------------------------------------------------ safe eval

Number = float | Fraction


def _too_big(v: Number, exact: bool) -> bool:
    if exact:
        assert isinstance(v, Fraction)
        return v.numerator.bit_length() > _MAX_BITS or v.denominator.bit_length() > _MAX_BITS
    return not math.isfinite(float(v)) or abs(float(v)) >= 10.0**300


class _Evaluator:
    def __init__(self, exact: bool, text: str) -> None:
        self.exact = exact
        self.text = text

    def reject(self, what: str) -> ValueError:
        return ValueError(f"safe_eval(): {what} in expression {self.text[:80]!r}")

    def number(self, node: ast.Constant) -> Number:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.reject(f"constant {type(v).__name__} is not allowed (numbers only)")
        if self.exact:
            if isinstance(v, int):
                return Fraction(v)
            if not math.isfinite(v):
                raise self.reject("a non-finite literal")
            return Fraction(repr(v))
        fv = float(v)
        if not math.isfinite(fv):
            raise self.reject("a literal too large for a float")
        return fv

    def power(self, base: Number, exp: Number) -> Number:
        if self.exact:
            assert isinstance(base, Fraction) and isinstance(exp, Fraction)
            if exp.denominator != 1:
                raise self.reject("a non-integer exponent in exact (Fraction) mode")
            n = exp.numerator
            if base == 0 and n < 0:
                raise self.reject("zero raised to a negative power")
            if base not in (0, 1, -1):
                bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
                if abs(n) * max(bits - 1, 1) > _MAX_BITS:
                    raise self.reject("an exponent whose result is too large")
            return base**n
        b, x = float(base), float(exp)
        if b == 0 and x < 0:
            raise self.reject("zero raised to a negative power")
        if b < 0 and x != int(x):
            raise self.reject("a negative base with a fractional exponent")
        if abs(b) not in (0.0, 1.0) and abs(x) * abs(math.log10(abs(b))) > 300:
            raise self.reject("an exponent whose result is too large")
        return float(b**x)

    def eval(self, node: ast.AST, depth: int) -> Number:
        if depth > MAX_AST_DEPTH:
            raise self.reject(f"an expression tree deeper than {MAX_AST_DEPTH}")
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            v = self.eval(node.operand, depth + 1)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(
            node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
        ):
            a = self.eval(node.left, depth + 1)
            b = self.eval(node.right, depth + 1)
            if isinstance(node.op, ast.Add):
                r = a + b
            elif isinstance(node.op, ast.Sub):
                r = a - b
            elif isinstance(node.op, ast.Mult):
                r = a * b
            elif isinstance(node.op, ast.Div):
                if b == 0:
                    raise self.reject("division by zero")
                r = a / b
            else:
                r = self.power(a, b)
            if _too_big(r, self.exact):
                raise self.reject("an intermediate value out of bounds")
            return r
        name = type(node).__name__
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            name = type(node.op).__name__
        raise self.reject(f"{name} is not allowed (numbers, + - * / ** ^, unary signs and brackets only)")


def safe_eval(expr: str, exact: bool = False) -> float | Fraction:
    """Evaluate an arithmetic expression without ``eval``: numbers, ``+ - * /``, ``**`` and ``^`` (power),
    unary ``+``/``-``, brackets and percent (``a%`` = ``a/100``).

    Everything else — names, calls, attributes, subscripts, comparisons, comprehensions, lambdas, strings —
    raises ``ValueError``. Bounded: at most ``MAX_LENGTH`` (1000) characters, ``MAX_DEPTH`` (64) levels of
    nesting, ``MAX_LITERAL_DIGITS`` (100) digits per number, and every intermediate value within
    ``10**1000`` (float mode: finite and below ``1e300``); exponents are checked *before* powering, so
    ``9**9**9`` is refused at once. Division by zero raises ``ValueError``.

    Args:
        expr: the expression (``×``/``÷``/full-width brackets are accepted).
        exact: evaluate with :class:`fractions.Fraction` (exact rationals; decimals are read exactly, e.g.
            ``0.1`` is ``1/10``); non-integer exponents are refused in this mode.

    Returns:
        ``float`` (default) or ``Fraction``.
    """
    fn = "safe_eval"
    text = _check_str(fn, "expr", expr)
    check_bool("exact", exact, fn=fn)
    if len(text) > MAX_LENGTH:
        raise ValueError(
            f"{fn}(): argument 'expr' must have at most {MAX_LENGTH} characters, got {len(text)}"
        )
    s = text.strip().translate(_TRANSLATE).replace("^", "**")
    if not s:
        raise ValueError(f"{fn}(): argument 'expr' must be a non-empty expression, got {text!r}")
    depth = 0
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if depth > MAX_DEPTH:
            raise ValueError(f"{fn}(): nesting deeper than {MAX_DEPTH} in expression {text[:80]!r}")
    for lit in _LITERAL.findall(s):
        digits = sum(c.isdigit() for c in lit.split("e")[0].split("E")[0])
        if digits > MAX_LITERAL_DIGITS:
            raise ValueError(f"{fn}(): a number with more than {MAX_LITERAL_DIGITS} digits in {text[:80]!r}")
        if "e" in lit.lower():
            _, _, ex = lit.lower().partition("e")
            if abs(int(ex)) > MAX_RESULT_DIGITS:
                raise ValueError(
                    f"{fn}(): a number with an exponent beyond {MAX_RESULT_DIGITS} in {text[:80]!r}"
                )
    s = _PERCENT.sub(r"(\1/100)", s).replace("%", "/100")
    try:
        tree = ast.parse(s, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise ValueError(f"{fn}(): cannot parse expression {text[:80]!r} ({type(err).__name__})") from None
    try:
        return _Evaluator(exact, text).eval(tree.body, 0)
    except (OverflowError, ZeroDivisionError, RecursionError) as err:
        raise ValueError(f"{fn}(): {type(err).__name__} in expression {text[:80]!r}") from None


def _as_float(v: Any, fn: str, name: str) -> float:
    if isinstance(v, str):
        return float(safe_eval(v))
    if isinstance(v, bool) or not isinstance(v, (int, float, Fraction)):
        fail(fn, name, "a number, a Fraction or an expression string", v, exc=TypeError)
    return float(v)


def answers_match(a: Any, b: Any, ndigits: int = 6) -> bool:
    """Whether two answers are equal after rounding to ``ndigits`` decimals (the Ape210K criterion).

    Strings are evaluated with :func:`safe_eval` (unparsable text never matches). Values whose relative
    difference is below ``1e-9`` also match, so large numbers are not split by float rounding.
    ``answers_match(28.259999999999998, 28.26)`` is True.
    """
    fn = "answers_match"
    check_int("ndigits", ndigits, fn=fn, min=0)
    try:
        x, y = _as_float(a, fn, "a"), _as_float(b, fn, "b")
    except ValueError:
        return False
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    return round(x, ndigits) == round(y, ndigits) or math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


# ------------------------------------------------------------------------------------------- brackets


def _value(expr: str) -> tuple[Number, bool]:
    try:
        return safe_eval(expr, exact=True), True
    except ValueError:
        return safe_eval(expr), False


def _same(a: Number, exact_a: bool, b: Number, exact_b: bool) -> bool:
    if exact_a and exact_b:
        return a == b
    return answers_match(float(a), float(b))


def _one_pass(expr: str, target: Number, exact: bool) -> str:
    opens: list[int] = []
    pairs: list[tuple[int, int]] = []
    for i, c in enumerate(expr):
        if c == "(":
            opens.append(i)
        elif c == ")" and opens:
            pairs.append((opens.pop(), i))
    # blanking a bracket (instead of deleting it) keeps the other pairs' indices valid
    chars = list(expr)
    for lo, hi in pairs:
        trial = chars.copy()
        trial[lo] = trial[hi] = " "
        candidate = "".join(trial)
        try:
            v, ex = _value(candidate)
        except ValueError:
            continue
        if _same(v, ex, target, exact):
            chars = trial
    return "".join(chars).replace(" ", "")


def remove_redundant_brackets(expr: str) -> str:
    """Delete every bracket pair whose removal leaves the value unchanged; idempotent.

    Pairs are tried in order of their closing bracket (the author's order); a removal is kept if the value
    is unchanged — exactly (rational arithmetic) when the expression allows it, else after rounding to 6
    decimals, always compared with the original value. Passes repeat until nothing changes, so the result is
    a fixed point (``f(f(x)) == f(x)``). ``12-(5-3)`` keeps its brackets; ``(1/2)/(1/4)`` → ``1/2/(1/4)``.

    Raises:
        ValueError: if ``expr`` itself cannot be evaluated by :func:`safe_eval`.
    """
    s = _check_str("remove_redundant_brackets", "expr", expr).replace(" ", "")
    target, exact = _value(s)
    while True:
        nxt = _one_pass(s, target, exact)
        if nxt == s:
            return s
        s = nxt


# ------------------------------------------------------------------------------------------- dataset


class MathWordProblemDataset(Sequence[dict[str, Any]]):
    """Ape210K-format problems (``original_text``, ``equation``, ``ans``), normalised and filtered.

    Each record is normalised (:func:`normalize_question`, :func:`normalize_equation`), kept only when
    ``safe_eval(equation) ≈ safe_eval(answer)`` (6 decimals), and its equation shortened by
    :func:`remove_redundant_brackets`. Items are dicts ``{"id", "question", "equation", "answer"}``
    (``answer`` a float); ``dropped`` lists the ids (or line numbers) that were left out.

    Args:
        path_or_records: a JSONL file path (one JSON object per line; blank lines skipped) or an iterable of
            mappings with the same fields.
        remove_brackets: shorten equations (default True).
    """

    def __init__(
        self, path_or_records: str | Path | Iterable[Mapping[str, Any]], remove_brackets: bool = True
    ) -> None:
        fn = "MathWordProblemDataset"
        check_bool("remove_brackets", remove_brackets, fn=fn)
        records: Iterable[Mapping[str, Any]]
        if isinstance(path_or_records, (str, Path)):
            path = Path(path_or_records)
            if not path.is_file():
                fail(fn, "path_or_records", "an existing JSONL file or an iterable of records", str(path))
            records = list(_read_jsonl(path))
        elif isinstance(path_or_records, Iterable):
            records = path_or_records
        else:
            fail(fn, "path_or_records", "a path or an iterable of mappings", path_or_records, exc=TypeError)
        self.items: list[dict[str, Any]] = []
        self.dropped: list[Any] = []
        for n, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                fail(fn, "path_or_records", "records that are mappings", rec, exc=TypeError)
            rid = rec.get("id", n)
            try:
                q = normalize_question(str(rec["original_text"]))
                eq = normalize_equation(str(rec["equation"]))
                ans_text = normalize_answer(str(rec["ans"]))
                ans = float(safe_eval(ans_text))
                if not answers_match(safe_eval(eq), ans):
                    raise ValueError("equation and answer disagree")
                if remove_brackets:
                    eq = remove_redundant_brackets(eq)
            except (KeyError, ValueError):
                self.dropped.append(rid)
                continue
            self.items.append({"id": rid, "question": q, "equation": eq, "answer": ans})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self.items[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def pairs(self) -> list[tuple[str, str]]:
        """``(question, equation)`` pairs for :class:`~trainwell.seq2seq.Seq2SeqCollator`."""
        return [(it["question"], it["equation"]) for it in self.items]


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"MathWordProblemDataset(): {path}:{line_no} is not JSON ({err.msg})"
                ) from None
            yield rec


# -------------------------------------------------------------------------------------------- solver


class MathSolver:
    """Question → expression → value with a trained :class:`~trainwell.seq2seq.UniLMSeq2Seq` model.

    Args:
        model: a ``UniLMSeq2Seq`` with a tokenizer.
        num_beams: beam width (the post uses 1–3).
        max_new_tokens: longest expression in tokens (post: 64).
        exact: evaluate in Fraction mode (falls back to floats when the expression has a fractional power).
    """

    def __init__(self, model: Any, num_beams: int = 1, max_new_tokens: int = 64, exact: bool = False) -> None:
        fn = "MathSolver"
        from trainwell.seq2seq.unilm import UniLMSeq2Seq

        check_module("model", model, fn=fn, cls=UniLMSeq2Seq)
        if model.tokenizer is None:
            fail(fn, "model", "a UniLMSeq2Seq with a tokenizer", model, exc=TypeError)
        self.model = model
        self.num_beams = int(check_int("num_beams", num_beams, fn=fn, min=1) or 1)
        self.max_new_tokens = int(check_int("max_new_tokens", max_new_tokens, fn=fn, min=1) or 1)
        self.exact = check_bool("exact", exact, fn=fn)

    def evaluate(self, expression: str) -> float | Fraction | None:
        """Value of an expression, or ``None`` when it does not parse/evaluate (counted as wrong)."""
        try:
            return safe_eval(expression, exact=self.exact)
        except ValueError:
            if self.exact:
                try:
                    return safe_eval(expression)
                except ValueError:
                    return None
            return None

    def solve_batch(self, questions: Sequence[str]) -> list[tuple[str, float | Fraction | None]]:
        """:meth:`solve` for several questions in one batch."""
        outs = self.model.generate(
            [normalize_question(q) for q in questions],
            num_beams=self.num_beams,
            max_new_tokens=self.max_new_tokens,
        )
        exprs = [str(o).replace(" ", "") for o in outs]
        return [(e, self.evaluate(e)) for e in exprs]

    def solve(self, question: str) -> tuple[str, float | Fraction | None]:
        """``(expression, value)``; ``value`` is ``None`` when the generated expression is not valid."""
        _check_str("MathSolver.solve", "question", question)
        return self.solve_batch([question])[0]
