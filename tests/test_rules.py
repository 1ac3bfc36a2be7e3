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


# --- loading: user files checked at once, built-in kinds compiled on first use ---------------------


def test_builtin_kinds_compiled_on_first_use_are_the_checked_rules():
    from l4diag.rules import RULE_KINDS, _builtin_tables, parse_rule

    ruleset = load_rules([])
    for kind in RULE_KINDS:
        eager = [parse_rule(kind, name, i, raw) for name, tables in _builtin_tables(kind) for i, raw in enumerate(tables)]
        lazy = getattr(ruleset, kind)
        assert [(r.name, r.pattern.pattern, r.pattern.flags, r.example, r.required, r.required_folded, r.weight)
                for r in lazy] == [(r.name, r.pattern.pattern, r.pattern.flags, r.example, r.required,
                                    r.required_folded, r.weight) for r in eager], kind
        assert lazy, kind


def test_the_map_uses_only_the_map_kinds():
    """The diagnosis-only kinds can wait until after the map (the pipeline compiles them meanwhile)."""
    from l4diag.mask import MapOptions, map_stream
    from l4diag.rules import MAP_KINDS
    from l4diag.sources import discover

    ruleset = load_rules([])
    streams = discover([str(REPO / "sample_logs")], None).streams
    assert streams
    for spec in streams:
        map_stream(spec, ruleset, MapOptions())
    assert ruleset._by_kind and set(ruleset._by_kind) <= set(MAP_KINDS)


def test_user_rules_come_after_the_builtin_ones_of_their_kind(tmp_path):
    path = tmp_path / "benign.toml"
    path.write_text('[[rule]]\nname = "mine"\ncategory = "noise"\nregex = "all good"\nexample = "all good here"\n')
    ruleset = load_rules([str(path)])
    assert ruleset.benign[-1].name == "mine" and ruleset.benign[:-1] == load_rules([]).benign
    assert ruleset.files[-1] == str(path)


@pytest.mark.parametrize(("body", "needle"), [
    ('[[rule]]\nname = "mine"\ncategory = "network"\nregex = "("\nexample = "x"\n', "invalid regex"),
    ('[[rule]]\nname = "mine"\ncategory = "network"\nregex = "abc"\nexample = "xyz"\n', "does not match its example"),
    ('[[rule]]\nname = "redos"\ncategory = "network"\nregex = "^(a+)+$"\nexample = "aaaa"\n', "too slow"),
    ('[[rule]]\nname = "a"\ncategory = "network"\nregex = "a"\nexample = "a"\n'
     '[[rule]]\nname = "a"\ncategory = "network"\nregex = "b"\nexample = "b"\n', "duplicate rule name"),
])
def test_a_broken_user_rule_fails_at_load(tmp_path, body, needle):
    from l4diag.rules import RulesError

    path = tmp_path / "faults.toml"
    path.write_text(body)
    with pytest.raises(RulesError, match=needle):
        load_rules([str(path)])


def test_a_user_rule_may_not_reuse_a_builtin_name(tmp_path):
    from l4diag.rules import RulesError

    builtin = load_rules([]).faults[0]
    path = tmp_path / "faults.toml"
    path.write_text(f'[[rule]]\nname = "{builtin.name}"\ncategory = "network"\nregex = "zz"\nexample = "zz"\n')
    with pytest.raises(RulesError, match="duplicate rule name"):
        load_rules([str(path)])


def test_rule_index_keeps_every_rule_that_matches():
    from l4diag.rules import RuleIndex

    lines = _repo_lines() + [r.example for r in RULES] + [r.example.upper() for r in RULES] + ["FAİLED to connect", ""]
    index = RuleIndex(RULES)
    for line in lines:
        candidates = index.candidates((line,))
        assert [r for r in RULES if r.search(line)] == [r for r in candidates if r.search(line)], line
        assert candidates == [r for r in RULES if r in candidates]  # in list order


def test_classify_text_same_hit_with_the_index():
    from l4diag.scoring.patterns import classify_text, rule_indexes

    ruleset = load_rules([])
    indexes = rule_indexes(ruleset)
    for line in _repo_lines()[::3] + [r.example for r in RULES]:
        assert classify_text(line, ruleset, indexes) == classify_text(line, ruleset), line
