"""The deployment artefacts, checked offline: kustomize renders every overlay, every rendered object
validates against its Kubernetes or CRD schema (strictly: unknown fields fail), the manifests say
what the service needs, the Grafana dashboard queries metrics the service exports, the Dockerfile
passes hadolint and the deploy scripts pass shellcheck.

No cluster is involved. The validators (kubectl, kubernetes-validate, jsonschema, hadolint,
shellcheck) are part of the project's test install: a missing one fails here, it is never skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vitserve.service.settings import PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
SCHEMAS = REPO / "deploy" / "schemas"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
# The oldest Kubernetes the manifests target (the preStop sleep action is on by default from 1.30)
# and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kv.latest_version())
CRD_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
}
KSERVE = sorted((K8S / "kserve").glob("*.yaml"))
AUTOSCALER_KINDS = ("ScaledObject", "HorizontalPodAutoscaler")
# Time for an endpoint removal to reach kube-proxies and ingresses, and for BentoML to stop after
# SIGTERM (2.7-2.8 s draining 32 clients' requests, docs/reliability.md; 1 s idle in the container
# smoke test, docs/deploy.md), with margin.
ENDPOINT_PROPAGATION_S = 10
SHUTDOWN_S = 20
# BentoML's own series on /metrics, by base name (service/observe/metrics.py holds vitserve's).
BENTOML_METRICS = {"bentoml_service_request", "bentoml_service_request_duration_seconds"}


def tool(name: str) -> str:
    """A validator installed with the project's test extra, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: install the project's test extra (pip install -e '.[test]')")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlay(name: str) -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays" / name)


def render_base_with(component: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The base with one autoscaling component, so that components no overlay uses are checked too."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "vitserve",
                # kustomize refuses absolute paths; relative ones may leave the folder.
                "resources": [os.path.relpath(K8S / "base", tmp_path)],
                "components": [os.path.relpath(K8S / "components" / component, tmp_path)],
            }
        )
    )
    return kustomize(tmp_path)


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected, as the API server's strict field validation does.

    A CRD schema allows extra properties unless it says otherwise; the API server prunes them
    silently, so a misspelt field would vanish without a trace. Objects that declare their own
    additionalProperties, or x-kubernetes-preserve-unknown-fields, keep their meaning.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    documents = yaml.safe_load_all((SCHEMAS / CRD_FILES[(api_version, kind)]).read_text())
    crd = next(doc for doc in documents if doc)
    version = api_version.split("/")[1]
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in served, f"{crd['metadata']['name']} serves {sorted(served)}, not {version}"
    schema: dict[str, Any] = served[version]["schema"]["openAPIV3Schema"]
    return schema


