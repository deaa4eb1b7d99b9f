"""The Helm chart: lint, render, validate every manifest, and feed the bridge's config.

The stream is a StatefulSet (each replica's journal PersistentVolumeClaim
follows its pod; two replicas by default, one leading and one hot standby);
webhooks and commands are Deployments. "Workload" below means either.

helm-python-sdk binds Helm's own Go SDK (bundled in its wheel, no ``helm``
binary, no network), so lint, schema validation and rendering are Helm's.
kubernetes-validate checks every core manifest against the Kubernetes OpenAPI
schemas (strict: unknown fields fail). ServiceMonitor and PrometheusRule are
CRDs it has no schema for: they are checked against the subset of the
prometheus-operator CRD schema that the chart uses (below), and the rendered
rules go through ``promtool check rules`` as well.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from bridge.app import accounts_of
from bridge.config import KNOWN_VARIABLES, REQUIREMENTS, load_settings
from bridge.errors import ConfigError
from tests.deploy.chart_schema import settable_variables
from tests.deploy.observability import CHART, alert_rules, run_tool

# The chart's kubeVersion floor and the newest release kubernetes-validate knows.
KUBE_VERSIONS = ("1.25", kubernetes_validate.latest_version())
RELEASE = "bridge"
NAMESPACE = "logistics"
CI_VALUES = CHART / "ci"
SCENARIOS = {
    "defaults": None,
    "chart-secret": CI_VALUES / "chart-secret-values.yaml",
    "all-components": CI_VALUES / "all-components-values.yaml",
    "journal-emptydir": CI_VALUES / "journal-emptydir-values.yaml",
    "journal-off": CI_VALUES / "journal-off-values.yaml",
    "single-replica": CI_VALUES / "single-replica-values.yaml",
}
COMPONENTS = ("stream", "webhooks", "commands")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Where the chart mounts the journal; the image's BRIDGE_JOURNAL_DIR too.
JOURNAL_DIR = "/var/lib/sendstack-bridge/journal"

Manifest = dict[str, Any]


def _values(scenario: str) -> dict[str, Any]:
    path = SCENARIOS[scenario]
    if path is None:
        return {}
    values: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return values


@functools.cache
def _rendered(scenario: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(_values(scenario), name=RELEASE, namespace=NAMESPACE)


def _documents(rendered: dict[str, str]) -> list[Manifest]:
    return [
        doc
        for name, text in rendered.items()
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def manifests(scenario: str) -> list[Manifest]:
    """Every object the chart renders for *scenario* (NOTES.txt left out)."""
    return _documents(_rendered(scenario))


def render(values: dict[str, Any], name: str = RELEASE) -> list[Manifest]:
    """Every object the chart renders for *values* given inline."""
    with helm.Chart.load(CHART) as chart:
        return _documents(chart.render(values, name=name, namespace=NAMESPACE))


def of_kind(scenario: str, kind: str) -> list[Manifest]:
    return [m for m in manifests(scenario) if m["kind"] == kind]


def by_name(scenario: str, kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in of_kind(scenario, kind)}


def component_of(manifest: Manifest) -> str:
    component: str = manifest["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


# --------------------------------------------------------------------------
# Lint and render


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict_is_clean(scenario: str) -> None:
    """``helm lint --strict`` reports no error and no warning."""
    report = helm.lint(
        CHART,
        _values(scenario),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSIONS[-1]}.0",
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_the_expected_objects(scenario: str) -> None:
    """Each scenario renders one workload per enabled component and its companions."""
    values = _values(scenario)
    enabled = [c for c in COMPONENTS if values.get(c, {}).get("enabled", c == "stream")]
    deployments = of_kind(scenario, "Deployment")
    assert sorted(component_of(d) for d in deployments) == sorted(
        c for c in enabled if c != "stream"
    )
    statefulsets = of_kind(scenario, "StatefulSet")
    assert [component_of(s) for s in statefulsets] == ["stream"]
    mapping = bool(values.get("stream", {}).get("mapping"))
    assert len(of_kind(scenario, "ConfigMap")) == len(enabled) + mapping
    services = of_kind(scenario, "Service")
    # A metrics Service each, the webhooks' own, the stream's headless one.
    assert len(services) == len(enabled) + ("webhooks" in enabled) + 1
    secrets = of_kind(scenario, "Secret")
    existing = values.get("credentials", {}).get("existingSecret")
    assert len(secrets) == (0 if existing else 1)
    monitoring = scenario == "all-components"
    assert len(of_kind(scenario, "ServiceMonitor")) == monitoring
    assert len(of_kind(scenario, "PrometheusRule")) == monitoring


def _validate_core(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(
            f"{manifest['kind']}/{manifest['metadata']['name']} against "
            f"Kubernetes {version}: {path}: {exc.message}"
        )


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_core_manifest_is_valid_kubernetes(scenario: str, version: str) -> None:
    """kubernetes-validate (strict) accepts every non-CRD object."""
    core = [m for m in manifests(scenario) if m["kind"] in CORE_KINDS]
    assert len(core) == len(manifests(scenario)) - len(crd_objects(scenario))
    for manifest in core:
        _validate_core(manifest, version)


CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
    "StatefulSet",
}


def crd_objects(scenario: str) -> list[Manifest]:
    return [m for m in manifests(scenario) if m["kind"] in CRD_SCHEMAS]


def test_custom_resources_match_the_operator_schema() -> None:
    """ServiceMonitor and PrometheusRule match the prometheus-operator v1 schema."""
    objects = crd_objects("all-components")
    assert sorted(m["kind"] for m in objects) == ["PrometheusRule", "ServiceMonitor"]
    for manifest in objects:
        jsonschema.validate(manifest, CRD_SCHEMAS[manifest["kind"]])


def test_rendered_prometheus_rule_is_the_alerts_file(tmp_path: Path) -> None:
    """The PrometheusRule is the alerts file, plus labels and runbook links."""
    (rule,) = of_kind("all-components", "PrometheusRule")
    values = _values("all-components")["prometheusRule"]
    rendered = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    source = alert_rules()
    assert [(r["alert"], r["expr"], r["for"]) for r in rendered] == [
        (r["alert"], r["expr"], r["for"]) for r in source
    ]
    for got, want in zip(rendered, source, strict=True):
        assert got["labels"] == {**values["additionalRuleLabels"], **want["labels"]}
        assert got["annotations"] == {
            **want["annotations"],
            "runbook_url": f"{values['runbookUrl']}#{want['alert'].lower()}",
        }
    rules_file = tmp_path / "rendered-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    result = run_tool("promtool", "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# The bridge's configuration


def _container_env(
    workload: Manifest, configmaps: dict[str, Manifest]
) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        assert set(item) == {"name", "value"}, "plain values only"
        env[item["name"]] = item["value"]
    return env


def _env_of(scenario: str, workload: Manifest) -> dict[str, str]:
    """The environment the workload's container gets: ConfigMaps, then env."""
    return _container_env(workload, by_name(scenario, "ConfigMap"))


