"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yml.

alerts.yml is the one source of the alerting rules; the Prometheus Operator's PrometheusRule
carries the same groups. After changing alerts.yml, run from any folder:

    .venv/bin/python deploy/kubernetes/generate_prometheusrule.py

It needs Python 3.11+ and PyYAML, which the README's install puts in .venv (any python3 with
PyYAML works); tests/test_deploy.py fails while the two files differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter the user picked
    sys.exit(
        "generate_prometheusrule.py needs PyYAML: run it with the project's interpreter "
        "(.venv/bin/python deploy/kubernetes/generate_prometheusrule.py after the README's "
        "install) or `pip install pyyaml`"
    )

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
OUT = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/kubernetes/generate_prometheusrule.py:
# edit alerts.yml and run the script, not this file.
# kube-prometheus-stack only loads PrometheusRules whose labels match its ruleSelector (by
# default `release: <helm release name>`): add that label if yours needs it.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as in alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "do-exporter",
            "labels": {
                "app.kubernetes.io/name": "do-exporter",
                "app.kubernetes.io/component": "alerting-rules",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }


def render() -> str:
    alerts = yaml.safe_load(ALERTS.read_text())
    body = yaml.dump(
        prometheus_rule(alerts),
        Dumper=_Dumper,
        sort_keys=False,
        width=1000,
        default_flow_style=False,
    )
    return HEADER + body


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
