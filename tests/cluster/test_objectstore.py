"""The test bed's in-cluster object store (SeaweedFS), as rendered (pure)."""

from __future__ import annotations

import json
from typing import Any

from modelship_cluster import images, objectstore

OBJECTS = objectstore.manifests(cluster_ip="10.96.0.91")


def one(kind: str) -> dict[str, Any]:
    found = [o for o in OBJECTS if o["kind"] == kind]
    assert len(found) == 1, (kind, found)
    return found[0]


def test_the_pod_runs_the_image_the_test_bed_builds_with_the_identities_secret() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == images.IMAGES["seaweedfs"].ref == objectstore.IMAGE
    assert container["imagePullPolicy"] == "Never"
    assert "-s3.config=/etc/seaweedfs/s3.json" in container["args"]
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    assert secret_volume["secret"]["secretName"] == one("Secret")["metadata"]["name"]


def test_each_identity_has_exactly_its_rights() -> None:
    config = json.loads(one("Secret")["stringData"]["s3.json"])
    rights = {i["name"]: i["actions"] for i in config["identities"]}
    assert rights == {
        "admin": ["Admin"],
        "models-reader": ["Read:models", "List:models"],
        "outsider": ["Read:elsewhere"],
    }
    keys = [c["accessKey"] for i in config["identities"] for c in i["credentials"]]
    assert len(set(keys)) == len(keys) == 3


def test_the_service_has_the_fixed_address_the_host_and_pods_use() -> None:
    service = one("Service")
    assert service["spec"]["clusterIP"] == "10.96.0.91"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"s3": objectstore.S3_PORT, "filer": objectstore.FILER_PORT}
    assert objectstore.s3_endpoint("10.96.0.91") == "http://10.96.0.91:8333"
    assert objectstore.URL == "http://seaweedfs.storage.svc:8333"
    selector = service["spec"]["selector"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_the_store_passes_the_restricted_pod_security_profile() -> None:
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in container["volumeMounts"]}