def _workloads(scenario: str) -> Iterator[tuple[str, Manifest]]:
    for kind in WORKLOAD_KINDS:
        for workload in of_kind(scenario, kind):
            yield component_of(workload), workload


def _stream(scenario: str) -> Manifest:
    (stream,) = [w for c, w in _workloads(scenario) if c == "stream"]
    return stream


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_variable_the_chart_sets_is_known(scenario: str) -> None:
    """Every env var and ConfigMap key is a BRIDGE_* name bridge.config knows."""
    for configmap in of_kind(scenario, "ConfigMap"):
        if configmap["metadata"]["name"].endswith("-stream-mapping"):
            continue  # a file, mounted; not variables
        unknown = set(configmap["data"]) - KNOWN_VARIABLES
        assert not unknown, f"{configmap['metadata']['name']}: {sorted(unknown)}"
    for component, workload in _workloads(scenario):
        unknown = set(_env_of(scenario, workload)) - KNOWN_VARIABLES
        assert not unknown, f"{component}: {sorted(unknown)}"


def _with_credential_files(
    scenario: str, deployment: Manifest, env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    """*env* with the credential files written under *tmp_path*, as mounted."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "credentials"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "credentials"]
    secret_name = volume["secret"]["secretName"]
    secret = by_name(scenario, "Secret").get(secret_name)
    directory = tmp_path / deployment["metadata"]["name"]
    directory.mkdir()
    for item in volume["secret"]["items"]:
        if secret is not None:
            content = base64.b64decode(secret["data"][item["key"]]).decode()
        else:  # an existing Secret: stand in for its content
            content = f"value-of-{item['key']}"
        (directory / item["path"]).write_text(content)
    mapping = by_name(scenario, "ConfigMap").get(
        f"{RELEASE}-sendstack-bridge-stream-mapping"
    )
    if "BRIDGE_STREAM_MAPPING_FILE" in env and mapping is not None:
        (directory / "mapping.yaml").write_text(mapping["data"]["mapping.yaml"])
        env = {**env, "BRIDGE_STREAM_MAPPING_FILE": str(directory / "mapping.yaml")}
    prefix = mount["mountPath"] + "/"
    return {
        name: str(directory / value.removeprefix(prefix))
        if name.endswith("_FILE") and value.startswith(prefix)
        else value
        for name, value in env.items()
    }


@pytest.mark.parametrize(
    "scenario",
    [
        "chart-secret",
        "all-components",
        "journal-emptydir",
        "journal-off",
        "single-replica",
    ],
)
def test_each_component_s_configuration_loads(scenario: str, tmp_path: Path) -> None:
    """The bridge's own loader accepts what each workload is given."""
    for component, deployment in _workloads(scenario):
        env = _with_credential_files(
            scenario, deployment, _env_of(scenario, deployment), tmp_path
        )
        settings = load_settings(env, require=REQUIREMENTS[component])
        assert settings.ops.port == deployment_ops_port(deployment)


def test_default_values_lack_only_what_notes_warns_about(tmp_path: Path) -> None:
    """With bare defaults, the bridge reports just the bootstrap and the credentials."""
    ((component, deployment),) = list(_workloads("defaults"))
    env = _with_credential_files(
        "defaults", deployment, _env_of("defaults", deployment), tmp_path
    )
    with pytest.raises(ConfigError) as error:
        load_settings(env, require=REQUIREMENTS[component])
    named = sorted(problem.split(":")[0] for problem in error.value.problems)
    assert named == [
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
        "BRIDGE_SENDSTACK_APP_ID_FILE",
        "BRIDGE_SENDSTACK_APP_SECRET_FILE",
    ]
    notes = _rendered("defaults")["sendstack-bridge/templates/NOTES.txt"]
    assert "BRIDGE_KAFKA_BOOTSTRAP_SERVERS is empty" in notes
    assert "no Sendstack credentials" in notes


def test_schema_config_names_are_exactly_the_settable_variables() -> None:
    """The schema allows every known variable but credentials and chart-owned ones."""
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    allowed = schema["definitions"]["config"]["propertyNames"]["enum"]
    assert not set(allowed) - KNOWN_VARIABLES, "the schema allows unknown names"
    assert allowed == settable_variables(), (
        "values.schema.json is out of date with bridge/config.py; run "
        ".venv/bin/python -m tests.deploy.chart_schema"
    )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"config": {"BRIDGE_LOG_LEVL": "info"}}, "BRIDGE_LOG_LEVL"),
        ({"config": {"BRIDGE_SENDSTACK_APP_SECRET": "x"}}, "APP_SECRET"),
        ({"stream": {"config": {"BRIDGE_OPS_PORT": "1"}}}, "BRIDGE_OPS_PORT"),
        ({"config": {"BRIDGE_AUTH_MAX_FAILURES": 5}}, "want string"),
        ({"stream": {"replicas": 2, "ha": {"enabled": False}}}, "/stream/ha/enabled"),
        ({"stream": {"replicas": -1}}, "/stream/replicas"),
        ({"config": {"BRIDGE_HA_ENABLED": "true"}}, "BRIDGE_HA_ENABLED"),
        ({"stream": {"config": {"BRIDGE_HA_GROUP_ID": "g"}}}, "BRIDGE_HA_GROUP_ID"),
        (
            {"stream": {"config": {"BRIDGE_STREAM_SINGLE_SESSION": "true"}}},
            "BRIDGE_STREAM_SINGLE_SESSION",
        ),
        (
            {"stream": {"ha": {"coordinationTopic": "a b"}}},
            "/stream/ha/coordinationTopic",
        ),
        ({"stream": {"ha": {"sessionTimeoutMs": "6s"}}}, "/stream/ha/sessionTimeoutMs"),
        ({"stream": {"ha": {"bufferSeconds": 0}}}, "/stream/ha/bufferSeconds"),
        ({"stream": {"antiAffinity": {"type": "soft"}}}, "/stream/antiAffinity/type"),
        ({"stream": {"config": {"BRIDGE_JOURNAL_DIR": "/x"}}}, "BRIDGE_JOURNAL_DIR"),
        (
            {"stream": {"config": {"BRIDGE_STREAM_ACCOUNTS_DIR": "/x"}}},
            "BRIDGE_STREAM_ACCOUNTS_DIR",
        ),
        ({"config": {"BRIDGE_JOURNAL_ENABLED": "false"}}, "BRIDGE_JOURNAL_ENABLED"),
        ({"stream": {"journal": {"volume": "hostPath"}}}, "/stream/journal/volume"),
        ({"stream": {"journal": {"size": "2 GB"}}}, "/stream/journal/size"),
        ({"stream": {"journal": {"maxBytes": "1Gi"}}}, "/stream/journal/maxBytes"),
        ({"stream": {"strategy": {"type": "Recreate"}}}, "'strategy' not allowed"),
    ],
)
def test_schema_refuses_unknown_secret_owned_or_unquoted_values(
    values: dict[str, Any], complaint: str
) -> None:
    """Typos, credentials, chart-owned names, numbers, 2 streams without HA: refused."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert complaint in str(error.value)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"config": {"BRIDGE_SHUTDOWN_GRACE_SECONDS": "30"}},
            "must be below terminationGracePeriodSeconds",
        ),
        (
            {"stream": {"journal": {"size": "1Gi", "maxBytes": 1073741824}}},
            "must be at most 80% of stream.journal.size",
        ),
        (
            {"stream": {"journal": {"size": "1.5G", "maxBytes": 1200000001}}},
            "must be at most 80% of stream.journal.size",
        ),
        (
            {
                "stream": {"journal": {"volume": "emptyDir", "size": "1000Mi"}},
            },
            "must be at most 80% of stream.journal.size",
        ),
        (
            {"podSecurityContext": {"fsGroup": None}},
            "set podSecurityContext.fsGroup",
        ),
        (
            {"stream": {"ha": {"sessionTimeoutMs": 6000, "heartbeatIntervalMs": 2500}}},
            "must be at least 3 times stream.ha.heartbeatIntervalMs",
        ),
        (
            {"stream": {"ha": {"bufferSeconds": 10}}},
            "must be at least twice stream.ha.sessionTimeoutMs",
        ),
        (
            {"stream": {"config": {"BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "5000"}}},
            "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS (5000) must be at least",
        ),
    ],
)
def test_render_refuses_settings_that_would_lose_data(
    values: dict[str, Any], complaint: str
) -> None:
    """A cut grace period, a journal that fills or cannot write, HA that cannot work."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as error:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(error.value)


