"""Every command through click's CliRunner: exit codes, formats, escaping, help."""

import json

import pytest
from click.testing import CliRunner

from l4diag import __version__
from l4diag.cli import cli
from runs import CULPRIT, write_layout


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def failed_run(tmp_path):
    return write_layout(tmp_path / "failed", "file-per-node")


@pytest.fixture
def healthy_run(tmp_path):
    return write_layout(tmp_path / "healthy", "file-per-node", fault=False)


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def all_commands():
    return sorted(cli.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help(runner, name):
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert cli.commands[name].help, f"{name} has no help text"


def test_failed_run_exits_1_and_json_validates(runner, failed_run, validate_report):
    result = runner.invoke(cli, ["diagnose", str(failed_run), "--format", "json", "-q"])
    assert result.exit_code == 1, result.output
    report = validate_report(json.loads(result.stdout))
    assert report["diagnosis"]["node"] == CULPRIT
    assert report["nodes"][0]["node"] == CULPRIT and report["nodes"][0]["role"] == "culprit"


def test_healthy_run_exits_0(runner, healthy_run, validate_report):
    result = runner.invoke(cli, ["diagnose", str(healthy_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert validate_report(json.loads(result.stdout))["verdict"] == "healthy"


def test_fail_on_never_exits_0(runner, failed_run):
    assert runner.invoke(cli, ["diagnose", str(failed_run), "--fail-on", "never"]).exit_code == 0


def test_missing_input_exits_2_with_one_line(runner, tmp_path):
    result = runner.invoke(cli, ["diagnose", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr


def test_bad_option_exits_2(runner, failed_run):
    assert runner.invoke(cli, ["diagnose", str(failed_run), "--format", "yaml"]).exit_code == 2
    assert runner.invoke(cli, ["diagnose", str(failed_run), "--node-regex", "("]).exit_code == 2


def test_interrupt_exits_130(runner, failed_run, monkeypatch):
    import l4diag.commands.diagnose as diag

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(diag, "run_diagnosis", interrupted)
    assert runner.invoke(cli, ["diagnose", str(failed_run)]).exit_code == 130


def test_output_file(runner, failed_run, tmp_path):
    out = tmp_path / "report.md"
    result = runner.invoke(cli, ["diagnose", str(failed_run), "-f", "markdown", "-o", str(out)])
    assert result.exit_code == 1
    text = out.read_text()
    assert text.startswith("## l4diag: failure: hardware")
    assert f"**Culprit node:** {CULPRIT.replace('-', '-')}" in text
    assert "GPU has fallen off the bus" in text


def test_stdin(runner, failed_run):
    data = (failed_run / f"{CULPRIT}.log").read_text()
    result = runner.invoke(cli, ["diagnose", "-", "-f", "json"], input=data)
    report = json.loads(result.stdout)
    assert report["diagnosis"]["category"] == "hardware"


def _markup_run(tmp_path):
    run = write_layout(tmp_path / "markup", "file-per-node")
    victim = run / f"{CULPRIT}.log"
    victim.write_text(victim.read_text() + "2024-05-01 10:03:03,100 RuntimeError: [bold red]boom[/] <script>x</script> | `tick`\n")
    return run


def test_text_output_prints_markup_literally(runner, tmp_path):
    result = runner.invoke(cli, ["diagnose", str(_markup_run(tmp_path)), "--color"])
    assert "[bold red]boom[/]" in result.output


def test_markdown_escapes_log_text(runner, tmp_path):
    result = runner.invoke(cli, ["diagnose", str(_markup_run(tmp_path)), "-f", "markdown"])
    out = result.output
    assert "<script>" not in out.split("```")[0]  # outside the fenced evidence block
    for line in out.splitlines():
        if line.startswith("| ") and "script" in line:
            assert "&lt;script&gt;" in line and "\\|" in line


def test_learn_and_baseline(runner, healthy_run, failed_run, tmp_path, validate_report):
    base = tmp_path / "base.l4b"
    result = runner.invoke(cli, ["learn", str(healthy_run), "-o", str(base)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["diagnose", str(failed_run), "--baseline", str(base), "-f", "json"])
    report = validate_report(json.loads(result.stdout))
    assert report["input"]["baseline"] == str(base)
    assert report["diagnosis"]["node"] == CULPRIT
    cross = [t["scores"].get("cross_job") for t in report["templates"]]
    assert 1.0 in cross


def test_bad_baseline_exits_2(runner, failed_run, tmp_path):
    bad = tmp_path / "bad.l4b"
    bad.write_text("not a baseline")
    result = runner.invoke(cli, ["diagnose", str(failed_run), "--baseline", str(bad)])
    assert result.exit_code == 2 and "baseline" in result.stderr


def test_broken_user_rule_file_exits_2_naming_file_and_rule(runner, failed_run, tmp_path):
    rules = tmp_path / "faults.toml"
    rules.write_text('[[rule]]\nname = "mine"\ncategory = "network"\nregex = "("\nexample = "x"\n')
    result = runner.invoke(cli, ["diagnose", str(failed_run), "--rules", str(rules)])
    assert result.exit_code == 2
    assert "faults.toml" in result.stderr and "'mine'" in result.stderr


def test_stdin_with_files_same_report_for_one_or_two_jobs(runner, failed_run):
    # with --jobs 2 stdin is read by the main process while a worker maps the files
    data = (failed_run / f"{CULPRIT}.log").read_text()
    reports = []
    for jobs in ("1", "2"):
        result = runner.invoke(cli, ["diagnose", "-", str(failed_run), "-f", "json", "--jobs", jobs], input=data)
        report = json.loads(result.stdout)
        report.pop("timings", None)
        reports.append(report)
    assert reports[0] == reports[1]
