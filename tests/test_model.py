"""The records of the map step survive pickling (the process pool) exactly."""

from __future__ import annotations

import copy
import pickle
from collections import Counter

import pytest

from l4diag.model import KeyNodeStats, MetricPoint, Occurrence

OCC = Occurrence("a.log", 3, "2024-05-01 10:00:00 x", 3, 100, "train", 1714557600.5, False)
RECORDS = [
    OCC,
    KeyNodeStats(4, OCC, Occurrence("a.log", 9, "y", 9, None, "init", None), Counter({"train": 3, "init": 1})),
    MetricPoint(200, 1714557601.0, 12, loss=2.5, grad_norm=float("nan"), skipped=True, file="a.log", line=12, text="it"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_survive_pickling_and_copying(record):
    for again in (pickle.loads(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)), copy.deepcopy(record)):
        assert type(again) is type(record)
        assert repr(again) == repr(record)  # repr: NaN != NaN would fail a plain ==


def test_records_pickle_by_position_not_by_dict():
    cls, values = OCC.__reduce__()
    assert cls is Occurrence and values == ("a.log", 3, "2024-05-01 10:00:00 x", 3, 100, "train", 1714557600.5, False)
