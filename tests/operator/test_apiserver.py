"""The CRD, RBAC and rendered objects against a real kube-apiserver (no nodes needed).

What the unit tests check with a stand-in is checked here by the real thing: the CRD is
accepted, every invalid resource of the table is refused with the expected words, every
valid one is stored with the same defaults the operator's models apply, and the operator's
ServiceAccount, with exactly the RBAC in manifests/rbac, can apply, read and prune every
child it renders (including the router's Role, which Kubernetes only lets a holder of
those permissions create) and write status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_spec
from apiserver import ApiServer, start_apiserver
from mdep_fixtures import SHA_CANARY, base_resource
from modelship_operator.crd import dump_yaml
from modelship_operator.observed import Observed
from modelship_operator.reconcile import plan, status_patch
from modelship_operator.render import render
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from test_reconcile import T0, cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "--as=system:serviceaccount:modelship-system:modelship-operator"
ROUTER = "--as=system:serviceaccount:ml:churn-router"
CANARY = {"version": "1.5.0", "uri": "file:///models/churn-1.5.0.skops", "sha256": SHA_CANARY}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    for server in start_apiserver(tmp_path_factory.mktemp("apiserver")):
        server.kubectl("apply", "-f", str(ROOT / "manifests/crds/modeldeployments.yaml"))
        server.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/modeldeployments.modelship.io",
        )  # fmt: skip
        # The OpenAPI document (kubectl explain, strict field validation) follows shortly.
        deadline = time.monotonic() + 60
        while server.kubectl("explain", "modeldeployment", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the CRD's OpenAPI was never published"
            time.sleep(0.5)
        for namespace in ("modelship-system", "ml"):
            server.kubectl("create", "namespace", namespace)
        server.kubectl("apply", "-f", str(ROOT / "manifests/rbac/operator.yaml"))
        yield server


def in_namespace(body: dict[str, Any], name: str | None = None) -> str:
    obj = json.loads(json.dumps(body))
    obj["metadata"] = {"name": name or obj["metadata"]["name"], "namespace": "ml"}
    obj.pop("status", None)
    return json.dumps(obj)


def test_explain_describes_the_strategy(api: ApiServer) -> None:
    out = api.kubectl("explain", "modeldeployment.spec.strategy").stdout
    assert "How the canary is rolled out and analysed." in out
    assert "strictly increasing" in out


@pytest.mark.parametrize(("body", "api_words", "py_words"),
                         [c[1:] for c in test_spec.INVALID],
                         ids=[c[0] for c in test_spec.INVALID])  # fmt: skip
def test_invalid_resources_are_refused_with_the_reason(
    api: ApiServer, body: dict[str, Any], api_words: str, py_words: str
) -> None:
    result = api.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-",
        input=in_namespace(body), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    # The API server words a path as "<path>: Invalid value: <v>: <path> in body ..."; the
    # table keeps "<path>: <message>": compare the message part.
    assert api_words.split(": ", 1)[-1] in result.stderr, result.stderr


@pytest.mark.parametrize("body", [c[1] for c in test_spec.VALID],
                         ids=[c[0] for c in test_spec.VALID])  # fmt: skip
def test_valid_resources_are_stored_with_the_models_defaults(
    api: ApiServer, body: dict[str, Any]
) -> None:
    result = api.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-",
        input=in_namespace(body),
    )  # fmt: skip
    stored = json.loads(result.stdout)["spec"]
    assert stored == ModelDeployment.from_api(body).spec.to_api()


def test_operator_account_applies_reads_and_prunes_every_child(api: ApiServer) -> None:
    resource = ModelDeployment.from_api(
        base_resource(canary=CANARY, replicas=2, router={"replicas": 2})
    )
    objects = render(resource, OperatorSettings())
    manifest = "".join("---\n" + dump_yaml(o) for o in objects)
    apply = ("apply", OPERATOR, "--server-side", "--field-manager=modelship-operator", "-f", "-")
    out = api.kubectl(*apply, input=manifest).stdout
    assert out.count("serverside-applied") == len(objects)
    api.kubectl(*apply, input=manifest)  # idempotent: a second apply changes nothing
    listed = api.kubectl(
        OPERATOR, "-n", "ml", "get", "deployments,services,configmaps,serviceaccounts,roles,"
        "rolebindings,poddisruptionbudgets", "-l", "modelship.io/deployment=churn", "-o", "name",
    ).stdout.split()  # fmt: skip
    assert len(listed) == len(objects)
    api.kubectl(OPERATOR, "-n", "ml", "get", "pods,endpointslices")
    api.kubectl(
        OPERATOR, "-n", "ml", "delete",
        "deployment/churn-canary", "service/churn-canary", "poddisruptionbudget/churn-canary",
    )  # fmt: skip
    refused = api.kubectl(OPERATOR, "-n", "ml", "get", "secrets", check=False)
    assert "forbidden" in refused.stderr


def test_router_account_reads_only_its_own_configmap(api: ApiServer) -> None:
    resource = ModelDeployment.from_api(base_resource())
    manifest = "".join("---\n" + dump_yaml(o) for o in render(resource, OperatorSettings()))
    api.kubectl("apply", OPERATOR, "--server-side", "--field-manager=modelship-operator",
                "-f", "-", input=manifest)  # fmt: skip
    api.kubectl(ROUTER, "-n", "ml", "get", "configmap", "churn-router")
    api.kubectl(ROUTER, "-n", "ml", "get", "configmaps",
                "--field-selector=metadata.name=churn-router", "--watch=false")  # fmt: skip
    api.kubectl(ROUTER, "-n", "ml", "get", "endpointslices")
    assert api.kubectl(ROUTER, "-n", "ml", "get", "configmaps", check=False).returncode != 0
    assert api.kubectl(ROUTER, "-n", "ml", "get", "pods", check=False).returncode != 0


def test_operator_account_writes_the_status_plan_computes(api: ApiServer) -> None:
    body = base_resource(name="scored", canary=CANARY)
    api.kubectl("create", "-f", "-", input=in_namespace(body))
    stored = json.loads(api.kubectl("-n", "ml", "get", "mdep", "scored", "-o", "json").stdout)
    resource = ModelDeployment.from_api(stored)
    created = plan(resource, Observed(), OperatorSettings(), T0)
    first = plan(resource, cluster(created), OperatorSettings(), T0)
    patch = {"status": status_patch(stored.get("status"), first.status.to_api())}
    api.kubectl(OPERATOR, "-n", "ml", "patch", "mdep", "scored", "--subresource=status",
                "--type=merge", "-p", json.dumps(patch))  # fmt: skip
    row = api.kubectl("-n", "ml", "get", "mdep", "scored", "--no-headers").stdout.split()
    assert row[:6] == ["scored", "Progressing", "True", "1.4.0", "1.5.0", "10"]
    # The operator may annotate (kopf's progress) but never delete a ModelDeployment.
    api.kubectl(OPERATOR, "-n", "ml", "annotate", "mdep", "scored", "modelship.io/x=1")
    assert api.kubectl(OPERATOR, "-n", "ml", "delete", "mdep", "scored", check=False).returncode
