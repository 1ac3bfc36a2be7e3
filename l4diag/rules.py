"""Load and validate the rule files in ``patterns/`` (shipped in the wheel) and user files.

A rule file is TOML with a list of ``[[rule]]`` tables. Every rule has a ``name``, a
``category``, a ``regex`` and a real ``example`` line that the regex must match
(checked when the rule is compiled: user files at load time, the built-in rules of a kind on its
first use; and by the tests). Rule kinds, one file each:

- ``faults.toml``      known root-cause signatures; ``category`` is a fault category; ``generic = true``
                       marks a fallback (a bare traceback or exception) whose category the stage may refine
- ``collateral.toml``  what healthy ranks print when a peer dies; demoted, never a culprit on its own
- ``benign.toml``      warning-looking lines that are normal
- ``stages.toml``      stage markers; ``category`` is the stage entered
- ``iterations.toml``  iteration markers; named groups ``iter`` (required), ``total``,
                       ``loss``, ``grad_norm``, ``loss_scale``, ``iter_time``, ``skipped``
- ``metrics.toml``     training metrics on iteration lines; ``category`` is the metric
                       (loss, grad_norm, loss_scale, iter_time), named group ``value``
- ``masks.toml``       variable-token masks, applied in file order; ``replacement`` is the token
"""

from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import regex

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

try:  # Python's own regex parser, for required_literal; private, so a Python without it just searches
    if sys.version_info >= (3, 11):
        from re import _constants as sre_constants, _parser as sre_parse
    else:  # pragma: no cover
        import sre_constants
        import sre_parse
except ImportError:  # pragma: no cover
    sre_constants = sre_parse = None

from .model import CATEGORIES, STAGES

RULE_KINDS = ("faults", "collateral", "benign", "stages", "iterations", "metrics", "masks")
REGEX_TIMEOUT_S = 1.0
METRICS = ("loss", "grad_norm", "loss_scale", "iter_time")
ITERATION_GROUPS = {"iter", "total", "loss", "grad_norm", "loss_scale", "iter_time", "skipped"}


class RulesError(Exception):
    """A rule file cannot be used; the message names the file, the rule and the problem."""


@dataclass(frozen=True)
class Rule:
    kind: str
    name: str
    category: str
    pattern: regex.Pattern
    example: str
    source_file: str
    subcategory: str | None = None
    weight: float = 1.0
    replacement: str = ""
    description: str = ""
    stage_hint: str | None = None
    generic: bool = False
    # pieces of text one of which every match contains (casefolded when ``required_folded``), or
    # (): a line with none of them cannot match, and costs substring tests instead of a search
    # with a timeout
    required: tuple = ()
    required_folded: bool = False
    # every clause ``required_clauses`` proved, ``required`` the best of them (MarkerNeeds tests all)
    required_all: tuple = ()

    def search(self, text: str) -> regex.Match | None:
        """Search with a timeout so a pathological line cannot hang the run (counted in ``TIMED_OUT``)."""
        if self.required and (not self.required_folded or text.isascii()):
            # a case-insensitive rule tests its pieces on ASCII text only: regex's case matching
            # goes beyond casefold() elsewhere ("fail" matches "FAİL", whose casefold is "fai̇l")
            seen = _casefolded(text) if self.required_folded else text
            if not any(piece in seen for piece in self.required):
                return None
        try:
            return self.pattern.search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            TIMED_OUT[f"{self.kind}/{self.name}"] += 1
            return None


