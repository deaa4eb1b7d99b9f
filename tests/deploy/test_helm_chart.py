"""The Helm chart: lint, render, validate every manifest, and feed the bridge's config.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

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
}
COMPONENTS = ("stream", "webhooks", "commands")

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


def manifests(scenario: str) -> list[Manifest]:
    """Every object the chart renders for *scenario* (NOTES.txt left out)."""
    return [
        doc
        for name, text in _rendered(scenario).items()
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


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
    """Each scenario renders one Deployment per enabled component and its companions."""
    values = _values(scenario)
    enabled = [c for c in COMPONENTS if values.get(c, {}).get("enabled", c == "stream")]
    deployments = of_kind(scenario, "Deployment")
    assert sorted(component_of(d) for d in deployments) == sorted(enabled)
    mapping = bool(values.get("stream", {}).get("mapping"))
    assert len(of_kind(scenario, "ConfigMap")) == len(enabled) + mapping
    services = of_kind(scenario, "Service")
    assert len(services) == len(enabled) + ("webhooks" in enabled)
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


def _env_of(scenario: str, deployment: Manifest) -> dict[str, str]:
    """The environment the Deployment's container gets: ConfigMaps, then env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    configmaps = by_name(scenario, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        assert set(item) == {"name", "value"}, "plain values only"
        env[item["name"]] = item["value"]
    return env


def _deployments(scenario: str) -> Iterator[tuple[str, Manifest]]:
    for deployment in of_kind(scenario, "Deployment"):
        yield component_of(deployment), deployment


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_variable_the_chart_sets_is_known(scenario: str) -> None:
    """Every env var and ConfigMap key is a BRIDGE_* name bridge.config knows."""
    for configmap in of_kind(scenario, "ConfigMap"):
        if configmap["metadata"]["name"].endswith("-stream-mapping"):
            continue  # a file, mounted; not variables
        unknown = set(configmap["data"]) - KNOWN_VARIABLES
        assert not unknown, f"{configmap['metadata']['name']}: {sorted(unknown)}"
    for component, deployment in _deployments(scenario):
        unknown = set(_env_of(scenario, deployment)) - KNOWN_VARIABLES
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


@pytest.mark.parametrize("scenario", ["chart-secret", "all-components"])
def test_each_component_s_configuration_loads(scenario: str, tmp_path: Path) -> None:
    """The bridge's own loader accepts what each Deployment is given."""
    for component, deployment in _deployments(scenario):
        env = _with_credential_files(
            scenario, deployment, _env_of(scenario, deployment), tmp_path
        )
        settings = load_settings(env, require=REQUIREMENTS[component])
        assert settings.ops.port == deployment_ops_port(deployment)


def test_default_values_lack_only_what_notes_warns_about(tmp_path: Path) -> None:
    """With bare defaults, the bridge reports just the bootstrap and the credentials."""
    ((component, deployment),) = list(_deployments("defaults"))
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
        ({"stream": {"replicas": 2}}, "/stream/replicas"),
    ],
)
def test_schema_refuses_unknown_secret_owned_or_unquoted_values(
    values: dict[str, Any], complaint: str
) -> None:
    """Typos, credentials in config, chart-owned names, numbers, 2 streams: refused."""
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
            {"stream": {"config": {"BRIDGE_STREAM_SINGLE_SESSION": "true"}}},
            "set stream.strategy.type=Recreate",
        ),
    ],
)
def test_render_refuses_settings_that_would_lose_data(
    values: dict[str, Any], complaint: str
) -> None:
    """A grace period the kubelet cuts short, or two pods fighting for one session."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as error:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(error.value)


def test_single_session_renders_with_recreate() -> None:
    """With BRIDGE_STREAM_SINGLE_SESSION the stream rolls out by Recreate."""
    values = {
        "stream": {
            "strategy": {"type": "Recreate"},
            "config": {"BRIDGE_STREAM_SINGLE_SESSION": "true"},
        }
    }
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all(
            rendered["sendstack-bridge/templates/deployment.yaml"]
        )
        if doc
    ]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    _validate_core(deployment, KUBE_VERSIONS[-1])


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
    for component, deployment in _deployments(scenario):
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
    for component, deployment in _deployments(scenario):
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


def test_stream_runs_one_replica_and_rolls_make_before_break() -> None:
    """One stream pod; a rollout starts the new pod before stopping the old."""
    for scenario in SCENARIOS:
        (stream,) = [d for c, d in _deployments(scenario) if c == "stream"]
        assert stream["spec"]["replicas"] == 1
        assert stream["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }


def test_grace_period_outlasts_the_bridge_s_shutdown() -> None:
    """terminationGracePeriodSeconds exceeds BRIDGE_SHUTDOWN_GRACE_SECONDS."""
    for scenario in SCENARIOS:
        for component, deployment in _deployments(scenario):
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
        for component, d in _deployments(scenario)
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
    assert sorted(component_of(b) for b in budgets) == ["commands", "webhooks"]
    for budget in budgets:
        assert selects(
            budget["spec"]["selector"]["matchLabels"], pods[component_of(budget)]
        )


def test_existing_secret_is_mounted_with_its_own_keys() -> None:
    """With existingSecret, no Secret is made and its named keys are mounted."""
    values = _values("all-components")["credentials"]
    for _, deployment in _deployments("all-components"):
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
    ((_, deployment),) = [
        (c, d) for c, d in _deployments("all-components") if c == "stream"
    ]
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
    others = [d for c, d in _deployments("all-components") if c != "stream"]
    assert all(
        "mapping" not in str(d["spec"]["template"]["spec"]["volumes"]) for d in others
    )
