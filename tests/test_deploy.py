"""Deploy files parse, fit together, and name only files, flags and env vars that exist."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_contract import ROOT

from tests.ports import free_port
from tests.support import SAFETY_TIMEOUT, run_cli, wait_until

DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
UID = 10001


@functools.cache
def help_text() -> str:
    """``--help`` as the command prints it (run in this process: the text is the point)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_"))}
    run = run_cli(["--help"], env)
    assert run.returncode == 0, run.stderr
    return run.stdout


def known_flags() -> set[str]:
    # Dotted flags too (--web.listen-address, --config.file), Prometheus' spelling.
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*(?:\.[a-z][a-z-]*)*", help_text()))


def known_env() -> set[str]:
    return set(re.findall(r"\b(?:CLOUDFLARE|DO_EXPORTER)_[A-Z_]+\b", help_text()))


def assert_flags_exist(args: list[str]) -> None:
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert flags <= known_flags(), flags - known_flags()


def test_help_lists_the_contract() -> None:
    """The CLI contract the deploy files rely on is what `--help` shows."""
    assert {"--api-token-file", "--web.listen-address", "--demo", "--interval", "--once"} <= (
        known_flags()
    )
    assert {"CLOUDFLARE_API_TOKEN_FILE", "CLOUDFLARE_API_TOKEN", "DO_EXPORTER_LISTEN_ADDRESS"} <= (
        known_env()
    )


# ---- Docker -----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def healthcheck_command() -> list[str]:
    (check,) = [args for instr, args in dockerfile() if instr == "HEALTHCHECK"]
    cmd: list[str] = json.loads(check.split("CMD", 1)[1])
    return cmd