class RuleIndex:
    """The rules of a list that may match a text, for many rules on one text: ``Rule.search`` finds
    nothing where none of a rule's required pieces is, so each distinct piece is looked for once
    per text instead of once per rule that requires it."""

    def __init__(self, rules: list) -> None:
        self.rules = rules
        self.unfiltered = [i for i, rule in enumerate(rules) if not rule.required]
        self.folded = [i for i, rule in enumerate(rules) if rule.required and rule.required_folded]
        raw: dict = {}
        folded: dict = {}
        for i, rule in enumerate(rules):
            for piece in rule.required:
                (folded if rule.required_folded else raw).setdefault(piece, []).append(i)
        self.raw_pieces = list(raw.items())
        self.folded_pieces = list(folded.items())

    def candidates(self, texts: tuple) -> list:
        """The rules, in list order, whose ``search`` may find something in one of ``texts``."""
        found = set(self.unfiltered)
        for text in texts:
            for piece, rules in self.raw_pieces:
                if piece in text:
                    found.update(rules)
            if text.isascii():  # as Rule.search: folded pieces are tested on ASCII text only
                folded = _casefolded(text)
                for piece, rules in self.folded_pieces:
                    if piece in folded:
                        found.update(rules)
            else:
                found.update(self.folded)
        return [self.rules[i] for i in sorted(found)]


_LAST_FOLDED: tuple = ("", "")


def _casefolded(text: str) -> str:
    """``text.casefold()``, remembered for the last text: every rule of a kind tests the same line."""
    global _LAST_FOLDED
    last = _LAST_FOLDED
    if last[0] is text:
        return last[1]
    folded = text.casefold()
    _LAST_FOLDED = (text, folded)
    return folded


# Constructs of the regex module that Python's re parser would read as literal text (fuzzy
# matching such as {e<=1}): an unescaped brace that does not open a repeat. A pattern with one
# gets no required literal.
NOT_FOR_RE_PARSER = re.compile(r"(?<!\\)(?:\\\\)*\{[^0-9,}]")
MIN_REQUIRED = 2


def required_literal(src: str, ignore_case: bool) -> tuple:
    """``(pieces, folded)``: literal texts one of which every match of ``src`` must contain,
    casefolded when matching ignores case; ``((), False)`` when none can be proved.

    The best clause of ``required_clauses``: the one whose shortest piece is longest.
    """
    clauses, folded = required_clauses(src, ignore_case)
    return best_clause(clauses), folded


def best_clause(clauses: tuple) -> tuple:
    """The clause a substring test rules most lines out with: its shortest piece longest; () for none."""
    return max(clauses, key=lambda pieces: (min(map(len, pieces)), -len(pieces)), default=())


def required_clauses(src: str, ignore_case: bool) -> tuple:
    """``(clauses, folded)``: every match of ``src`` contains, for each clause, one of its literal
    texts at least (casefolded when matching ignores case); ``((), False)`` when none can be proved.

    Conservative: literals count in the pattern's top-level sequence, inside groups and repeats that
    must match at least once, and as one piece per alternative when every alternative has one;
    optional parts, lookarounds and groups that change flags are skipped. Case-insensitive pieces
    must be ASCII and are tested on ASCII lines only (``regex`` matches case beyond what
    ``casefold`` does: "fail" in "FAİL"); every piece has at least MIN_REQUIRED characters.
    Parsed with Python's ``re`` parser, which reads these patterns alike.
    """
    if sre_parse is None or NOT_FOR_RE_PARSER.search(src):
        return (), False
    try:
        parsed = sre_parse.parse(src)
    except Exception:  # noqa: BLE001 - syntax only regex knows: no literal, the rule just searches
        return (), False
    folded = ignore_case or bool(parsed.state.flags & sre_constants.SRE_FLAG_IGNORECASE)
    usable = []
    for pieces in _requirements(parsed):
        if folded:
            if not all(p.isascii() for p in pieces):
                continue
            pieces = tuple(p.casefold() for p in pieces)
        if min(map(len, pieces)) >= MIN_REQUIRED and pieces not in usable:
            usable.append(pieces)
    if not usable:
        return (), False
    return tuple(usable), folded


