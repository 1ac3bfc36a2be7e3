"""Template quality on the 16 Loghub-2k datasets: plain drain3 vs l4diag's templater.

    PYTHONPATH=. python benchmarks/loghub.py [--data ../shared/data/loghub2k] [--labels corrected]

Evaluates on the ``Content`` column of ``<System>_2k.log_structured_corrected.csv`` (the
corrected labels; the column is the dataset's ``log_format`` already applied). Metrics:

* GA  — grouping accuracy: share of lines whose predicted group is exactly their true group.
* PA  — parsing accuracy: share of lines whose template text equals the true template, after
  both are normalised the same way (any ``<...>`` placeholder -> ``<*>``, runs of ``<*>`` and
  whitespace collapsed). l4diag's typed placeholders (``<NUM>``, ``<HEX>``, ...) count as ``<*>``.
* FGA — F1 over groups: a predicted group is correct when its line set equals a true group's.

Contenders: plain drain3 with its default config on every line; l4diag: the masks of
``patterns/masks.toml`` (``mask.Masker``) then ``templates.cluster_keys`` over unique keys.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PLACEHOLDER_RE = re.compile(r"<[^<>\s]*>")
STARS_RE = re.compile(r"<\*>(?:\s*<\*>)+")


def normalise(template: str) -> str:
    t = PLACEHOLDER_RE.sub("<*>", template)
    t = re.sub(r"\s+", " ", t).strip()
    t = STARS_RE.sub("<*>", t)
    return t


def load(data: str, system: str, labels: str) -> tuple:
    suffix = {"corrected": "_structured_corrected.csv", "original": "_structured.csv"}[labels]
    path = os.path.join(data, system, f"{system}_2k.log{suffix}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Content"] for r in rows], [r["EventTemplate"] for r in rows]


def metrics(pred_groups: list, pred_templates: list, truth: list) -> dict:
    n = len(truth)
    by_pred = defaultdict(set)
    by_true = defaultdict(set)
    for i, (g, t) in enumerate(zip(pred_groups, truth)):
        by_pred[g].add(i)
        by_true[t].add(i)
    true_sets = {frozenset(s) for s in by_true.values()}
    correct_lines = sum(len(s) for s in by_pred.values() if frozenset(s) in true_sets)
    correct_groups = sum(1 for s in by_pred.values() if frozenset(s) in true_sets)
    p = correct_groups / len(by_pred) if by_pred else 0.0
    r = correct_groups / len(by_true) if by_true else 0.0
    fga = 2 * p * r / (p + r) if p + r else 0.0
    pa = sum(1 for pt, t in zip(pred_templates, truth) if normalise(pt) == normalise(t)) / n
    return {"GA": correct_lines / n, "PA": pa, "FGA": fga, "groups": len(by_pred), "true_groups": len(by_true)}


def run_drain3(contents: list) -> tuple:
    from drain3 import TemplateMiner

    miner = TemplateMiner()
    ids = [miner.add_log_message(c)["cluster_id"] for c in contents]
    by_id = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    return ids, [by_id[i] for i in ids]


def run_l4diag(contents: list) -> tuple:
    from l4diag.mask import Masker
    from l4diag.rules import load_rules
    from l4diag.templates import cluster_keys

    masker = Masker(load_rules([]))
    keys = [masker.key(c) for c in contents]
    groups = cluster_keys(list(set(keys)))
    key_to_template = {k: t for t, ks in groups.items() for k in ks}
    templates = [key_to_template[k] for k in keys]
    return templates, templates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "loghub2k"))
    ap.add_argument("--labels", default="corrected", choices=["corrected", "original"])
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    data = os.path.abspath(args.data)
    if not os.path.isdir(data):
        data = "/work/shared/data/loghub2k"
    systems = list(json.load(open(os.path.join(data, "datasets.json")))["datasets"])
    results = {}
    print(f"{'dataset':12s} | {'drain3 GA':>9s} {'PA':>6s} {'FGA':>6s} | {'l4diag GA':>9s} {'PA':>6s} {'FGA':>6s} | {'dGA':>6s}")
    for system in systems:
        contents, truth = load(data, system, args.labels)
        d = metrics(*run_drain3(contents), truth)
        l4 = metrics(*run_l4diag(contents), truth)
        results[system] = {"drain3": d, "l4diag": l4}
        print(f"{system:12s} | {d['GA']:9.3f} {d['PA']:6.3f} {d['FGA']:6.3f} | {l4['GA']:9.3f} {l4['PA']:6.3f} "
              f"{l4['FGA']:6.3f} | {l4['GA'] - d['GA']:+6.3f}")
    avg = {who: {m: sum(r[who][m] for r in results.values()) / len(results) for m in ("GA", "PA", "FGA")}
           for who in ("drain3", "l4diag")}
    d, l4 = avg["drain3"], avg["l4diag"]
    print(f"{'average':12s} | {d['GA']:9.3f} {d['PA']:6.3f} {d['FGA']:6.3f} | {l4['GA']:9.3f} {l4['PA']:6.3f} "
          f"{l4['FGA']:6.3f} | {l4['GA'] - d['GA']:+6.3f}")
    worse = [s for s, r in results.items() if r["l4diag"]["GA"] < r["drain3"]["GA"] - 0.05]
    print(f"datasets where l4diag GA is more than 0.05 below drain3: {worse or 'none'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"datasets": results, "average": avg}, fh, indent=2)


if __name__ == "__main__":
    main()
