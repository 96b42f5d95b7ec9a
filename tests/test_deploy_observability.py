"""Alert rules, their promtool unit tests, Prometheus' configuration and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import (
    DASHBOARD_FILES,
    DEPLOY,
    MANIFESTS,
    REPO_ROOT,
    RULE_FILES,
    dashboard_expressions,
    dashboard_panels,
    run_tool,
    system_tool,
)

PROMETHEUS = DEPLOY / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "conveyor.json"
ALERTS = {
    "ConveyorBacklogGrowing",
    "ConveyorDeadLetters",
    "ConveyorDeadLettersNearCap",
    "ConveyorJobFailureRatioHigh",
    "ConveyorAutoscalerAtMaximum",
    "ConveyorServiceDown",
    "ConveyorRedisMemoryHigh",
}


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_alert_rules_pass_promtool_check() -> None:
    promtool = system_tool("promtool")
    assert RULE_FILES
    output = run_tool(promtool, "check", "rules", *map(str, RULE_FILES)).stdout
    assert "SUCCESS" in output


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool = system_tool("promtool")
    assert RULE_TESTS
    output = run_tool(promtool, "test", "rules", *map(str, RULE_TESTS)).stdout
    assert "SUCCESS" in output and "FAILED" not in output


def test_the_alerts_users_need_exist_with_a_severity_and_an_explanation() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # "for N minutes" where the condition has to last: a blip is not an incident.
    for name in ("ConveyorBacklogGrowing", "ConveyorAutoscalerAtMaximum", "ConveyorServiceDown"):
        assert rules[name].get("for"), name
    assert (
        "up" in rules["ConveyorServiceDown"]["expr"]
        and "== 0" in rules["ConveyorServiceDown"]["expr"]
    )


def test_every_alert_has_unit_tests_where_it_fires_and_where_it_does_not() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


def test_prometheus_operator_rules_match_the_rules_file() -> None:
    operator_rule = yaml.safe_load(
        (MANIFESTS / "base" / "core" / "prometheusrule.yaml").read_text()
    )
    groups = [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    assert operator_rule["spec"]["groups"] == groups, (
        "manifests/base/core/prometheusrule.yaml differs from deploy/prometheus/rules: copy the "
        "rules file's `groups` into it"
    )


def test_compose_prometheus_config_is_valid_and_scrapes_the_jobs_the_alerts_watch() -> None:
    promtool = system_tool("promtool")
    config_path = PROMETHEUS / "prometheus.yml"
    output = run_tool(promtool, "check", "config", str(config_path)).stdout
    assert f"{len(RULE_FILES)} rule files found" in output
    config = yaml.safe_load(config_path.read_text())
    jobs = {scrape["job_name"] for scrape in config["scrape_configs"]}
    (service_down,) = [rule for rule in alert_rules() if rule["alert"] == "ConveyorServiceDown"]
    pattern = re.search(r'job=~"([^"]+)"', service_down["expr"])
    assert pattern is not None
    conveyor_jobs = {"conveyor-dispatcher", "conveyor-worker", "conveyor-autoscaler"}
    assert conveyor_jobs == {job for job in jobs if re.fullmatch(pattern.group(1), job)}
    # And redis_exporter, for ConveyorRedisMemoryHigh.
    assert jobs == conveyor_jobs | {"redis"}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, parses as PromQL (promtool)."""
    promtool = system_tool("promtool")
    expressions = dashboard_expressions()
    assert expressions
    rules = [
        {"record": f"dashboard:query_{index}", "expr": _as_promql(expression)}
        for index, (_where, expression) in enumerate(expressions)
    ]
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_tool(promtool, "check", "rules", str(rules_file)).stdout
    assert f"{len(rules)} rules found" in output


def _as_promql(expression: str) -> str:
    return expression.replace("$__rate_interval", "1m").replace("$__range", "1h")