def _requirements(seq) -> list:
    """What every match of a parsed sequence contains: a list of tuples, each tuple literal texts
    of which one at least occurs (one text for a plain run of literals)."""
    c = sre_constants
    out, current = [], []
    for op, av in seq:
        if op is c.LITERAL:
            current.append(chr(av))
            continue
        if current:
            out.append(("".join(current),))
            current = []
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            if not add_flags and not del_flags:
                out.extend(_requirements(body))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)) and av[0] >= 1:
            out.extend(_requirements(av[2]))
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.extend(_requirements(av))
        elif op is c.BRANCH:
            out.extend(_choice_requirements([_requirements(branch) for branch in av[1]]))
    if current:
        out.append(("".join(current),))
    return out


def _choice_requirements(branches: list) -> list:
    """Requirements of a choice between alternatives, given each one's: one requirement per
    alternative joined into one (whichever alternative matched, its part is there). The first
    joins each alternative's best requirement; the others pair up the rest, in order, so that a
    requirement of every alternative is used."""
    if not branches or not all(branches):
        return []
    best = [_best_piece(reqs) for reqs in branches]
    others = [[r for r in reqs if r != b] for reqs, b in zip(branches, best)]
    out = [best]
    for k in range(max(map(len, others))):
        out.append([reqs[k] if k < len(reqs) else b for reqs, b in zip(others, best)])
    return [tuple(dict.fromkeys(p for pieces in chosen for p in pieces)) for chosen in out]


def _best_piece(requirements: list) -> tuple:
    """The requirement of an alternative to stand for it in a choice: a single text if it has one
    (the longest), else its best choice of texts; () when it has none."""
    singles = [r[0] for r in requirements if len(r) == 1]
    if singles:
        return (max(singles, key=len),)
    return max(requirements, key=lambda r: min(map(len, r)), default=())


# rule -> lines on which its regex gave up after REGEX_TIMEOUT_S, in this process. Those lines were
# not checked against it: callers turn the counts into report warnings (see ``timeout_warnings``).
TIMED_OUT: Counter = Counter()


def timeout_warnings(counts: Counter) -> list:
    """One report warning per rule that gave up on some lines."""
    return [f"rule {name} gave up on {n} line(s) after {REGEX_TIMEOUT_S:g} s each; they were not checked against it"
            for name, n in sorted(counts.items()) if n > 0]


# What the map reads (``context.Markers``, ``mask.Masker``); the other kinds only the diagnosis.
MAP_KINDS = ("stages", "iterations", "metrics", "masks")
DIAGNOSIS_KINDS = tuple(kind for kind in RULE_KINDS if kind not in MAP_KINDS)


def _kind(kind: str) -> property:
    return property(lambda self: self.of_kind(kind), doc=f"The {kind} rules, built-in first, in file order.")


class RuleSet:
    """The rules of each kind (``faults``, ..., ``masks``) and the files they came from.

    User rules are checked and compiled when loaded (``load_rules``). A kind's built-in rules are
    compiled on the first use of the kind: the map needs only MAP_KINDS, and the pipeline compiles
    the rest while the workers map.
    """

    faults = _kind("faults")
    collateral = _kind("collateral")
    benign = _kind("benign")
    stages = _kind("stages")
    iterations = _kind("iterations")
    metrics = _kind("metrics")
    masks = _kind("masks")

    def __init__(self, user: dict | None = None, files: list | None = None) -> None:
        self._user = user or {}  # kind -> user rules, already checked
        self._by_kind: dict = {}
        self.files = files if files is not None else []

    def of_kind(self, kind: str) -> list:
        """The rules of ``kind``: built-in (compiled on first use, once per process), then the user's."""
        rules = self._by_kind.get(kind)
        if rules is None:
            rules = self._by_kind[kind] = [*_builtin_kind(kind), *self._user.get(kind, ())]
        return rules

    def prepare(self, kinds: tuple = RULE_KINDS) -> None:
        """Compile the built-in rules of ``kinds`` now rather than on first use."""
        for kind in kinds:
            self.of_kind(kind)

    def all_rules(self) -> list:
        return [rule for kind in RULE_KINDS for rule in self.of_kind(kind)]