@pytest.mark.parametrize(
    "values",
    [
        {"stream": {"journal": {"size": "1.5G", "maxBytes": 1200000000}}},
        {"stream": {"journal": {"volume": "emptyDir"}}},
        {"stream": {"journal": {"enabled": False, "size": "1Mi"}}},
        {
            "podSecurityContext": {"fsGroup": None},
            "stream": {"journal": {"volume": "emptyDir"}},
        },
        {"stream": {"config": {"BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "9000"}}},
        {
            "config": {"BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "1000"},
            "stream": {"replicas": 1, "ha": {"enabled": False}},
        },
    ],
    ids=[
        "exactly-80-percent",
        "emptydir",
        "off-ignores-size",
        "emptydir-no-fsgroup",
        "request-timeout-fits-a-join",
        "short-request-timeout-without-ha",
    ],
)
def test_render_accepts_journals_that_fit(values: dict[str, Any]) -> None:
    """A journal of 80% of its volume, one without a PVC, a long enough timeout."""
    (stream,) = [m for m in render(values) if m["kind"] == "StatefulSet"]
    _validate_core(stream, KUBE_VERSIONS[-1])


def test_single_session_needs_no_special_rollout() -> None:
    """stream.singleSession with one replica sets the variable; the rollout is as is."""
    values = {
        "stream": {"singleSession": True, "replicas": 1, "ha": {"enabled": False}}
    }
    objects = render(values)
    (stream,) = [m for m in objects if m["kind"] == "StatefulSet"]
    assert stream["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    configmaps = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ConfigMap"}
    env = _container_env(stream, configmaps)
    assert env["BRIDGE_STREAM_SINGLE_SESSION"] == "true"
    assert _ha_env(env) == {"BRIDGE_HA_ENABLED": "false"}
    _validate_core(stream, KUBE_VERSIONS[-1])


def test_single_session_with_ha_runs_a_cold_standby() -> None:
    """stream.singleSession with the default two replicas and HA: it renders,
    with both the single-session flag and the hot standby's variables set
    (the daemon then keeps the standby cold)."""
    objects = render({"stream": {"singleSession": True}})
    (stream,) = [m for m in objects if m["kind"] == "StatefulSet"]
    configmaps = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ConfigMap"}
    env = _container_env(stream, configmaps)
    assert stream["spec"]["replicas"] == 2
    assert env["BRIDGE_STREAM_SINGLE_SESSION"] == "true"
    assert env["BRIDGE_HA_ENABLED"] == "true"
    _validate_core(stream, KUBE_VERSIONS[-1])


def test_single_session_still_needs_ha_for_two_replicas() -> None:
    """stream.singleSession with 2 replicas and HA off: refused like any two
    replicas without an election (each would publish every item)."""
    stream = {"singleSession": True, "replicas": 2, "ha": {"enabled": False}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as error:
        chart.render({"stream": stream}, name=RELEASE, namespace=NAMESPACE)
    assert "stream.ha.enabled is false" in str(error.value)


# --------------------------------------------------------------------------
# Pods


def deployment_ops_port(deployment: Manifest) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = [p for p in container["ports"] if p["name"] == "ops"]
    value: int = port["containerPort"]
    return value


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_locked_down(scenario: str) -> None:
    """Non-root, read-only root FS with /tmp in memory, no capabilities, seccomp."""
    for component, deployment in _workloads(scenario):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, component
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False, "service links inject BRIDGE_*"
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = mounts["/tmp"]  # noqa: S108 - the pod's emptyDir, checked here
        assert volumes[tmp]["emptyDir"]["medium"] == "Memory"
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_hit_livez_and_readyz_on_the_ops_port(scenario: str) -> None:
    """Liveness asks /livez and readiness /readyz, on the port BRIDGE_OPS_PORT names."""
    for component, deployment in _workloads(scenario):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [component]
        assert component in REQUIREMENTS
        assert container["livenessProbe"]["httpGet"] == {
            "path": "/livez",
            "port": "ops",
        }
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/readyz",
            "port": "ops",
        }
        env = _env_of(scenario, deployment)
        assert int(env["BRIDGE_OPS_PORT"]) == deployment_ops_port(deployment)
        if component == "webhooks":
            (http,) = [p for p in container["ports"] if p["name"] == "http"]
            assert int(env["BRIDGE_WEBHOOK_PORT"]) == http["containerPort"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stream_is_a_stateful_set_with_a_headless_service(scenario: str) -> None:
    """The stream's pods are a StatefulSet's, governed by a headless Service."""
    stream = _stream(scenario)
    assert stream["kind"] == "StatefulSet"
    replicas = _values(scenario).get("stream", {}).get("replicas", 2)
    assert stream["spec"]["replicas"] == replicas
    assert stream["spec"]["podManagementPolicy"] == "Parallel"
    assert stream["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    service = by_name(scenario, "Service")[stream["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    labels = stream["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert stream["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_deployments_keep_their_rolling_update() -> None:
    """Webhooks and commands stay Deployments that surge before they stop a pod."""
    deployments = of_kind("all-components", "Deployment")
    assert sorted(component_of(d) for d in deployments) == ["commands", "webhooks"]
    for deployment in deployments:
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }


def test_grace_period_outlasts_the_bridge_s_shutdown() -> None:
    """terminationGracePeriodSeconds exceeds BRIDGE_SHUTDOWN_GRACE_SECONDS."""
    for scenario in SCENARIOS:
        for component, deployment in _workloads(scenario):
            env = _env_of(scenario, deployment)
            grace = deployment["spec"]["template"]["spec"][
                "terminationGracePeriodSeconds"
            ]
            assert float(env["BRIDGE_SHUTDOWN_GRACE_SECONDS"]) < grace, component


def test_services_monitor_and_budgets_select_the_right_pods() -> None:
    """Selectors match pod labels; only metrics Services are scraped."""
    scenario = "all-components"
    pods = {
        component: d["spec"]["template"]["metadata"]["labels"]
        for component, d in _workloads(scenario)
    }

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    services = by_name(scenario, "Service")
    for name, service in services.items():
        selected = [
            c
            for c, labels in pods.items()
            if selects(service["spec"]["selector"], labels)
        ]
        assert selected == [component_of(service)], name
    (monitor,) = of_kind(scenario, "ServiceMonitor")
    scraped = sorted(
        name
        for name, service in services.items()
        if selects(
            monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
        )
    )
    assert scraped == sorted(
        f"{RELEASE}-sendstack-bridge-{c}-metrics" for c in COMPONENTS
    )
    for name in scraped:
        assert [p["name"] for p in services[name]["spec"]["ports"]] == ["ops"]
    webhooks = services[f"{RELEASE}-sendstack-bridge-webhooks"]
    assert [p["targetPort"] for p in webhooks["spec"]["ports"]] == ["http"]
    budgets = of_kind(scenario, "PodDisruptionBudget")
    assert sorted(component_of(b) for b in budgets) == [
        "commands",
        "stream",
        "webhooks",
    ]
    for budget in budgets:
        assert selects(
            budget["spec"]["selector"]["matchLabels"], pods[component_of(budget)]
        )


def test_existing_secret_is_mounted_with_its_own_keys() -> None:
    """With existingSecret, no Secret is made and its named keys are mounted."""
    values = _values("all-components")["credentials"]
    for _, deployment in _workloads("all-components"):
        (volume,) = [
            v
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "credentials"
        ]
        assert volume["secret"]["secretName"] == values["existingSecret"]
        assert sorted(item["key"] for item in volume["secret"]["items"]) == sorted(
            values["keys"].values()
        )


# --------------------------------------------------------------------------
# The prometheus-operator CRDs (monitoring.coreos.com/v1), the parts the chart uses.

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_RELABEL = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "action": {"type": "string"},
            "modulus": {"type": "integer"},
            "regex": {"type": "string"},
            "replacement": {"type": "string"},
            "separator": {"type": "string"},
            "sourceLabels": {"type": "array", "items": {"type": "string"}},
            "targetLabel": {"type": "string"},
        },
    },
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector"],
                "additionalProperties": False,
                "properties": {
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _STRING_MAP},
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {
                                "type": "array",
                                "items": {"type": "string"},
                            },
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "relabelings": _RELABEL,
                                "metricRelabelings": _RELABEL,
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_a_mapping_is_mounted_where_the_stream_reads_it() -> None:
    """stream.mapping: a ConfigMap mounted read-only, the variable pointing at it."""
    deployment = _stream("all-components")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "mapping"]
    assert mount["readOnly"] is True
    assert env["BRIDGE_STREAM_MAPPING_FILE"] == mount["mountPath"] + "/mapping.yaml"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "mapping"]
    configmap = by_name("all-components", "ConfigMap")[volume["configMap"]["name"]]
    assert "mapping.yaml" in configmap["data"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/mapping" in annotations
    others = [d for c, d in _workloads("all-components") if c != "stream"]
    assert all(
        "mapping" not in str(d["spec"]["template"]["spec"]["volumes"]) for d in others
    )


def test_stream_budget_keeps_one_replica_of_two() -> None:
    """By default a budget of minAvailable 1 covers the StatefulSet's two pods."""
    (budget,) = of_kind("defaults", "PodDisruptionBudget")
    stream = _stream("defaults")
    labels = stream["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in budget["spec"]
    _validate_core(budget, KUBE_VERSIONS[-1])


def test_single_stream_replica_has_no_budget() -> None:
    """One stream replica gets no budget: minAvailable 1 would block every drain."""
    assert of_kind("single-replica", "PodDisruptionBudget") == []
    values = {"stream": {"replicas": 1}}  # HA on, one replica: no budget either
    assert [m for m in render(values) if m["kind"] == "PodDisruptionBudget"] == []


# --------------------------------------------------------------------------
# The stream's journal


def _journal_mount(workload: Manifest) -> dict[str, Any] | None:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    mounts = [m for m in container["volumeMounts"] if m["name"] == "journal"]
    assert len(mounts) <= 1
    return mounts[0] if mounts else None


def _pod_volume(workload: Manifest, name: str) -> dict[str, Any] | None:
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    found = [v for v in volumes if v["name"] == name]
    return found[0] if found else None


def _journal_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("BRIDGE_JOURNAL_")}


@pytest.mark.parametrize(
    ("scenario", "size", "storage_class", "journal_env"),
    [
        (
            "defaults",
            "2Gi",
            None,
            {
                "BRIDGE_JOURNAL_ENABLED": "true",
                "BRIDGE_JOURNAL_DIR": JOURNAL_DIR,
                "BRIDGE_JOURNAL_MAX_BYTES": "1073741824",
                "BRIDGE_JOURNAL_DURABILITY": "interval",
                "BRIDGE_JOURNAL_FLUSH_INTERVAL_MS": "100",
                "BRIDGE_JOURNAL_WHEN_FULL": "block",
            },
        ),
        (
            "all-components",
            "4Gi",
            "premium-rwo",
            {
                "BRIDGE_JOURNAL_ENABLED": "true",
                "BRIDGE_JOURNAL_DIR": JOURNAL_DIR,
                "BRIDGE_JOURNAL_MAX_BYTES": "2147483648",
                "BRIDGE_JOURNAL_DURABILITY": "fsync",
                "BRIDGE_JOURNAL_FLUSH_INTERVAL_MS": "100",
                "BRIDGE_JOURNAL_WHEN_FULL": "drop_oldest",
            },
        ),
    ],
)
def test_journal_is_a_claim_template_mounted_where_journal_dir_points(
    scenario: str, size: str, storage_class: str | None, journal_env: dict[str, str]
) -> None:
    """A PVC journal: a claim of the size asked, mounted where BRIDGE_JOURNAL_DIR is."""
    stream = _stream(scenario)
    (claim,) = stream["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "journal"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": size}}
    assert claim["spec"].get("storageClassName") == storage_class
    assert _pod_volume(stream, "journal") is None, "the claim is the volume"
    mount = _journal_mount(stream)
    assert mount == {"name": "journal", "mountPath": JOURNAL_DIR}
    assert _journal_env(_env_of(scenario, stream)) == journal_env
    assert stream["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_claim_template_has_only_labels_that_never_change() -> None:
    """The claim template carries selector labels only, so upgrades never change it."""
    stream = _stream("defaults")
    (claim,) = stream["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["labels"] == stream["spec"]["selector"]["matchLabels"]
    assert set(claim) == {"metadata", "spec"}


@pytest.mark.parametrize(
    ("storage_class", "rendered"),
    [("", None), ("-", ""), ("fast", "fast")],
    ids=["default-class", "no-class", "named"],
)
def test_storage_class_default_none_or_named(
    storage_class: str, rendered: str | None
) -> None:
    """Empty leaves storageClassName out, "-" renders it empty, a name is kept."""
    values = {"stream": {"journal": {"storageClassName": storage_class}}}
    (stream,) = [m for m in render(values) if m["kind"] == "StatefulSet"]
    (claim,) = stream["spec"]["volumeClaimTemplates"]
    assert claim["spec"].get("storageClassName", None) == rendered
    _validate_core(stream, KUBE_VERSIONS[0])


def test_emptydir_journal_is_a_size_limited_pod_volume() -> None:
    """An emptyDir journal: a pod volume limited to the size, no claim, same mount."""
    scenario = "journal-emptydir"
    stream = _stream(scenario)
    assert "volumeClaimTemplates" not in stream["spec"]
    volume = _pod_volume(stream, "journal")
    assert volume == {"name": "journal", "emptyDir": {"sizeLimit": "1Gi"}}
    assert _journal_mount(stream) == {"name": "journal", "mountPath": JOURNAL_DIR}
    env = _journal_env(_env_of(scenario, stream))
    assert env["BRIDGE_JOURNAL_DIR"] == JOURNAL_DIR
    assert env["BRIDGE_JOURNAL_MAX_BYTES"] == "536870912"
    assert env["BRIDGE_JOURNAL_FLUSH_INTERVAL_MS"] == "250"


def test_disabled_journal_has_no_volume_and_says_so() -> None:
    """journal.enabled=false: BRIDGE_JOURNAL_ENABLED=false; no claim, volume, mount."""
    scenario = "journal-off"
    stream = _stream(scenario)
    assert "volumeClaimTemplates" not in stream["spec"]
    assert _pod_volume(stream, "journal") is None
    assert _journal_mount(stream) is None
    assert _journal_env(_env_of(scenario, stream)) == {
        "BRIDGE_JOURNAL_ENABLED": "false"
    }


@pytest.mark.parametrize(
    "scenario", ["all-components", "journal-emptydir", "journal-off"]
)
def test_the_bridge_reads_the_journal_settings_the_chart_gives(
    scenario: str, tmp_path: Path
) -> None:
    """bridge.config turns the stream's BRIDGE_JOURNAL_* into the values' settings."""
    stream = _stream(scenario)
    env = _with_credential_files(scenario, stream, _env_of(scenario, stream), tmp_path)
    journal = load_settings(env, require=REQUIREMENTS["stream"]).journal
    values = {
        "enabled": True,
        "maxBytes": 1073741824,
        "durability": "interval",
        "flushIntervalMs": 100,
        "whenFull": "block",
        **_values(scenario)["stream"]["journal"],
    }
    assert journal.enabled is values["enabled"]
    if values["enabled"]:
        mount = _journal_mount(stream)
        assert mount is not None
        assert journal.dir == mount["mountPath"]
        assert journal.max_bytes == values["maxBytes"]
        assert journal.durability == values["durability"]
        assert journal.flush_interval_ms == values["flushIntervalMs"]
        assert journal.when_full == values["whenFull"]


def test_workload_names_fit_with_the_longest_release_name() -> None:
    """The StatefulSet name leaves room for the pods' controller-revision-hash."""
    name = "a-release-name-long-enough-to-be-cut-by-the-chart-xyz"
    objects = render({}, name=name)
    (stream,) = [m for m in objects if m["kind"] == "StatefulSet"]
    # The label is "<name>-<10-character hash>", at most 63 characters.
    assert len(stream["metadata"]["name"]) <= 52
    for manifest in objects:
        assert len(manifest["metadata"]["name"]) <= 63, manifest["metadata"]["name"]


def test_notes_say_what_the_journal_survives() -> None:
    """NOTES.txt names the journal's volume and what it does not protect against."""
    notes = {
        scenario: _rendered(scenario)["sendstack-bridge/templates/NOTES.txt"]
        for scenario in ("defaults", "journal-emptydir", "journal-off")
    }
    assert "PersistentVolumeClaim of 2Gi" in notes["defaults"]
    assert "only if the storage is\nnetwork-attached" in notes["defaults"]
    assert "NOT the pod's\ndeletion or eviction" in notes["journal-emptydir"]
    assert "Stream journal: OFF" in notes["journal-off"]


# --------------------------------------------------------------------------
# The stream's hot standby

# The release's full name (the chart's "sendstack-bridge.fullname").
FULLNAME = f"{RELEASE}-sendstack-bridge"
# stream.ha's defaults, as the variables the chart gives the stream.
HA_DEFAULTS = {
    "BRIDGE_HA_ENABLED": "true",
    "BRIDGE_HA_ACCOUNT": "default",
    "BRIDGE_HA_COORDINATION_TOPIC": f"{NAMESPACE}.{FULLNAME}-coordination",
    "BRIDGE_HA_GROUP_ID": f"{NAMESPACE}.{FULLNAME}-stream",
    "BRIDGE_HA_SESSION_TIMEOUT_MS": "6000",
    "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "1500",
    "BRIDGE_HA_BUFFER_SECONDS": "60",
    "BRIDGE_HA_BUFFER_BYTES": "67108864",
    "BRIDGE_HA_PROGRESS_INTERVAL_MS": "200",
    "BRIDGE_HA_CATCH_UP_SECONDS": "5",
}


def _ha_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("BRIDGE_HA_")}


def _anti_affinity(workload: Manifest) -> dict[str, Any] | None:
    affinity = workload["spec"]["template"]["spec"].get("affinity", {})
    anti: dict[str, Any] | None = affinity.get("podAntiAffinity")
    return anti


def test_default_stream_is_two_replicas_started_in_parallel() -> None:
    """By default: 2 stream replicas, Parallel pod management, one pod at a time."""
    stream = _stream("defaults")
    assert stream["spec"]["replicas"] == 2
    assert stream["spec"]["podManagementPolicy"] == "Parallel"
    assert stream["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    assert stream["spec"]["minReadySeconds"] == 10


def test_default_stream_replicas_prefer_different_nodes() -> None:
    """The stream's pods repel each other by hostname (preferred), not by spread."""
    stream = _stream("defaults")
    (term,) = _anti_affinity(stream)["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": stream["spec"]["selector"]["matchLabels"]},
    }
    assert "topologySpreadConstraints" not in stream["spec"]["template"]["spec"]


def test_required_anti_affinity_keeps_replicas_apart() -> None:
    """antiAffinity.type required: a hard rule (all-components runs 3 replicas)."""
    stream = _stream("all-components")
    assert stream["spec"]["replicas"] == 3
    (term,) = _anti_affinity(stream)["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["labelSelector"]["matchLabels"]
        == stream["spec"]["selector"]["matchLabels"]
    )


def test_own_pod_anti_affinity_replaces_the_chart_s() -> None:
    """A podAntiAffinity under `affinity` wins; the chart keeps a nodeAffinity too."""
    own = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "topologyKey": "topology.kubernetes.io/zone",
                "labelSelector": {"matchLabels": {"app": "x"}},
            }
        ]
    }
    node = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "pool", "operator": "In", "values": ["a"]}
                    ]
                }
            ]
        }
    }
    values = {"affinity": {"podAntiAffinity": own, "nodeAffinity": node}}
    (stream,) = [m for m in render(values) if m["kind"] == "StatefulSet"]
    affinity = stream["spec"]["template"]["spec"]["affinity"]
    assert affinity == {"podAntiAffinity": own, "nodeAffinity": node}
    values = {"affinity": {"nodeAffinity": node}}
    (stream,) = [m for m in render(values) if m["kind"] == "StatefulSet"]
    affinity = stream["spec"]["template"]["spec"]["affinity"]
    assert affinity["nodeAffinity"] == node
    assert (
        "preferredDuringSchedulingIgnoredDuringExecution" in affinity["podAntiAffinity"]
    )


