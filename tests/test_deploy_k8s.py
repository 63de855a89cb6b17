"""deploy/helm/saga-orchestrator: rendered with helm (scripts/ensure_helm) and validated offline
against the Kubernetes schemas (kubernetes-validate, strict: an unknown field fails) and, for the
Prometheus Operator's ServiceMonitor, a schema bundled from its CRD. Then the properties an
operator relies on: probes, non-root, PDBs, resources, secrets only as files, replicas no more
than partitions; and values that would deploy something broken are refused with a clear error.
tests/test_deploy_k8s_run.py starts a real orchestrator from what the chart renders."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchestrator.config import OrchestratorSettings
from participants.config import ParticipantConfig
from participants.samples.order.config import OrderConfig
from tests.support.helm import (
    CHART,
    DEV,
    PRODUCTION,
    Doc,
    containers,
    deployment,
    env,
    find_helm,
    kinds,
    refused,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
SERVICEMONITOR_SCHEMA = (
    ROOT / "deploy" / "helm" / "schemas" / "servicemonitor-monitoring.coreos.com-v1.json"
)
#: the oldest Kubernetes the chart supports (PDB unhealthyPodEvictionPolicy is beta in 1.27)
#: and the newest kubernetes-validate knows
K8S_VERSIONS = ("1.27", kubernetes_validate.latest_version())
#: Custom resources: validated with a bundled schema, never skipped
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA}
SAMPLE_WORKERS = ("inventory", "payment", "shipping", "notification")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$", re.IGNORECASE)


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


VARIANTS = {
    "defaults": (),
    "production": ("-f", str(PRODUCTION)),
    "dev": ("-f", str(DEV)),
}


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[Doc]]:
    return {name: render(helm, *args) for name, args in VARIANTS.items()}


def validate(doc: Doc) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads(CRD_SCHEMAS[key].read_text())
        jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


# ---- schemas ----


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    """Strict validation: a misspelt or misplaced field fails (the API server would drop it
    silently); a kind with no schema fails too, except CRDs, which have a bundled schema."""
    docs = rendered[variant]
    assert docs
    for doc in docs:
        validate(doc)


def test_the_validators_reject_a_broken_manifest(rendered: dict[str, list[Doc]]) -> None:
    """The validation is not a no-op: a misspelt field in a Deployment, a wrong type in a
    probe and a misspelt field in the ServiceMonitor are each refused."""
    docs = rendered["production"]
    dep = json.loads(json.dumps(deployment(docs, "orchestrator")))
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(dep)
    dep = json.loads(json.dumps(deployment(docs, "orchestrator")))
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = "10s"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(dep)
    (monitor,) = kinds(docs, "ServiceMonitor")
    monitor = json.loads(json.dumps(monitor))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({**monitor, "kind": "ServiceMonitorr"}, K8S_VERSIONS[-1])


def test_helm_lint_passes(helm: str) -> None:
    """`helm lint` over each values file, with the chart's values.schema.json."""
    for args in VARIANTS.values():
        out = subprocess.run(
            [helm, "lint", str(CHART), *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr


# ---- what the manifests hold ----


def test_the_orchestrator_and_the_four_sample_workers(rendered: dict[str, list[Doc]]) -> None:
    """One Deployment for the orchestrator (`saga orchestrator run`) and one per sample worker
    (`saga participant run <name>`), each name an entry point of `saga.participants`."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]["saga.participants"]
    docs = rendered["defaults"]
    (orch,) = containers(deployment(docs, "orchestrator"))
    assert orch["args"] == ["orchestrator", "run"]
    for name in SAMPLE_WORKERS:
        assert name in entry_points
        (worker,) = containers(deployment(docs, name))
        assert worker["args"] == ["participant", "run", name]
    assert len(kinds(docs, "Deployment")) == 1 + len(SAMPLE_WORKERS)
    dev = rendered["dev"]
    (loyalty,) = containers(deployment(dev, "loyalty"))
    assert loyalty["args"] == ["participant", "run", "participants.examples.loyalty:svc"]
    assert "shipping" not in {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in kinds(dev, "Deployment")
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_on_the_http_port(rendered: dict[str, list[Doc]], variant: str) -> None:
    """/livez for startup and liveness, /readyz for readiness, on the port the API listens on;
    the Service sends traffic there."""
    docs = rendered[variant]
    (orch,) = containers(deployment(docs, "orchestrator"))
    (port,) = orch["ports"]
    assert port["name"] == "http"
    assert env(orch)["SAGA_HTTP_PORT"] == str(port["containerPort"])
    assert env(orch)["SAGA_HTTP_HOST"] == "0.0.0.0"
    assert orch["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert orch["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert orch["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (service,) = kinds(docs, "Service")
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] == "http"
    pod_labels = deployment(docs, "orchestrator")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for name in SAMPLE_WORKERS:  # the API's Service selects no worker
        if variant != "dev" or name != "shipping":
            labels = deployment(docs, name)["spec"]["template"]["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_runs_as_non_root_with_a_read_only_root(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    """runAsNonRoot with a numeric uid (the kubelet can only check a number), no privilege
    escalation, a read-only root filesystem, every capability dropped, no service account
    token, no service-link env vars."""
    for dep in kinds(rendered[variant], "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        for c in containers(dep):
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, c["name"]
            assert csc["allowPrivilegeEscalation"] is False, c["name"]
            assert csc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert csc.get("privileged") is not True
            assert csc.get("runAsUser", sc["runAsUser"]) != 0


def test_the_pods_run_as_the_images_user(rendered: dict[str, list[Doc]]) -> None:
    """The default uid and gid are the ones deploy/Dockerfile creates and runs as."""
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "deploy/Dockerfile").read_text(), re.M)
    assert user, "deploy/Dockerfile runs as no numeric USER uid:gid"
    for dep in kinds(rendered["defaults"], "Deployment"):
        sc = dep["spec"]["template"]["spec"]["securityContext"]
        assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == user.groups()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_deployment_has_a_disruption_budget_and_resources(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    """A PodDisruptionBudget selects each Deployment's pods; each container requests CPU and
    memory and has a memory limit."""
    docs = rendered[variant]
    budgets = kinds(docs, "PodDisruptionBudget")
    for dep in kinds(docs, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, dep["metadata"]["name"]
        assert matching[0]["spec"]["maxUnavailable"] >= 1
        for c in containers(dep):
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_replicas_no_more_than_partitions(rendered: dict[str, list[Doc]], variant: str) -> None:
    """Each copy needs a partition of its own to do anything (and to be ready); with none to
    spare a rollout replaces copies one at a time instead of surging."""
    dep = deployment(rendered[variant], "orchestrator")
    (orch,) = containers(dep)
    partitions = int(env(orch)["SAGA_TOPIC_PARTITIONS"])
    replicas = dep["spec"]["replicas"]
    assert 1 <= replicas <= partitions
    rolling = dep["spec"]["strategy"]["rollingUpdate"]
    if replicas == partitions:
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (0, 1)
    else:
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)


def test_more_replicas_than_partitions_is_refused(helm: str) -> None:
    """The chart will not render copies that could never own a partition."""
    err = refused(helm, "--set", "orchestrator.replicas=7", "--set", "topics.partitions=6")
    assert "orchestrator.replicas (7) must not exceed topics.partitions (6)" in err
    assert render(helm, "--set", "orchestrator.replicas=6", "--set", "topics.partitions=6")


@pytest.mark.parametrize("variant", VARIANTS)
def test_env_names_are_real_settings(rendered: dict[str, list[Doc]], variant: str) -> None:
    """Every SAGA_* variable the chart sets is a setting the processes read: a misspelt one
    would be ignored without a word (the settings ignore unknown names)."""
    known = {
        f"SAGA_{name.upper()}"
        for model in (OrchestratorSettings, ParticipantConfig, OrderConfig)
        for name in model.model_fields
    }
    for dep in kinds(rendered[variant], "Deployment"):
        for c in containers(dep):
            for name in env(c):
                assert name in known, f"{dep['metadata']['name']}: {name} is not a setting"


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_arrive_as_files_never_as_values(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    """No env var holds a secret or reads one from a Secret; each *_FILE setting names a file
    that a Secret volume mounted in that container provides."""
    for dep in kinds(rendered[variant], "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in containers(dep):
            assert "envFrom" not in c
            files, dirs = _secret_files(c, volumes)
            env = {e["name"]: e for e in c.get("env", [])}
            # static membership: each pod its own instance id, its name (the downward API)
            pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
            assert env.pop("SAGA_GROUP_INSTANCE_ID")["valueFrom"] == pod_name
            for e in env.values():
                assert "valueFrom" not in e, f"{e['name']} comes from a Secret as a value"
                if e["name"].endswith("_FILE"):
                    mounted = e["value"] in files or os.path.dirname(e["value"]) in dirs
                    assert mounted, f"{e['name']}={e['value']} is not mounted from a Secret"
                else:
                    assert not SECRET_NAME.search(e["name"]), f"{e['name']} holds a secret"
                    assert not re.search(r"://[^/@]*:[^/@]*@", e.get("value", "")), e["name"]


def _secret_files(container: Doc, volumes: dict[str, Doc]) -> tuple[set[str], set[str]]:
    """The files Secret volumes put in the container (those listed by key), and the folders
    where a whole Secret is mounted (every key of it a file)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for mount in container.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        if "secret" in vol:
            items = vol["secret"].get("items")
            if items:
                files |= {f"{mount['mountPath']}/{i['path']}" for i in items}
            else:
                dirs.add(mount["mountPath"])
        for source in vol.get("projected", {}).get("sources", []):
            for item in source.get("secret", {}).get("items", []):
                files.add(f"{mount['mountPath']}/{item['path']}")
    return files, dirs


def test_the_secure_settings_are_wired(rendered: dict[str, list[Doc]]) -> None:
    """With SASL_SSL, Redis ACL users and TLS, each component logs in as itself, with its
    password file, the CA, and (Kafka mTLS) its client certificate."""
    docs = rendered["production"]
    (orch,) = containers(deployment(docs, "orchestrator"))
    e = env(orch)
    assert e["SAGA_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert e["SAGA_KAFKA_SASL_USERNAME"] == "orchestrator"
    assert e["SAGA_KAFKA_SASL_PASSWORD_FILE"] == "/etc/saga/secrets/kafka-sasl-password"
    assert e["SAGA_KAFKA_SSL_CAFILE"] == "/etc/saga/kafka-tls/ca.crt"
    assert e["SAGA_KAFKA_SSL_CERTFILE"] and e["SAGA_KAFKA_SSL_KEYFILE"]
    assert e["SAGA_REDIS_USERNAME"] == "orchestrator"
    assert e["SAGA_REDIS_PASSWORD_FILE"] == "/etc/saga/secrets/redis-password"
    assert e["SAGA_REDIS_SSL_CAFILE"] == "/etc/saga/redis-tls/ca.crt"
    assert "SAGA_REDIS_SSL_CERTFILE" not in e
    assert e["SAGA_HTTP_TOKENS_FILE"] == "/etc/saga/secrets/http-tokens"
    (payment,) = containers(deployment(docs, "payment"))
    assert env(payment)["SAGA_KAFKA_SASL_USERNAME"] == "payment-svc"
    assert env(payment)["SAGA_REDIS_USERNAME"] == "payment"
    assert "SAGA_HTTP_TOKENS_FILE" not in env(payment)
    volumes = deployment(docs, "payment")["spec"]["template"]["spec"]["volumes"]
    (secrets,) = [v for v in volumes if v["name"] == "secrets"]
    (source,) = secrets["projected"]["sources"]
    assert source["secret"]["name"] == "saga-payment-credentials"
    assert not kinds(docs, "Secret"), "production values must not make Secrets"


def test_chart_made_secrets_appear_in_secrets_only(helm: str) -> None:
    """With secrets.create (development), every password and token from the values file is in
    a Secret, and in no other object, neither in clear nor base64."""
    values = yaml.safe_load(DEV.read_text())["secrets"]
    plain = [values["metricsToken"]] + [
        pw for creds in values["credentials"].values() for pw in creds.values()
    ]
    plain += [line.split()[-1] for line in values["httpTokens"].splitlines()]
    docs = render(helm, "-f", str(DEV))
    secret_text = "\n".join(
        base64.b64decode(v).decode() for s in kinds(docs, "Secret") for v in s["data"].values()
    )
    for word in plain:
        assert word in secret_text, f"{word} is in no Secret"
        b64 = base64.b64encode(word.encode()).decode()
        for doc in docs:
            if doc["kind"] != "Secret":
                text = yaml.safe_dump(doc)
                assert word not in text and b64 not in text, f"{word} in {doc['kind']}"


def test_the_service_monitor_scrapes_the_api_as_job_saga_orchestrator(
    rendered: dict[str, list[Doc]],
) -> None:
    """It selects the API's Service, scrapes /metrics on the http port with a read token from
    a Secret, and names the job saga-orchestrator, which deploy/prometheus/alerts.yml uses."""
    docs = rendered["production"]
    (monitor,) = kinds(docs, "ServiceMonitor")
    (service,) = kinds(docs, "Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"][spec["jobLabel"]] == "saga-orchestrator"
    assert 'job="saga-orchestrator"' in (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert spec["namespaceSelector"]["matchNames"] == ["shop"]
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "saga-prometheus-token", "key": "token"},
    }
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not kinds(rendered["defaults"], "ServiceMonitor"), "off unless asked for"


# ---- values that must be refused ----


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--set", "redis.url=redis://:hunter2hunter2@redis:6379/0"), "must not carry a password"),
        (("--set", "redis.url=http://redis:6379"), "/redis/url"),
        (("--set", "kafka.securityProtocol=SASL_SSH"), "/kafka/securityProtocol"),
        (("--set", "topics.partitions=0"), "/topics/partitions"),
        (("--set", "orchestrator.replicas=0"), "/orchestrator/replicas"),
        (("--set", "orchestrator.replicas=two"), "/orchestrator/replicas"),
        (("--set", "orchestrator.replikas=2"), "'replikas' not allowed"),
        (("--set", "workers.Bad_Name.enabled=true"), "workers.Bad_Name: a worker's name"),
        (("--set", "keyPrefix=saga:x"), "/keyPrefix"),
        (("--set", "secrets.create=true"), "set secrets.httpTokens"),
        (
            (
                *("--set", "secrets.create=true"),
                *("--set", "secrets.httpTokens=a read b"),
                *("--set", "redis.auth=true"),
            ),
            "secrets.credentials.orchestrator.redisPassword is required",
        ),
        (("--set", "podSecurityContext.runAsNonRoot=false"), "/podSecurityContext/runAsNonRoot"),
        (("--set", "podSecurityContext.runAsUser=0"), "/podSecurityContext/runAsUser"),
    ],
)
def test_values_that_would_deploy_something_broken_are_refused(
    helm: str, args: tuple[str, ...], says: str
) -> None:
    """Each is refused at render time with an error that names what to change."""
    assert says in refused(helm, *args)