def builtin_rule_files() -> list:
    """The rule files shipped inside the package, as (kind, name, text)."""
    out = []
    base = resources.files("l4diag") / "patterns"
    for kind in RULE_KINDS:
        res = base / f"{kind}.toml"
        if res.is_file():
            out.append((kind, f"patterns/{kind}.toml", res.read_text(encoding="utf-8")))
    return out


@functools.lru_cache(maxsize=1)
def _builtin_texts() -> dict:
    """kind -> [(file name, text)] of the shipped files, read once per process."""
    out: dict = {kind: [] for kind in RULE_KINDS}
    for kind, name, text in builtin_rule_files():
        out[kind].append((name, text))
    return out


@functools.lru_cache(maxsize=None)
def _builtin_tables(kind: str) -> tuple:
    """[(file name, rule tables)] of the shipped files of one kind, parsed once per process."""
    return tuple((name, _rule_tables(name, text)) for name, text in _builtin_texts()[kind])


@functools.lru_cache(maxsize=None)
def _builtin_kind(kind: str) -> tuple:
    """The shipped rules of one kind, checked and compiled once per process (rules are immutable)."""
    rules: list = []
    for name, tables in _builtin_tables(kind):
        _add_tables(rules, kind, name, tables, set())
    return tuple(rules)


def load_rules(extra_files: list | None = None) -> RuleSet:
    """The built-in rules plus user rule files (``kind`` taken from the table ``kind`` key or file
    name). User files are checked here, so a bad one fails before any work; see ``RuleSet``."""
    user: dict = {kind: [] for kind in RULE_KINDS}
    files = [name for kind in RULE_KINDS for name, _ in _builtin_texts()[kind]]
    for path in extra_files or []:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{path}: cannot read rule file: {exc}") from exc
        kind = _kind_from_text_or_name(text, p)
        # names are unique within a kind, built-in ones included (known without compiling them)
        seen = {raw.get("name") for _, tables in _builtin_tables(kind) for raw in tables} | {r.name for r in user[kind]}
        added = _add_tables(user[kind], kind, str(path), _rule_tables(str(path), text), seen)
        for rule in added:
            check_speed(rule)
        files.append(str(path))
    return RuleSet(user, files)


# Lines that make backtracking regexes blow up; user rules must stay fast on them.
SPEED_PROBES = (
    "a" * 20_000 + "!", "a" * 20_000, "0x" * 10_000, " " * 20_000 + "x", ":" * 20_000, "[" * 20_000, "]:" * 10_000,
    "1" * 20_000 + "x", "1." * 10_000 + "x", "\t" * 20_000 + "Exception", "a=" * 10_000, "/a" * 10_000,
    "Error " * 4_000, "[rank0]:" * 2_500 + "x", "a-" * 10_000 + "!", "aaaa_" * 4_000 + "!",
)
SPEED_BUDGET_S = 0.5


def check_speed(rule: Rule) -> None:
    """Reject a (user) rule whose regex takes too long on adversarial lines: it could stall a run."""
    for probe in SPEED_PROBES:
        try:
            if rule.kind == "masks":
                rule.pattern.sub(rule.replacement.replace("\\", "\\\\"), probe, timeout=SPEED_BUDGET_S)
            else:
                rule.pattern.search(probe, timeout=SPEED_BUDGET_S)
        except TimeoutError as exc:
            raise RulesError(
                f"{rule.source_file}: rule {rule.name!r}: regex too slow (over {SPEED_BUDGET_S}s on a "
                f"{len(probe)}-character line like {probe[:12]!r}...); it would stall on hostile logs"
            ) from exc
        except regex.error:
            return


def _kind_from_text_or_name(text: str, path: Path) -> str:
    stem = path.stem
    for kind in RULE_KINDS:
        if stem == kind or stem.endswith("_" + kind) or stem.endswith("-" + kind):
            return kind
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: invalid TOML: {exc}") from exc
    kind = data.get("kind")
    if kind not in RULE_KINDS:
        raise RulesError(
            f"{path}: cannot tell the rule kind; name the file <kind>.toml or set kind = one of {', '.join(RULE_KINDS)}"
        )
    return kind