def test_default_stream_gets_every_ha_variable_from_the_values() -> None:
    """BRIDGE_HA_ENABLED=true, every other BRIDGE_HA_* from stream.ha (per release)."""
    env = _env_of("defaults", _stream("defaults"))
    assert _ha_env(env) == HA_DEFAULTS
    assert env["BRIDGE_STREAM_SINGLE_SESSION"] == "false"


def test_named_ha_settings_reach_the_bridge(tmp_path: Path) -> None:
    """bridge.config reads the all-components scenario's stream.ha as given."""
    scenario = "all-components"
    stream = _stream(scenario)
    env = _with_credential_files(scenario, stream, _env_of(scenario, stream), tmp_path)
    ha = load_settings(env, require=REQUIREMENTS["stream"]).ha
    values = _values(scenario)["stream"]["ha"]
    assert ha.enabled is True
    assert ha.account == values["account"]
    assert ha.coordination_topic == values["coordinationTopic"]
    assert ha.group_id == values["groupId"]
    assert ha.session_timeout_ms == values["sessionTimeoutMs"]
    assert ha.heartbeat_interval_ms == values["heartbeatIntervalMs"]
    assert ha.buffer_seconds == values["bufferSeconds"]
    assert ha.buffer_bytes == values["bufferBytes"]
    assert ha.progress_interval_ms == values["progressIntervalMs"]
    assert ha.catch_up_seconds == values["catchUpSeconds"]
    assert ha.transactional_id == values["transactionalId"]
    assert ha.transaction_ms == values["transactionMs"]