def test_dashboard_labels_backlog_and_lag_by_pool(tmp_path: Path) -> None:
    """The per-pool panels turn `conveyor:jobs:<pool>` into a `pool` label (promtool evaluates)."""
    promtool = system_tool("promtool")
    backlog = _dashboard_query("Backlog per pool (lag + pending)")
    lag = _dashboard_query("Lag per pool")
    product = {"stream": "conveyor:jobs:product", "group": "workers"}
    events = {"stream": "conveyor:events", "group": "dispatcher", "instance": "a"}
    # Two dispatchers (instances a and b) report the same stream; its lag is unknown (-1).
    input_series = [
        _series("conveyor_stream_lag", {**product, "instance": "a"}, "-1x5"),
        _series("conveyor_stream_pending", {**product, "instance": "a"}, "3x5"),
        _series("conveyor_stream_lag", {**product, "instance": "b"}, "-1x5"),
        _series("conveyor_stream_pending", {**product, "instance": "b"}, "3x5"),
        _series("conveyor_stream_lag", events, "7x5"),
        _series("conveyor_stream_pending", events, "1x5"),
    ]
    pool_labels = '{pool="product", stream="conveyor:jobs:product"}'
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    # Unknown lag counts as 0 in the backlog; two reports count once.
                    {
                        "expr": _as_promql(backlog),
                        "eval_time": "4m",
                        "exp_samples": [{"labels": pool_labels, "value": 3}],
                    },
                    {
                        "expr": _as_promql(lag),
                        "eval_time": "4m",
                        "exp_samples": [{"labels": pool_labels, "value": -1}],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "dashboard.test.yml"
    test_file.write_text(yaml.safe_dump(test))
    run_tool(promtool, "test", "rules", str(test_file))


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    matchers = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def _dashboard_query(title: str) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    (panel,) = [panel for panel in dashboard_panels(dashboard) if panel["title"] == title]
    (target,) = panel["targets"]
    return str(target["expr"])


def test_dashboard_shows_backlog_throughput_stage_percentiles_failures_and_replicas() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [expression for _where, expression in dashboard_expressions()]
    everything = "\n".join(queries)

    def some_query(pattern: str) -> bool:
        return any(re.search(pattern, query) for query in queries)

    assert some_query(r"conveyor_stream_lag\{group=\"workers\"\}.*\+ conveyor_stream_pending"), (
        "backlog"
    )
    assert some_query(r"^label_replace\(max by \(stream\) \(conveyor_stream_lag"), "lag per pool"
    assert some_query(r"rate\(conveyor_jobs_total\[\$__rate_interval\]\)"), "throughput"
    for quantile in ("0.5", "0.95"):
        assert some_query(
            rf"histogram_quantile\({quantile}, sum by \(le, job_code, stage\) "
            r"\(rate\(conveyor_stage_duration_seconds_bucket"
        ), f"stage p{quantile}"
    assert some_query(r'outcome=~"failed\|dead"'), "failures"
    assert "conveyor_dead_letters_total" in everything, "dead letters"
    (replicas,) = [
        panel
        for panel in dashboard_panels(dashboard)
        if "desired vs current" in panel.get("title", "")
    ]
    replica_queries = " ".join(target["expr"] for target in replicas["targets"])
    assert "conveyor_autoscaler_desired_replicas" in replica_queries
    assert "conveyor_autoscaler_current_replicas" in replica_queries


def test_dashboard_is_well_formed_for_grafana() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_grafana_provisioning_loads_the_dashboards_from_where_compose_mounts_them() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "conveyor.yml").read_text())[
        "providers"
    ]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    assert DASHBOARD in DASHBOARD_FILES


@pytest.mark.parametrize("source", ["deploy/datacube.conf", "ConfigMap datacube-conf"])
def test_datacube_configuration_parses_and_takes_its_password_from_the_environment(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datacube.cfg import ODCConfig

    if source.startswith("ConfigMap"):
        documents = yaml.safe_load_all((MANIFESTS / "base" / "core" / "config.yaml").read_text())
        (config_map,) = [doc for doc in documents if doc["metadata"]["name"] == "datacube-conf"]
        text = config_map["data"]["datacube.conf"]
    else:
        text = (REPO_ROOT / source).read_text()
    path = tmp_path / "datacube.conf"
    path.write_text(text)
    monkeypatch.setenv("ODC_DEFAULT_DB_PASSWORD", "from-the-secret")
    config = ODCConfig(paths=[str(path)])
    assert "db_password" not in config.raw_config["default"], "no password in the file"
    environment = config["default"]
    assert environment.index_driver == "postgres"
    assert environment.db_database == "datacube" and environment.db_username == "datacube"
    assert environment.db_password == "from-the-secret"