def test_dockerfile_slim_nonroot_with_healthcheck() -> None:
    """Slim Python 3.11 base, numeric non-root USER, HEALTHCHECK on /healthz, do-exporter."""
    instrs = dockerfile()
    froms = [args for instr, args in instrs if instr == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    (user,) = [args for instr, args in instrs if instr == "USER"]
    assert user.split(":")[0] == str(UID)
    assert "/healthz" in " ".join(healthcheck_command())
    (entry,) = [args for instr, args in instrs if instr == "ENTRYPOINT"]
    assert json.loads(entry) == ["do-exporter"]
    for instr, args in instrs:
        if instr == "ENV":
            for name in re.findall(r"\b([A-Z_]+)=", args):
                assert name.startswith("PYTHON") or name in known_env(), name


def test_dockerfile_copies_files_that_exist() -> None:
    """Every COPY source from the build context (the repository root) exists."""
    for instr, args in dockerfile():
        if instr == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: missing in the repository"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return data


def test_compose_stack_fits_together() -> None:
    """exporter (demo, 0.0.0.0:9877), Prometheus with the rules, Grafana provisioned."""
    services = compose()["services"]
    assert set(services) == {"exporter", "prometheus", "grafana"}
    exporter = services["exporter"]
    build = exporter["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    command = exporter["command"]
    assert_flags_exist(command)
    assert "--demo" in command
    assert command[command.index("--web.listen-address") + 1] == "0.0.0.0:9877"
    for port in exporter["ports"] + services["prometheus"]["ports"] + services["grafana"]["ports"]:
        assert port.startswith("127.0.0.1:"), "publish on loopback only"
    prom = services["prometheus"]
    config = next(c for c in prom["command"] if c.startswith("--config.file="))
    mounts = {}
    for volume in prom["volumes"] + services["grafana"]["volumes"]:
        src, dest = volume.split(":")[:2]
        if src.startswith("."):
            assert (DOCKER / src).exists(), volume
            mounts[dest] = (DOCKER / src).resolve()
    assert mounts[config.split("=", 1)[1]] == DEPLOY / "prometheus" / "prometheus.yml"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in scrape["rule_files"]:
        assert mounts[rule_file] == DEPLOY / "prometheus" / "alerts.yml"
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "do-exporter"  # the health alerts select this job
    (target,) = job["static_configs"][0]["targets"]
    assert target == "exporter:9877"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_scrape_config_is_valid(tmp_path: Path) -> None:
    """`promtool check config` accepts prometheus.yml (rule path pointed at the repo)."""
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/rules/alerts.yml", str(DEPLOY / "prometheus/alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(text)
    run = subprocess.run(
        ["promtool", "check", "config", "--lint=all", "--lint-fatal",
         str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.e2e
def test_docker_healthcheck_command_asks_healthz() -> None:
    """The HEALTHCHECK command passes against a live exporter and fails with none."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "do_exporter", "--demo", "--listen-address", f"127.0.0.1:{port}",
         "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cmd = [sys.executable if c == "python" else c for c in healthcheck_command()]
    try:
        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except OSError:
                return False
            return True

        wait_until(up, "the exporter answers /healthz")
        env = dict(os.environ, DO_EXPORTER_LISTEN_ADDRESS=f"127.0.0.1:{port}")
        assert subprocess.run(cmd, env=env, timeout=SAFETY_TIMEOUT).returncode == 0
        env["DO_EXPORTER_LISTEN_ADDRESS"] = f":{free_port()}"
        run = subprocess.run(cmd, env=env, timeout=SAFETY_TIMEOUT, capture_output=True)
        assert run.returncode != 0
    finally:
        proc.terminate()
        proc.wait(timeout=SAFETY_TIMEOUT)


# ---- Kubernetes -------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> manifest, for every YAML under deploy/kubernetes/."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def test_kustomization_lists_existing_manifests() -> None:
    """kustomization.yaml names files that exist and hold the workload and Operator objects."""
    kust = manifests()["Kustomization"]
    kinds = set()
    for res in kust["resources"]:
        assert (K8S / res).exists(), res
        kinds |= {doc["kind"] for doc in yaml.safe_load_all((K8S / res).read_text())}
    assert kinds == {"Deployment", "Service", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_the_manifests() -> None:
    """`kubectl kustomize` (offline) builds the four objects from kustomization.yaml."""
    run = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(run.stdout))
    assert kinds == ["Deployment", "PrometheusRule", "Service", "ServiceMonitor"]


def test_deployment_token_from_secret_file() -> None:
    """The token Secret is mounted read-only; CLOUDFLARE_API_TOKEN_FILE names that file."""
    m = manifests()
    pod = m["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= known_env()
    assert "CLOUDFLARE_API_TOKEN" not in env
    volumes = {v["name"]: v for v in pod["volumes"]}
    (secret_vol,) = [v for v in volumes.values() if "secret" in v]
    secret = secret_vol["secret"]
    assert secret["secretName"] == m["Secret"]["metadata"]["name"]
    (mount,) = [vm for vm in container["volumeMounts"] if vm["name"] == secret_vol["name"]]
    assert mount["readOnly"]
    (item,) = secret["items"]
    assert item["key"] in m["Secret"]["stringData"]
    assert env["CLOUDFLARE_API_TOKEN_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert_flags_exist(container.get("args", []))


def test_deployment_hardened_with_probes_and_resources() -> None:
    """Probes on /healthz and /readyz, requests set, read-only root, non-root as the image."""
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9877}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == UID
    assert pod["automountServiceAccountToken"] is False


def test_service_and_servicemonitor_select_the_pod() -> None:
    """Service -> pod labels and port; ServiceMonitor -> Service labels and port name."""
    m = manifests()
    deployment, service, monitor = m["Deployment"], m["Service"], m["ServiceMonitor"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == "http"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [svc_port["name"]]
    # The Operator's job label is the Service name; alerts.yml selects job="do-exporter".
    assert service["metadata"]["name"] == "do-exporter"


def test_prometheusrule_is_generated_from_alerts_yml() -> None:
    """prometheusrule.yaml carries exactly alerts.yml's groups and is freshly generated."""
    spec = importlib.util.spec_from_file_location(
        "generate_prometheusrule", K8S / "generate_prometheusrule.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == module.render(), "run: python deploy/kubernetes/generate_prometheusrule.py"
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert yaml.safe_load(committed)["spec"]["groups"] == alerts["groups"]


def ha_example(tmp_path: Path) -> Path:
    """A copy of deploy/kubernetes with kustomization.yaml's commented HA example turned on."""
    for path in K8S.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    kust = tmp_path / "kustomization.yaml"
    head, example = kust.read_text().split('(the lines starting with "# ").\n')
    lines = example.splitlines()
    assert lines and all(line.startswith("# ") for line in lines), "the example is one block"
    kust.write_text(head + "\n" + "\n".join(line[2:] for line in lines) + "\n")
    return tmp_path


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_the_ha_example(tmp_path: Path) -> None:
    """The commented two-replica example renders: 2 pods, half the budget each, no surge."""
    run = subprocess.run(
        ["kubectl", "kustomize", str(ha_example(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (deployment,) = [d for d in yaml.safe_load_all(run.stdout) if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}
    }  # fmt: skip
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DO_EXPORTER_API_RATE_LIMIT"] == "500"  # half of the default 1000
    assert env["DO_EXPORTER_GRAPHQL_RATE_LIMIT"] == "125"  # half of the default 250
    assert env["CLOUDFLARE_API_TOKEN_FILE"] == "/etc/do-exporter/secret/token"  # kept
    assert {"DO_EXPORTER_API_RATE_LIMIT", "DO_EXPORTER_GRAPHQL_RATE_LIMIT"} <= known_env()


def test_prometheusrule_generator_says_what_it_needs() -> None:
    """Run by an interpreter without PyYAML, the generator names what to use, writes nothing."""
    before = (K8S / "prometheusrule.yaml").read_text()
    run = subprocess.run(
        [sys.executable, "-S", str(K8S / "generate_prometheusrule.py")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "needs PyYAML" in run.stderr and ".venv/bin/python" in run.stderr
    assert (K8S / "prometheusrule.yaml").read_text() == before


# ---- Prometheus: deploy/prometheus/check.sh ------------------------------------------------

CHECK_SH = DEPLOY / "prometheus" / "check.sh"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)",
)


@needs_promtool
def test_check_sh_finds_the_interpreter_and_passes(tmp_path: Path) -> None:
    """The README's check runs from any folder without PYTHON= and finds nothing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    # Where there is no .venv (a CI image that installed elsewhere), `do-exporter` on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    run = subprocess.run(
        ["bash", str(CHECK_SH)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "check.sh: all checks passed" in output


@needs_promtool
def test_check_sh_says_when_the_interpreter_cannot_import_the_exporter(tmp_path: Path) -> None:
    """A PYTHON without do-exporter installed: one clear line naming the fix, exit 1."""
    env = {**os.environ, "PYTHON": "/bin/false"}
    run = subprocess.run(
        ["bash", str(CHECK_SH)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot import do_exporter" in run.stderr and "pip install" in run.stderr
    assert "== promtool" not in run.stdout


# ---- systemd ----------------------------------------------------------------------------


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting of the unit, repeated keys kept."""
    out = []
    section = ""
    for line in (SYSTEMD / "do-exporter.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_systemd_unit_runs_the_exporter_hardened() -> None:
    """ExecStart runs do-exporter with real flags; env vars exist; the sandbox is on."""
    entries = unit_entries()
    assert {s for s, _, _ in entries} == {"Unit", "Service", "Install"}
    service = {k: v for s, k, v in entries if s == "Service"}
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "do-exporter"
    assert_flags_exist(argv[1:])
    for _, k, v in entries:
        if k == "Environment":
            assert v.split("=", 1)[0] in known_env(), v
    envs = dict(v.split("=", 1) for _, k, v in entries if k == "Environment")
    cred = dict(v.split(":", 1) for _, k, v in entries if k == "LoadCredential")
    assert envs["CLOUDFLARE_API_TOKEN_FILE"] == "%d/" + next(iter(cred))
    for key, value in {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
        "RestartPreventExitStatus": "2",
    }.items():  # fmt: skip
        assert service[key] == value, key


def test_systemd_env_file_names_known_variables() -> None:
    """Every variable in the env file example (set or commented out) is one the CLI reads."""
    names = re.findall(r"^#?([A-Z][A-Z_]+)=", (SYSTEMD / "do-exporter.env").read_text(), re.M)
    assert names and set(names) <= known_env()
    service = {k: v for s, k, v in unit_entries() if s == "Service"}
    assert service["EnvironmentFile"].lstrip("-").endswith("/do-exporter.env")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this Python)."""
    text = (SYSTEMD / "do-exporter.service").read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable} -m do_exporter", text, flags=re.M)
    unit = tmp_path / "do-exporter.service"
    unit.write_text(text)
    run = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    if run.returncode != 0 and "Failed to" in output and "do-exporter.service" not in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:200]}")
    assert run.returncode == 0, output
    assert "Unknown" not in output and "ignoring" not in output, output