def test_releases_and_namespaces_never_share_a_group_or_topic() -> None:
    """The default group and topic differ between two releases, or two namespaces."""
    seen = set()
    for name, namespace in [("a", "x"), ("b", "x"), ("a", "y")]:
        with helm.Chart.load(CHART) as chart:
            rendered = chart.render({}, name=name, namespace=namespace)
        (configmap,) = [
            m
            for m in _documents(rendered)
            if m["kind"] == "ConfigMap" and component_of(m) == "stream"
        ]
        data = configmap["data"]
        seen.add(data["BRIDGE_HA_GROUP_ID"])
        seen.add(data["BRIDGE_HA_COORDINATION_TOPIC"])
    assert len(seen) == 6


def test_single_replica_without_ha_renders_without_the_standby() -> None:
    """replicas 1, HA off: only BRIDGE_HA_ENABLED=false, no anti-affinity, no budget."""
    stream = _stream("single-replica")
    assert stream["spec"]["replicas"] == 1
    env = _env_of("single-replica", stream)
    assert _ha_env(env) == {"BRIDGE_HA_ENABLED": "false"}
    assert _anti_affinity(stream) is None
    assert of_kind("single-replica", "PodDisruptionBudget") == []


def test_notes_say_whether_a_standby_covers_rollouts() -> None:
    """NOTES.txt names the group and topic, and says when a rollout leaves a gap."""
    notes = {
        scenario: _rendered(scenario)["sendstack-bridge/templates/NOTES.txt"]
        for scenario in ("defaults", "single-replica")
    }
    assert "Hot standby: ON (2 replica(s))" in notes["defaults"]
    assert HA_DEFAULTS["BRIDGE_HA_GROUP_ID"] in notes["defaults"]
    assert HA_DEFAULTS["BRIDGE_HA_COORDINATION_TOPIC"] in notes["defaults"]
    assert "rollouts and drains leave no gap" in notes["defaults"]
    assert "Hot standby: OFF (1 replica(s))" in notes["single-replica"]
    assert "frames sent meanwhile are not replayed" in notes["single-replica"]


