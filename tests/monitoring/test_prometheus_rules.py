"""docker/prometheus and docker/alertmanager: the configuration, the alert rules and their unit tests, as the
real tools read them (promtool and amtool; Debian's prometheus and prometheus-alertmanager packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import METRICS

DOCKER = Path(__file__).resolve().parents[2] / "docker"
RULES = DOCKER / "prometheus" / "rules" / "costcontrol.yml"
RULE_TESTS = [DOCKER / "prometheus" / "rules" / name for name in ("tests.yml", "tests-30d.yml")]
SEED_ALERTS = {
    "HighAICost",
    "HighHourlyCost",
    "HighDailyCost",
    "HighCostPerLead",
    "HighDailyGPUCost",
    "HighMonthlyGPUCost",
    "BudgetAtRisk",
    "BudgetExceeded",
    "HighErrorRate",
    "RateLimitHit",
    "HighTokenUsage",
    "CostcontrolDown",
    "NotificationsStuck",
}
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)"
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool is not installed (Debian: prometheus-alertmanager)"
)


def run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_every_seed_alert_has_a_severity_a_summary_and_a_description():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}

    assert set(alerts) == SEED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_keeps_it_silent():
    tests = [test for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]]
    fired, silent = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    recorded = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}

    assert fired == SEED_ALERTS
    # the rest stay silent for the series of other providers, budgets or pipelines in the same test
    assert silent >= SEED_ALERTS - {"HighTokenUsage", "BudgetExceeded", "HighCostPerLead", "CostcontrolDown"}
    assert recorded == {rule["record"] for rule in rules() if "record" in rule}


def test_the_seeds_metric_names_are_recorded_from_ours():
    records = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}

    assert set(records) == {
        "ai_cost_total",
        "ai_tokens_total",
        "anthrasite_batch_cost_per_lead",
        "anthrasite_batch_gpu_cost_dollars",
    }
    exported = {doc.name for doc in METRICS}
    for expr in records.values():
        assert any(name in expr for name in exported), expr


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    assert "SUCCESS" in run("promtool", "check", "rules", str(RULES))
    out = run("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert out.count("SUCCESS") == len(RULE_TESTS)


@needs_promtool
def test_promtool_accepts_the_prometheus_configuration(tmp_path):
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "costcontrol")
    # the token file is compose's secret, mounted at /run/secrets/ in the container
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    token = tmp_path / "metrics_token"
    token.write_text("test-token")
    job["authorization"]["credentials_file"] = str(token)
    shutil.copytree(DOCKER / "prometheus" / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    assert "SUCCESS" in run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))


@needs_amtool
def test_amtool_accepts_the_alertmanager_configuration():
    out = run("amtool", "check-config", str(DOCKER / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in out


def test_alertmanager_routes_critical_alerts_to_email_and_the_webhook_and_info_to_the_webhook():
    config = yaml.safe_load((DOCKER / "alertmanager" / "alertmanager.yml").read_text())
    routes = [(route["matchers"][0], route["receiver"]) for route in config["route"]["routes"]]
    receivers = {r["name"]: r for r in config["receivers"]}

    assert ('severity = "critical"', "ops-email") in routes and ('severity = "critical"', "ops-webhook") in routes
    assert ('severity = "warning"', "ops-email") in routes and ('severity = "info"', "ops-webhook") in routes
    assert receivers["ops-email"]["email_configs"] and receivers["ops-webhook"]["webhook_configs"]
