"""deploy/prometheus/alerts.yml: promtool accepts it and passes its unit test beside it
(alerts_test.yml), which makes every alert fire on one series and stay silent on a near miss;
and every alert carries what whoever it pages needs (a `for:`, a severity, a summary and a
description naming the metric it reads). The rules are also loaded by a real Prometheus
scraping real processes in test_dashboards.py."""

from __future__ import annotations

import re

import yaml

from tests.observability.promconfig import ALERTS, ALERTS_TEST, alert_rules, promtool

# The list: drift alarm, forgetting above a bound, feedback lag growing, publishes
# rejected, learner down, the API's 5xx ratio.
ALERT_NAMES = {"MnemoDriftAlarm", "MnemoForgetting", "MnemoFeedbackLagGrowing",
               "MnemoPublishesRejected", "MnemoLearnerDown", "MnemoApiServerErrors"}


def test_promtool_checks_the_rules_and_passes_their_unit_test() -> None:
    promtool("check", "rules", str(ALERTS))
    promtool("test", "rules", str(ALERTS_TEST))


def test_every_alert_says_how_bad_what_it_reads_and_what_to_do() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: no `for:`"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        read = set(re.findall(r"\b(mnemo_[a-z_]+|up)\{", rule["expr"])) | set(
            re.findall(r"\(\s*(mnemo_[a-z_]+)\s*\)", rule["expr"]))
        assert read, (name, rule["expr"])
        assert any(metric in annotations["description"] for metric in read), (name, read)


def test_the_unit_test_fires_and_spares_every_alert() -> None:
    fired, spared = set(), set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else spared).add(check["alertname"])
    assert fired == spared == ALERT_NAMES, (fired, spared)
