"""The same run in every layout DESIGN.md lists gives the same diagnosis."""

import pytest

from l4diag.api import diagnose_paths
from l4diag.sources import assign_nodes, discover, strip_suffixes
from runs import CULPRIT, write_layout

LAYOUTS = ["dir-per-node", "file-per-node", "torchrun", "combined-host", "gz", "bz2", "xz", "zst", "tar", "tar.gz", "zip"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_names_the_same_culprit(tmp_path, layout, validate_report):
    path = write_layout(tmp_path / "run", layout)
    report = validate_report(diagnose_paths([str(path)]))
    assert report["verdict"] == "failure"
    assert report["input"]["nodes"] == 8
    d = report["diagnosis"]
    assert (d["node"], d["category"], d["stage"], d["iteration"]) == (CULPRIT, "hardware", "train", 120)


def test_rank_prefixed_combined_file_names_ranks(tmp_path):
    path = write_layout(tmp_path / "run", "combined-rank")
    report = diagnose_paths([str(path)])
    assert report["diagnosis"]["node"] == "rank5"
    assert {n["node"] for n in report["nodes"]} == {f"rank{i}" for i in range(8)}


def test_layouts_agree_on_line_counts(tmp_path):
    counts = {diagnose_paths([str(write_layout(tmp_path / lay, lay))])["input"]["lines_read"]
              for lay in ("file-per-node", "tar.gz", "combined-host", "zst")}
    assert len(counts) == 1


def test_node_regex_overrides_detection(tmp_path):
    path = write_layout(tmp_path / "run", "file-per-node")
    report = diagnose_paths([str(path)], node_regex=r"node-(\d+)\.log")
    assert report["diagnosis"]["node"] == "05"


@pytest.mark.parametrize(
    "paths, root, expected",
    [
        ([["gpu-node-07", "stdout.log"], ["gpu-node-08", "stdout.log"]], "run", ["gpu-node-07", "gpu-node-08"]),
        ([["worker-3.out.gz"], ["worker-4.out.gz"]], "run", ["worker-3", "worker-4"]),
        ([["stdout.log"], ["stderr.log"]], "gpu-node-07", ["gpu-node-07", "gpu-node-07"]),
        ([["r1", "attempt_0", "0", "stdout.log"], ["r1", "attempt_0", "1", "stdout.log"]], "gpu-node-03",
         ["gpu-node-03", "gpu-node-03"]),
        ([["logs", "rank_12.log"], ["logs", "rank_13.log"]], "run", ["rank_12", "rank_13"]),
    ],
)
def test_node_ids_follow_the_layout(paths, root, expected):
    assert assign_nodes(paths, root) == expected


def test_strip_suffixes():
    assert strip_suffixes("worker-3.out.gz") == "worker-3"
    assert strip_suffixes("rank_12.log") == "rank_12"


def test_missing_path_is_reported_not_fatal(tmp_path):
    path = write_layout(tmp_path / "run", "file-per-node")
    found = discover([str(path), str(tmp_path / "nope")])
    assert len(found.streams) == 8
    assert found.skipped_inputs == {"missing": 1}
    assert "no such file" in found.warnings[0]


def test_glob_expands(tmp_path):
    write_layout(tmp_path / "run", "file-per-node")
    report = diagnose_paths([str(tmp_path / "run" / "gpu-node-0[0-3].log")])
    assert sorted(n["node"] for n in report["nodes"]) == [f"gpu-node-0{i}" for i in range(4)]