# --------------------------------------------------------------------------
# Several Sendstack accounts (stream.accounts)

ACCOUNTS_DIR = "/etc/sendstack-bridge/accounts"
ACCOUNTS_CONFIGMAP = f"{FULLNAME}-stream-accounts"
TWO_ACCOUNTS: dict[str, Any] = {
    "config": {"BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9092"},
    "credentials": {"existingSecret": "sendstack-primary"},
    "webhooks": {"enabled": True},
    "commands": {"enabled": True},
    "stream": {
        "ha": {"account": "logistics-eu"},
        "accounts": [
            {
                "name": "partner.acme",
                "existingSecret": "sendstack-partners",
                "appIdKey": "acme-id",
                "appSecretKey": "acme-secret",
                "topics": {"positions": "acme.positions", "deadLetter": "acme.dlq"},
            },
            {"name": "logistics-uk", "existingSecret": "sendstack-uk"},
        ],
    },
}


def _with_stream(values: dict[str, Any], **stream: Any) -> dict[str, Any]:
    """*values* with the keys of *stream* replacing those of ``values["stream"]``."""
    return {**values, "stream": {**values.get("stream", {}), **stream}}


def _stream_of(objects: list[Manifest]) -> tuple[Manifest, dict[str, str]]:
    """The stream's StatefulSet among *objects*, and its environment."""
    (stream,) = [m for m in objects if m["kind"] == "StatefulSet"]
    configmaps = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ConfigMap"}
    return stream, _container_env(stream, configmaps)


