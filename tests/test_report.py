"""Each renderer against exact expected output for one small, hand-built Diagnosis."""

from collections import Counter

from l4diag.model import Accounting, Diagnosis, EvidenceLine, Finding, NodeScore, NodeStats, Template, TemplateScore, Occurrence
from l4diag.report import render
from l4diag.report.markdown import fence_for


def small_diagnosis() -> Diagnosis:
    occ = Occurrence("run/n1.log", 7, "OSError: [Errno 28] No space left | `x`", 7, 40, "checkpoint_save", None)
    template = Template("abc123def456", "OSError: [Errno <NUM>] No space left | `x`", ["k"], {"n1": 1}, {"n1": occ})
    evidence = [EvidenceLine("n1", "run/n1.log", 7, "OSError: [Errno 28] No space left | ```x```", "abc123def456", 40,
                             "checkpoint_save", None, 0.95)]
    finding = Finding("storage", "disk_full", 0.9, "Storage fault (disk_full) on n1 during checkpoint_save at iteration 40.",
                      "n1", [], "checkpoint_save", 40, None, evidence)
    acct = Accounting(lines_read=12, lines_parsed=10, bytes_read=300, skipped=Counter({"blank": 2}), streams=2)
    return Diagnosis(
        verdict="failure", finding=finding,
        nodes=[NodeScore("n1", 1.0, "culprit", ["matches fault signature no_space_left"]), NodeScore("n2", 0.1, "normal")],
        node_stats={"n1": NodeStats("n1", lines=6), "n2": NodeStats("n2", lines=4)},
        templates=[TemplateScore(template, 0.9, {"pattern": 0.95}, category="storage")],
        accounting=acct, paths=["run"],
    )


EXPECTED_MARKDOWN = """\
## l4diag: failure: storage

Storage fault \\(disk\\_full\\) on n1 during checkpoint\\_save at iteration 40.

- **Culprit node:** n1
- **Category:** storage (disk\\_full)
- **Stage:** checkpoint\\_save
- **Iteration:** 40
- **Confidence:** 0.90

### Evidence

````text
run/n1.log:7 [n1] OSError: [Errno 28] No space left | ```x```
````

### Top templates

| score | count | nodes | category | template |
|---:|---:|---:|---|---|
| 0.90 | 1 | 1 | storage | OSError: \\[Errno &lt;NUM&gt;\\] No space left \\| \\`x\\` |

_Read 12 lines from 2 streams of 2 nodes; parsed 10; skipped blank: 2._
"""


def test_markdown_exact():
    assert render(small_diagnosis(), "markdown") == EXPECTED_MARKDOWN


def test_fence_is_longer_than_any_backtick_run():
    assert fence_for("plain") == "```"
    assert fence_for("a ````` b") == "``````"


def test_text_report_names_verdict_node_and_evidence():
    out = render(small_diagnosis(), "text", width=200)
    assert out.splitlines()[0] == "l4diag: FAILURE  storage  (confidence 0.90)"
    assert "run/n1.log:7 [n1] OSError: [Errno 28] No space left | ```x```" in out


def test_json_report_fields(validate_report):
    import json

    report = validate_report(json.loads(render(small_diagnosis(), "json")))
    assert report["diagnosis"]["evidence"][0]["line"] == 7
    assert report["templates"][0]["example"]["file"] == "run/n1.log"
    assert [n["role"] for n in report["nodes"]] == ["culprit", "normal"]