def validate(obj: dict[str, Any], kubernetes_version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_FILES:
        jsonschema.validate(obj, strict(crd_schema(*key)), cls=jsonschema.Draft7Validator)
        return
    try:
        kv.validate(obj, kubernetes_version, strict=True)
    except kv.SchemaNotFoundError as exc:
        # kubernetes-validate only warns for kinds it has no schema for; here that is a failure.
        name = f"{obj['kind']} {obj['apiVersion']}"
        pytest.fail(f"no schema for {name}: vendor its CRD into deploy/schemas ({exc})")
    except kv.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid at {path}: {exc.message}")


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads, histogram suffixes stripped."""
    names = set(re.findall(r"\b((?:vitserve|bentoml)_[a-z_]+)", promql))
    return {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in names}


def exported_vitserve_metrics() -> set[str]:
    source = (REPO / "service" / "observe" / "metrics.py").read_text()
    return set(re.findall(r'"(vitserve_[a-z_]+)"', source))


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_overlay_renders_and_validates(overlay: str, kubernetes_version: str) -> None:
    objects = render_overlay(overlay)
    assert {obj["kind"] for obj in objects} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
    }
    for obj in objects:
        validate(obj, kubernetes_version)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_autoscaling_component_validates_on_the_base(component: str, tmp_path: Path) -> None:
    objects = render_base_with(component, tmp_path)
    autoscalers = [obj for obj in objects if obj["kind"] in AUTOSCALER_KINDS]
    assert len(autoscalers) == 1
    for obj in objects:
        validate(obj, kv.latest_version())


def test_a_misspelt_field_fails_validation() -> None:
    """The validators are strict: a typo must not pass as an unknown-but-allowed field."""
    objects = render_overlay("gpu")
    deployment = only(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(pytest.fail.Exception):
        validate(deployment, kv.latest_version())
    scaled = only(objects, "ScaledObject")
    scaled["spec"]["minReplicas"] = 2  # an HPA field, not a ScaledObject one
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, kv.latest_version())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_autoscaler_targets_the_deployment(overlay: str) -> None:
    objects = render_overlay(overlay)
    autoscalers = [obj for obj in objects if obj["kind"] in AUTOSCALER_KINDS]
    assert len(autoscalers) == 1, "two autoscalers on one Deployment fight over its replica count"
    target = autoscalers[0]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", only(objects, "Deployment")["metadata"]["name"])
    floor = autoscalers[0]["spec"].get("minReplicaCount", autoscalers[0]["spec"].get("minReplicas"))
    pdb = only(objects, "PodDisruptionBudget")["spec"]
    assert floor >= 2 and pdb["maxUnavailable"] < floor, "a drain must never take every replica"


def test_keda_scales_on_a_metric_the_service_exports() -> None:
    objects = render_overlay("gpu")
    scaled = only(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    names = metric_names(query)
    assert names and names <= exported_vitserve_metrics()
    # kustomize cannot rewrite a PromQL string: a namespace change must be made in the query too.
    assert f'namespace="{scaled["metadata"]["namespace"]}"' in query
    assert f'service="{only(objects, "Service")["metadata"]["name"]}"' in query


def assert_restricted(pod: dict[str, Any], c: dict[str, Any]) -> None:
    """The pod and container settings of the "restricted" Pod Security Standard, plus a read-only root."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_locked_down(overlay: str) -> None:
    objects = render_overlay(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert_restricted(pod, c)
    # The read-only root needs exactly one writable path, where the image points HOME/BENTOML_HOME.
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_graceful_shutdown(overlay: str) -> None:
    objects = render_overlay(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "model load + warm-up needs time"
    settings = configured_settings(objects)
    # The preStop sleep keeps the pod serving while its endpoint removal propagates, and for the
    # longest an admitted image may wait (the batching deadline); SIGTERM then drains what is left
    # (service/bento/shutdown.py) within the grace period.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= ENDPOINT_PROPAGATION_S + settings.max_latency_ms / 1000
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + SHUTDOWN_S, "SIGKILL would cut the shutdown"
    assert {s["topologyKey"] for s in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def configured_settings(objects: list[dict[str, Any]]) -> Settings:
    """The ConfigMap the pod reads, parsed by the service's own settings (rejects unknown values)."""
    data = only(objects, "ConfigMap")["data"]
    assert all(key.startswith(PREFIX) for key in data)
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    assert set(data) <= known, f"unknown settings: {sorted(set(data) - known)}"
    return Settings.from_env({**data, PREFIX + "MODEL_DIR": str(REPO)})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_valid_service_settings(overlay: str) -> None:
    objects = render_overlay(overlay)
    settings = configured_settings(objects)
    port = container(objects)["ports"][0]["containerPort"]
    assert settings.host == "0.0.0.0" and settings.port == port
    config_name = only(objects, "ConfigMap")["metadata"]["name"]
    assert container(objects)["envFrom"] == [{"configMapRef": {"name": config_name}}]


def test_gpu_overlay_requests_a_gpu_and_the_cpu_overlay_does_not() -> None:
    gpu = render_overlay("gpu")
    limits = container(gpu)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    tolerations = only(gpu, "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert configured_settings(gpu).device == "cuda"

    cpu = render_overlay("cpu")
    resources = container(cpu)["resources"]
    assert "nvidia.com/gpu" not in {**resources["requests"], **resources["limits"]}
    assert configured_settings(cpu).device == "cpu"


@pytest.mark.parametrize(("overlay", "suffix"), [("cpu", "-cpu"), ("gpu", "")])
def test_each_overlay_runs_the_image_built_for_it(overlay: str, suffix: str) -> None:
    """`make image` tags vitserve:<version>-cpu, and vitserve:<version> for the GPU variant
    (deploy/build-image.sh); an overlay that pulled the other variant would run without its provider."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = container(render_overlay(overlay))["image"]
    assert image.rsplit(":", 1)[1] == version + suffix, image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_and_monitor_reach_the_pods(overlay: str) -> None:
    objects = render_overlay(overlay)
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = only(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["endpoints"]} <= port_names
    assert all(endpoint["path"] == "/metrics" for endpoint in monitor["endpoints"])


def test_dashboard_covers_the_service_metrics() -> None:
    panels = list(dashboard_panels())
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for topic in ("request rate", "p50", "p99", "batch size", "queue wait", "rejected", "label"):
        assert topic in titles, f"no panel about {topic}"
    exported = exported_vitserve_metrics() | BENTOML_METRICS
    for panel in panels:
        for target in panel.get("targets", []):
            used = metric_names(target["expr"])
            assert used <= exported, f"panel {panel['title']!r} queries unknown metrics {used - exported}"


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_the_user_the_manifests_expect() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user, "USER must be numeric so that runAsNonRoot can check it"
    pod = only(render_overlay("gpu"), "Deployment")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user.groups()
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)
    assert re.search(r"^EXPOSE 3000$", dockerfile, re.MULTILINE)
    assert re.search(rf"^EXPOSE {Settings().grpc_port}$", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "deploy").glob("*.sh")))
def test_deploy_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(REPO / "deploy" / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_image_requirements_satisfy_pyproject(variant: str) -> None:
    """The image's hash-pinned lock must still satisfy [project] dependencies and those of the extras
    the image carries (the storage back-ends the scoring Job needs); else re-lock."""
    spec = importlib.util.spec_from_file_location(
        "lock_requirements", REPO / "deploy" / "lock_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    assert "storage" in lock.IMAGE_EXTRAS, "the scoring Job runs `vitserve score s3://...` in this image"
    pins = {}
    for line in (REPO / "deploy" / "requirements" / f"{variant}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split(" ", 1)[0].split("==")
            pins[canonicalize_name(name)] = version
    for line in lock.image_requirements():
        requirement = Requirement(line)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in the image: run make lock"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"the image pins {requirement.name}=={pinned}, pyproject wants {requirement.specifier}: "
            "run make lock"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grpc_port_is_served_and_exposed(overlay: str) -> None:
    objects = render_overlay(overlay)
    settings = configured_settings(objects)
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert settings.grpc_port != 0 and ports["grpc"] == settings.grpc_port
    service_ports = {p["name"]: p for p in only(objects, "Service")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc" and service_ports["grpc"]["appProtocol"] == "grpc"


def kserve_objects() -> list[dict[str, Any]]:
    objects = [yaml.safe_load(path.read_text()) for path in KSERVE]
    assert [obj["kind"] for obj in objects] == ["InferenceService"] * 2, "a CPU and a GPU InferenceService"
    return objects


@pytest.mark.parametrize("path", KSERVE, ids=lambda p: p.name)
def test_kserve_inference_service_validates(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    validate(obj, kv.latest_version())
    misspelt = yaml.safe_load(path.read_text())
    misspelt["spec"]["predictor"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(misspelt, kv.latest_version())


@pytest.mark.parametrize("path", KSERVE, ids=lambda p: p.name)
def test_kserve_predictor_serves_v2_on_both_ports(path: Path) -> None:
    predictor = yaml.safe_load(path.read_text())["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container"
    env = {e["name"]: e["value"] for e in c["env"]}
    settings = Settings.from_env({**env, PREFIX + "MODEL_DIR": str(REPO)})
    # KServe routes REST to the first port and gRPC to the one named h2c.
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("http1", settings.port),
        ("h2c", settings.grpc_port),
    ]
    assert settings.host == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/v2/health/ready", "port": settings.port}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": settings.port}
    assert_restricted(predictor, c)
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert predictor["terminationGracePeriodSeconds"] >= pre_stop + SHUTDOWN_S


def test_kserve_gpu_variant_requests_a_gpu_and_runs_the_gpu_image() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    by_device = {}
    for obj in kserve_objects():
        (c,) = obj["spec"]["predictor"]["containers"]
        by_device[{e["name"]: e["value"] for e in c["env"]}["VITSERVE_DEVICE"]] = (obj, c)
    gpu, gpu_container = by_device["cuda"]
    assert str(gpu_container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert gpu_container["image"].rsplit(":", 1)[1] == version
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["spec"][
        "predictor"
    ]["tolerations"]
    _, cpu_container = by_device["cpu"]
    assert "nvidia.com/gpu" not in {
        **cpu_container["resources"]["requests"],
        **cpu_container["resources"]["limits"],
    }
    assert cpu_container["image"].rsplit(":", 1)[1] == version + "-cpu"
