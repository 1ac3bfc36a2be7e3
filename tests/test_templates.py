"""Drain over unique keys: severity and state words are never merged or masked away."""

from __future__ import annotations

import pytest

from l4diag.mask import Masker
from l4diag.rules import load_rules
from l4diag.templates import cluster_keys, template_id

PAIRS = [
    ("VM Started", "VM Paused"),
    ("job <NUM> succeeded on node <NUM>", "job <NUM> failed on node <NUM>"),
    ("connection to <IP> established", "connection to <IP> refused"),
    ("worker <NUM> status ok after <NUM> ms", "worker <NUM> status timeout after <NUM> ms"),
]


@pytest.mark.parametrize("a,b", PAIRS)
def test_keyword_words_split_clusters(a, b):
    groups = cluster_keys([a, b, a + " ", b])
    where = {k: t for t, keys in groups.items() for k in keys}
    assert where[a] != where[b]
    assert not any(t == "VM <*>" for t in groups)


def test_vm_started_paused_with_many_neighbours():
    keys = [f"VM {w}" for w in ("Started", "Paused", "Resumed", "Stopped")] + [f"VM ready{i}" for i in range(5)]
    groups = cluster_keys(keys)
    where = {k: t for t, ks in groups.items() for k in ks}
    assert len({where[k] for k in keys[:4]}) == 4


def test_masks_keep_keywords():
    masker = Masker(load_rules([]))
    for line in ["2024-05-01 10:00:00,123 ERROR NCCL timeout on rank 3",
                 "I0501 10:00:00.123 FATAL signal SIGSEGV (11) received",
                 "worker 0x7f3a failed: CUDA out of memory (OOM), NaN loss"]:
        key = masker.key(line)
        for word in ("ERROR", "timeout", "FATAL", "SIGSEGV", "failed", "OOM", "NaN"):
            if word in line:
                assert word in key


def test_template_ids_stable_and_order_free():
    keys = ["a <NUM> b", "a <NUM> c", "x y z", "VM Started", "VM Paused"]
    g1 = cluster_keys(keys)
    g2 = cluster_keys(list(reversed(keys)))
    assert {template_id(t): sorted(k) for t, k in g1.items()} == {template_id(t): sorted(k) for t, k in g2.items()}