def _suffix(names: str) -> str:
    return "-" + hashlib.sha256(names.encode()).hexdigest()[:8]


def test_accounts_are_a_projected_volume_where_the_variable_points() -> None:
    """Two accounts: the variable, a read-only projected volume of their Secrets' keys
    and the ConfigMap's topics, a checksum, nothing on the other workloads."""
    objects = render(TWO_ACCOUNTS)
    stream, env = _stream_of(objects)
    assert env["BRIDGE_STREAM_ACCOUNTS_DIR"] == ACCOUNTS_DIR
    pod = stream["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "accounts"]
    assert mount == {"name": "accounts", "mountPath": ACCOUNTS_DIR, "readOnly": True}
    volume = _pod_volume(stream, "accounts")
    assert volume is not None
    assert volume["projected"]["defaultMode"] == 0o440
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "sendstack-partners",
                "items": [
                    {"key": "acme-id", "path": "partner.acme/app_id"},
                    {"key": "acme-secret", "path": "partner.acme/app_secret"},
                ],
            }
        },
        {
            "secret": {
                "name": "sendstack-uk",
                "items": [
                    {"key": "app_id", "path": "logistics-uk/app_id"},
                    {"key": "app_secret", "path": "logistics-uk/app_secret"},
                ],
            }
        },
        {
            "configMap": {
                "name": ACCOUNTS_CONFIGMAP,
                "items": [
                    {
                        "key": "partner.acme.topic_dead_letter",
                        "path": "partner.acme/topic_dead_letter",
                    },
                    {
                        "key": "partner.acme.topic_positions",
                        "path": "partner.acme/topic_positions",
                    },
                ],
            }
        },
    ]
    (configmap,) = [m for m in objects if m["metadata"]["name"] == ACCOUNTS_CONFIGMAP]
    assert configmap["data"] == {
        "partner.acme.topic_dead_letter": "acme.dlq",
        "partner.acme.topic_positions": "acme.positions",
    }
    assert component_of(configmap) == "stream"
    assert "checksum/accounts" in stream["spec"]["template"]["metadata"]["annotations"]
    for version in KUBE_VERSIONS:
        _validate_core(stream, version)
        _validate_core(configmap, version)
    others = [m for m in objects if m["kind"] == "Deployment"]
    assert sorted(component_of(d) for d in others) == ["commands", "webhooks"]
    for deployment in others:
        assert "accounts" not in str(deployment["spec"]["template"]["spec"]["volumes"])
        assert "BRIDGE_STREAM_ACCOUNTS_DIR" not in str(deployment)


def test_accounts_without_topics_need_no_configmap() -> None:
    """Accounts on the shared topics: Secret sources only, no accounts ConfigMap."""
    values = _with_stream(
        TWO_ACCOUNTS, accounts=[{"name": "uk", "existingSecret": "sendstack-uk"}]
    )
    objects = render(values)
    stream, _ = _stream_of(objects)
    volume = _pod_volume(stream, "accounts")
    assert volume is not None
    assert [list(s) for s in volume["projected"]["sources"]] == [["secret"]]
    assert ACCOUNTS_CONFIGMAP not in str(objects)


def test_helm_lint_strict_is_clean_with_accounts() -> None:
    """``helm lint --strict`` reports no error and no warning with two accounts."""
    report = helm.lint(
        CHART,
        TWO_ACCOUNTS,
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSIONS[-1]}.0",
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _mount_as_kubernetes(
    objects: list[Manifest], stream: Manifest, env: dict[str, str], root: Path
) -> dict[str, str]:
    """*env* with the stream's credential and accounts volumes written under *root*
    (an existing Secret's key holds ``<secret>/<key>``), paths pointed there."""
    configmaps = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ConfigMap"}
    mounts = {m["name"]: m["mountPath"] for m in container_of(stream)["volumeMounts"]}
    replaced: dict[str, str] = {}
    for name in ("credentials", "accounts"):
        volume = _pod_volume(stream, name)
        assert volume is not None
        if "secret" in volume:
            sources = [{"secret": {**volume["secret"], "name": "primary"}}]
        else:
            sources = volume["projected"]["sources"]
        for source in sources:
            ((kind, spec),) = source.items()
            for item in spec["items"]:
                if kind == "configMap":
                    content = configmaps[spec["name"]]["data"][item["key"]]
                else:
                    content = f"{spec['name']}/{item['key']}\n"
                path = root / name / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        replaced[mounts[name]] = str(root / name)
    return {
        variable: next(
            (
                local + value.removeprefix(mount)
                for mount, local in replaced.items()
                if value == mount or value.startswith(mount + "/")
            ),
            value,
        )
        for variable, value in env.items()
    }


def container_of(workload: Manifest) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def test_the_stream_reads_the_accounts_as_mounted(tmp_path: Path) -> None:
    """bridge.config and the stream's account reader accept the mounted volume: the
    primary first, then the names sorted, with their Secrets' keys and topics."""
    objects = render(TWO_ACCOUNTS)
    stream, env = _stream_of(objects)
    env = _mount_as_kubernetes(objects, stream, env, tmp_path)
    settings = load_settings(env, require=REQUIREMENTS["stream"])
    accounts = accounts_of(settings)
    assert [a.name for a in accounts] == [
        "logistics-eu",
        "logistics-uk",
        "partner.acme",
    ]
    assert [a.app_id for a in accounts[1:]] == [
        "sendstack-uk/app_id",
        "sendstack-partners/acme-id",
    ]
    assert accounts[2].app_secret.reveal() == "sendstack-partners/acme-secret"
    shared, uk, acme = (a.topics for a in accounts)
    assert uk == shared
    assert acme.positions == "acme.positions"
    assert acme.dead_letter == "acme.dlq"
    assert (acme.events, acme.device_status) == (shared.events, shared.device_status)


