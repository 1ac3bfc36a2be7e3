"""Rule loading: the literal every match of a rule must contain, and the search that tests it first."""

from __future__ import annotations

from pathlib import Path

import pytest
import regex

from l4diag.rules import Rule, load_rules, required_clauses, required_literal

RULES = load_rules([]).all_rules()
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("src,ignore_case,expected", [
    (r"Xid \([^)]+\): 79\b", False, (("Xid (",), False)),
    (r"(?i)fallen off the bus", False, (("fallen off the bus",), True)),
    (r"CUDA out of memory", True, (("cuda out of memory",), True)),
    (r"No space left|Disk quota exceeded", False, (("No space left", "Disk quota exceeded"), False)),
    (r"(?:GPU has )?fallen off", False, (("fallen off",), False)),  # the optional part is not required
    (r"(?:abc)+ and (?:xyz)* tail", False, ((" and ",), False)),  # + must match once, * need not
    (r"(?=lookahead)x", False, ((), False)),  # lookarounds are skipped; "x" is too short
    (r"(?=lookahead)matched text", False, (("matched text",), False)),
    (r"(?i:scoped) plain text", False, ((" plain text",), False)),  # a flag group is skipped, not trusted
    (r"foo|\d+", False, ((), False)),  # an alternative with no literal: nothing is required
    (r"(?:timeout){e<=1}", False, ((), False)),  # regex's fuzzy matching: Python's parser would misread it
    (r"\p{L}+ word", False, ((), False)),  # syntax only regex knows
    (r"Straße kaputt", True, ((), False)),  # case-insensitive pieces must be ASCII
    (r"Straße kaputt", False, (("Straße kaputt",), False)),  # case-sensitive ones need not
    (r"a", False, ((), False)),  # shorter than worth testing
    (r"\{'loss': \d+", False, (("{'loss': ",), False)),  # an escaped brace is a literal
    (r"\\{e<=1}", False, ((), False)),  # an escaped backslash, then regex's fuzzy brace
])
def test_required_literal(src, ignore_case, expected):
    assert required_literal(src, ignore_case) == expected


def test_most_builtin_rules_have_a_required_literal():
    assert sum(bool(r.required) for r in RULES) >= 0.8 * len(RULES)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}/{r.name}")
def test_every_rule_still_matches_its_example_through_the_literal_test(rule: Rule):
    assert rule.search(rule.example)


def _repo_lines() -> list:
    lines = []
    for path in sorted((REPO / "sample_logs").rglob("*.log")) + sorted((REPO / "tests" / "data").rglob("*.log")):
        lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return lines


def test_the_literal_test_never_hides_a_match():
    lines = _repo_lines() + [r.example for r in RULES]
    assert len(lines) > 1000
    for rule in RULES:
        for line in lines:
            assert bool(rule.search(line)) == bool(rule.pattern.search(line)), (rule.name, line)


def test_case_insensitive_rules_see_folded_text():
    shouted = [r for r in RULES if r.required_folded and r.pattern.search(r.example.upper())]
    assert shouted
    for rule in shouted:
        assert rule.search(rule.example.upper()), rule.name


def test_case_insensitive_literals_do_not_hide_unicode_case_matches():
    # regex matches "fail" in "FAİL" ignoring case, though "FAİL".casefold() is "fai̇l"
    checked = 0
    for rule in RULES:
        piece = rule.required[0] if rule.required_folded else ""
        if "i" not in piece or piece not in rule.example.casefold():
            continue
        at = rule.example.casefold().index(piece)
        text = rule.example[:at] + piece.upper().replace("I", "İ") + rule.example[at + len(piece):]
        if rule.pattern.search(text):
            assert rule.search(text), rule.name
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("src, ignore_case, expected", [
    (r"saving (?:model )?checkpoint|\[Torch\] Saving checkpoint", True,
     # whichever alternative matched, one piece of each clause is there
     ((("checkpoint", "[torch] saving checkpoint"), ("saving ", "[torch] saving checkpoint")), True)),
    (r"abc \d+ def", False, ((("abc ",), (" def",)), False)),  # a plain sequence: every run is a clause
    (r"foo|\d+", False, ((), False)),
])
def test_required_clauses(src, ignore_case, expected):
    assert required_clauses(src, ignore_case) == expected


def test_every_required_clause_holds_on_every_match():
    lines = _repo_lines() + [r.example for r in RULES]
    checked = 0
    for rule in RULES:
        clauses, folded = required_clauses(rule.pattern.pattern, bool(rule.pattern.flags & regex.IGNORECASE))
        for line in lines:
            if not rule.pattern.search(line) or (folded and not line.isascii()):
                continue
            seen = line.casefold() if folded else line
            assert all(any(p in seen for p in clause) for clause in clauses), (rule.name, line)
            checked += 1
    assert checked > 1000