def _rule_tables(name: str, text: str) -> list:
    """The ``[[rule]]`` tables of a rule file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{name}: invalid TOML: {exc}") from exc
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise RulesError(f"{name}: 'rule' must be an array of tables ([[rule]])")
    return rules


def _add_tables(out: list, kind: str, name: str, tables: list, seen: set) -> list:
    """Check and compile the rule tables of file ``name`` onto ``out``; the rules added.
    ``seen``: rule names already taken in this kind (updated)."""
    added = []
    for index, raw in enumerate(tables):
        rule = parse_rule(kind, name, index, raw)
        if rule.name in seen:
            raise RulesError(f"{name}: rule {rule.name!r}: duplicate rule name")
        seen.add(rule.name)
        added.append(rule)
    out.extend(added)
    return added


def parse_rule(kind: str, file: str, index: int, raw: dict) -> Rule:
    """Validate one rule table and compile its regex."""
    if not isinstance(raw, dict):
        raise RulesError(f"{file}: rule #{index + 1}: must be a table")
    name = raw.get("name")
    where = f"{file}: rule {name!r}" if name else f"{file}: rule #{index + 1}"
    for key in ("name", "category", "regex", "example"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise RulesError(f"{where}: missing or empty string field {key!r}")
    category = raw["category"]
    if kind == "faults" and category not in CATEGORIES:
        raise RulesError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    if kind == "stages" and category not in STAGES:
        raise RulesError(f"{where}: category {category!r} is not a stage ({', '.join(STAGES)})")
    flags = regex.V0
    if raw.get("ignore_case"):
        flags |= regex.IGNORECASE
    try:
        pattern = regex.compile(raw["regex"], flags)
    except regex.error as exc:
        raise RulesError(f"{where}: invalid regex: {exc}") from exc
    if kind == "iterations" and "iter" not in pattern.groupindex:
        raise RulesError(f"{where}: an iteration rule needs a named group (?P<iter>...)")
    if kind == "iterations":
        unknown = set(pattern.groupindex) - ITERATION_GROUPS
        if unknown:
            raise RulesError(f"{where}: unknown named groups {sorted(unknown)}; allowed: {sorted(ITERATION_GROUPS)}")
    if kind == "metrics" and "value" not in pattern.groupindex:
        raise RulesError(f"{where}: a metric rule needs a named group (?P<value>...)")
    if kind == "metrics" and category not in METRICS:
        raise RulesError(f"{where}: category {category!r} is not a metric ({', '.join(METRICS)})")
    weight = raw.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise RulesError(f"{where}: weight must be a number in [0, 1]")
    stage_hint = raw.get("stage")
    if stage_hint is not None and stage_hint not in STAGES:
        raise RulesError(f"{where}: stage {stage_hint!r} is not a stage ({', '.join(STAGES)})")
    clauses, folded = required_clauses(raw["regex"], bool(flags & regex.IGNORECASE))
    rule = Rule(
        kind=kind,
        name=raw["name"],
        category=category,
        pattern=pattern,
        example=raw["example"],
        source_file=file,
        subcategory=raw.get("subcategory"),
        weight=float(weight),
        replacement=str(raw.get("replacement", "")),
        description=str(raw.get("description", "")),
        stage_hint=stage_hint,
        generic=bool(raw.get("generic", False)),
        required=best_clause(clauses),
        required_folded=folded,
        required_all=clauses,
    )
    try:
        matched = pattern.search(rule.example, timeout=REGEX_TIMEOUT_S)
    except TimeoutError as exc:
        raise RulesError(f"{where}: regex timed out on its own example line") from exc
    if not matched:
        raise RulesError(f"{where}: regex does not match its example line {rule.example!r}")
    return rule