def test_accounts_suffix_the_default_group_and_topic() -> None:
    """With accounts, the default group and topic end in the hash of the ordered names;
    named ones are kept as given."""
    _, env = _stream_of(render(TWO_ACCOUNTS))
    suffix = _suffix("logistics-eu,logistics-uk,partner.acme")
    assert env["BRIDGE_HA_ACCOUNT"] == "logistics-eu"
    assert env["BRIDGE_HA_GROUP_ID"] == f"{NAMESPACE}.{FULLNAME}-stream{suffix}"
    assert env["BRIDGE_HA_COORDINATION_TOPIC"] == (
        f"{NAMESPACE}.{FULLNAME}-coordination{suffix}"
    )
    ha = {"account": "logistics-eu", "coordinationTopic": "t.coord", "groupId": "g"}
    _, env = _stream_of(render(_with_stream(TWO_ACCOUNTS, ha=ha)))
    assert env["BRIDGE_HA_COORDINATION_TOPIC"] == "t.coord"
    assert env["BRIDGE_HA_GROUP_ID"] == "g"


def _ha_names(values: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """The group, the topic and the pod template's annotations *values* render."""
    stream, env = _stream_of(render(values))
    return (
        env["BRIDGE_HA_GROUP_ID"],
        env["BRIDGE_HA_COORDINATION_TOPIC"],
        stream["spec"]["template"]["metadata"]["annotations"],
    )


@pytest.mark.parametrize(
    ("change", "moves"),
    [
        ({"accounts": TWO_ACCOUNTS["stream"]["accounts"][:1]}, True),
        (
            {
                "accounts": [
                    *TWO_ACCOUNTS["stream"]["accounts"],
                    {"name": "logistics-fr", "existingSecret": "sendstack-fr"},
                ]
            },
            True,
        ),
        (
            {
                "accounts": [
                    TWO_ACCOUNTS["stream"]["accounts"][0],
                    {"name": "logistics-gb", "existingSecret": "sendstack-uk"},
                ]
            },
            True,
        ),
        ({"ha": {"account": "logistics-de"}}, True),  # the primary's name
        ({"accounts": TWO_ACCOUNTS["stream"]["accounts"][::-1]}, False),
        (
            {
                "accounts": [
                    {**TWO_ACCOUNTS["stream"]["accounts"][0], "topics": {}},
                    TWO_ACCOUNTS["stream"]["accounts"][1],
                ]
            },
            False,
        ),
    ],
    ids=["removed", "added", "renamed", "primary-renamed", "reordered", "topics"],
)
def test_changing_the_account_list_moves_group_and_topic(
    change: dict[str, Any], moves: bool
) -> None:
    """Another set of names (or primary) gets another group and topic; the list's order
    or topics alone keep them, and every change rolls the pods."""
    group, topic, annotations = _ha_names(TWO_ACCOUNTS)
    new_group, new_topic, new_annotations = _ha_names(
        _with_stream(TWO_ACCOUNTS, **change)
    )
    assert (new_group != group, new_topic != topic) == (moves, moves)
    assert new_annotations != annotations


@pytest.mark.parametrize(
    ("accounts", "complaint"),
    [
        (
            [
                {"name": "acme", "existingSecret": "a"},
                {"name": "acme", "existingSecret": "b"},
            ],
            'stream.accounts: "acme" is listed twice (entries 0 and 1)',
        ),
        (
            [{"name": "default", "existingSecret": "a"}],
            'stream.accounts[0].name "default" is stream.ha.account',
        ),
    ],
    ids=["duplicate", "the-primary"],
)
def test_render_refuses_accounts_that_clash(
    accounts: list[dict[str, Any]], complaint: str
) -> None:
    """A name listed twice or the primary's name: a render error that says so."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as error:
        chart.render(
            {"stream": {"accounts": accounts}}, name=RELEASE, namespace=NAMESPACE
        )
    assert complaint in str(error.value)


@pytest.mark.parametrize(
    ("account", "complaint"),
    [
        ({"name": "acme corp", "existingSecret": "a"}, "/stream/accounts/0/name"),
        ({"name": "", "existingSecret": "a"}, "/stream/accounts/0/name"),
        ({"name": "..data", "existingSecret": "a"}, "/stream/accounts/0/name"),
        ({"name": "a" * 65, "existingSecret": "a"}, "/stream/accounts/0/name"),
        ({"name": "acme"}, "missing property 'existingSecret'"),
        (
            {"name": "acme", "existingSecret": "A_B"},
            "/stream/accounts/0/existingSecret",
        ),
        (
            {"name": "acme", "existingSecret": "a", "topics": {"positions": "a b"}},
            "/stream/accounts/0/topics/positions",
        ),
        (
            {"name": "acme", "existingSecret": "a", "topics": {"position": "p"}},
            "'position' not allowed",
        ),
        (
            {"name": "acme", "existingSecret": "a", "appId": "x"},
            "'appId' not allowed",
        ),
    ],
    ids=[
        "space",
        "empty",
        "dot",
        "too-long",
        "no-secret",
        "secret-name",
        "topic",
        "topic-kind",
        "unknown-key",
    ],
)
def test_schema_refuses_bad_accounts(account: dict[str, Any], complaint: str) -> None:
    """A name the bridge would refuse or skip, a bad Secret, topic or key: refused."""
    values = {"stream": {"accounts": [account]}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert complaint in str(error.value)


def test_accounts_without_ha_still_name_the_primary() -> None:
    """With HA off, accounts still set BRIDGE_HA_ACCOUNT, the primary's name."""
    ha = {"enabled": False, "account": "logistics-eu"}
    values = _with_stream(TWO_ACCOUNTS, replicas=1, ha=ha)
    _, env = _stream_of(render(values))
    assert _ha_env(env) == {
        "BRIDGE_HA_ENABLED": "false",
        "BRIDGE_HA_ACCOUNT": "logistics-eu",
    }
    assert env["BRIDGE_STREAM_ACCOUNTS_DIR"] == ACCOUNTS_DIR


def test_no_accounts_changes_nothing() -> None:
    """An empty stream.accounts renders exactly the defaults: no variable, volume,
    ConfigMap, checksum or suffix."""
    with helm.Chart.load(CHART) as chart:
        empty = chart.render(
            {"stream": {"accounts": []}}, name=RELEASE, namespace=NAMESPACE
        )
    assert empty == _rendered("defaults")
    stream = _stream("defaults")
    assert "BRIDGE_STREAM_ACCOUNTS_DIR" not in _env_of("defaults", stream)
    assert _pod_volume(stream, "accounts") is None
    assert (
        "checksum/accounts" not in stream["spec"]["template"]["metadata"]["annotations"]
    )
    assert ACCOUNTS_CONFIGMAP not in by_name("defaults", "ConfigMap")
    assert _ha_env(_env_of("defaults", stream)) == HA_DEFAULTS


def test_notes_list_the_accounts_in_partition_order() -> None:
    """NOTES.txt lists the accounts, primary first, and the suffixed group."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(TWO_ACCOUNTS, name=RELEASE, namespace=NAMESPACE)
    notes = rendered["sendstack-bridge/templates/NOTES.txt"]
    assert "logistics-eu, logistics-uk, partner.acme" in notes
    assert _suffix("logistics-eu,logistics-uk,partner.acme") in notes
