import json
import sys
from importlib import resources
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def report_schema() -> dict:
    return json.loads((resources.files("l4diag") / "report.schema.json").read_text())


@pytest.fixture
def validate_report(report_schema):
    import jsonschema

    def check(report: dict) -> dict:
        jsonschema.validate(report, report_schema)
        inp = report["input"]
        assert inp["lines_read"] == inp["lines_parsed"] + sum(inp["skipped"].values())
        return report

    return check
