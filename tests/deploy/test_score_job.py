"""The batch-scoring Indexed Job (deploy/k8s/jobs/score), checked offline like the service's manifests:
it renders and validates strictly, its pods run `vitserve score --shard K/N` with arguments the real
CLI accepts, against the Service the base deploys, and its failure policy follows the CLI's exit codes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate.utils as kv
import pytest

from tests.deploy.test_manifests import (
    K8S,
    KUBERNETES_VERSIONS,
    REPO,
    assert_restricted,
    kustomize,
    only,
    render_overlay,
    validate,
)
from vitserve.cli import build_parser
from vitserve.client import cli as score_cli
from vitserve.client.sharding import Shard

JOB = K8S / "jobs" / "score"


def render() -> list[dict[str, Any]]:
    return kustomize(JOB)


def job_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(objects, "Job")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def readme_overlay() -> str:
    """The kustomization of the README's worked example (16 pods over one bucket)."""
    readme = (REPO / "README.md").read_text()
    match = re.search(r"cat > kustomization.yaml <<'YAML'\n(.*?)\nYAML\n", readme, re.DOTALL)
    assert match, "the README's worked example of scoring a bucket with N pods is gone"
    return match[1]


def environment(objects: list[dict[str, Any]], index: int) -> dict[str, str]:
    """The variables pod `index` sees, as the kubelet resolves them."""
    container = job_container(objects)
    config = only(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
            env |= config["data"]
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            env[variable["name"]] = str(index)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m[1]], text)


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_job_renders_and_validates(kubernetes_version: str) -> None:
    objects = render()
    assert {obj["kind"] for obj in objects} == {"ServiceAccount", "ConfigMap", "Job"}
    for obj in objects:
        assert obj["metadata"]["namespace"] == "vitserve"
        validate(obj, kubernetes_version)


def test_a_misspelt_job_field_fails_validation() -> None:
    job = only(render(), "Job")
    job["spec"]["completionsMode"] = "Indexed"
    with pytest.raises(pytest.fail.Exception):
        validate(job, kv.latest_version())


def test_each_index_scores_its_own_shard_with_arguments_the_cli_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render()
    spec = only(objects, "Job")["spec"]
    assert spec["completionMode"] == "Indexed"
    count = spec["completions"]
    assert spec["parallelism"] == count
    container = job_container(objects)
    assert container["command"] == ["vitserve", "score"]
    shards = []
    for index in range(count):
        env = environment(objects, index)
        argv = [*container["command"][1:], *(expand(arg, env) for arg in container["args"])]
        monkeypatch.setenv("VITSERVE_URL", env["VITSERVE_URL"])  # as envFrom puts it in the pod
        args = build_parser("score").parse_args(argv)
        assert args.func is score_cli.run_score
        shards.append(args.shard)
        assert args.dir == env["SCORE_SOURCE"] and args.out == env["SCORE_RESULTS"]
        assert args.url == env["VITSERVE_URL"]  # the CLI's default comes from $VITSERVE_URL
    # Indexes 0..N-1 with SHARD_COUNT = completions: the shards cover the input exactly once.
    assert shards == [Shard(index, count) for index in range(count)]


def test_the_scorer_talks_to_the_service_the_base_deploys() -> None:
    service = only(render_overlay("cpu"), "Service")
    url = environment(render(), 0)["VITSERVE_URL"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    (port,) = (p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert url == f"http://{name}.{namespace}.svc:{port}"


def test_failure_policy_follows_the_cli_exit_codes() -> None:
    spec = only(render(), "Job")["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["podReplacementPolicy"] == "Failed"  # never two pods writing one shard
    assert spec["backoffLimitPerIndex"] >= 1
    actions = {
        rule["action"]: rule["onExitCodes"]["values"]
        for rule in spec["podFailurePolicy"]["rules"]
        if "onExitCodes" in rule
    }
    assert actions == {"FailJob": [score_cli.EXIT_USAGE], "FailIndex": [score_cli.EXIT_FILES_FAILED]}
    retried = {score_cli.EXIT_ABORTED, score_cli.EXIT_INTERRUPTED, score_cli.EXIT_TERMINATED}
    assert not retried & {code for codes in actions.values() for code in codes}, (
        "a resumable stop must be retried"
    )
    disruption = [rule for rule in spec["podFailurePolicy"]["rules"] if "onPodConditions" in rule]
    assert disruption == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]


def test_pod_is_locked_down_and_takes_credentials_from_the_platform() -> None:
    objects = render()
    pod = only(objects, "Job")["spec"]["template"]["spec"]
    container = job_container(objects)
    assert_restricted(pod, container)
    assert pod["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    # No credential is written into the manifests: the optional Secret or the workload identity.
    literals = " ".join(str(v) for v in environment(objects, 0).values())
    assert not re.search(r"(?i)secret|password|AKIA[0-9A-Z]{12}", literals)
    assert {"secretRef": {"name": "vitserve-score-storage", "optional": True}} in container["envFrom"]
    # The service's own image repository (the tag picks the variant).
    service = only(render_overlay("cpu"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].rsplit(":", 1)[0] == service["image"].rsplit(":", 1)[0]


def test_the_readme_example_renders_16_shards_of_the_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay = readme_overlay().replace("../deploy/k8s/jobs/score", os.path.relpath(JOB, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(overlay)
    objects = kustomize(tmp_path)
    for obj in objects:
        validate(obj, kv.latest_version())
    assert only(objects, "Job")["spec"]["completions"] == 16
    env = environment(objects, 15)
    assert env["SHARD_COUNT"] == "16" and env["SCORE_SOURCE"] == "s3://my-bucket/photos"
    assert env["VITSERVE_URL"] == environment(render(), 0)["VITSERVE_URL"]  # merged, not replaced
    role = only(objects, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.startswith("arn:aws:iam::")
    args = job_container(objects)["args"]
    monkeypatch.setenv("VITSERVE_URL", env["VITSERVE_URL"])
    parsed = build_parser("score").parse_args(["score", *(expand(arg, env) for arg in args)])
    assert parsed.shard == Shard(15, 16)
