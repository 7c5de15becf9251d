"""The test bed's object store in the cluster: SeaweedFS' S3 gateway, as a team would run
MinIO or SeaweedFS beside their models.

One pod of the ``seaweedfs`` image (built from SeaweedFS' Go module, see
``images/seaweedfs/Containerfile``) runs ``weed server -filer -s3`` in namespace
``storage``, which enforces the restricted Pod Security profile. The S3 gateway checks
SigV4 signatures against the identities of :data:`IDENTITIES` (from a Secret), so a pod
with the wrong key is refused exactly as on AWS. The Service has a fixed ClusterIP, so the
host (the tests and the model registry) reaches it at :func:`s3_endpoint` as pods do at
:data:`URL`.

Pure: :func:`manifests` renders the objects; the node applies them and waits for
:data:`WAIT_FOR`. Objects are stored in an emptyDir: the store lives as long as the
cluster. The keys below are the test bed's own and are printed by ``modelship-cluster
up``; they guard nothing outside it.
"""

from __future__ import annotations

from typing import Any, Final

from modelship_cluster import binaries
from modelship_cluster.seaweedfs import Identity, s3_config

NAMESPACE: Final = "storage"
NAME: Final = "seaweedfs"
S3_PORT: Final = 8333
FILER_PORT: Final = 8888
IMAGE: Final = f"localhost/modelship-testbed/seaweedfs:{binaries.SEAWEEDFS_VERSION}"
#: The bucket the tests keep models in.
BUCKET: Final = "models"
URL: Final = f"http://{NAME}.{NAMESPACE}.svc:{S3_PORT}"

#: Writes every bucket (the tests upload with it).
ADMIN: Final = Identity("admin", "testbed-admin", "testbed-admin-secret", ("Admin",))
#: Reads the models bucket only: what a ModelDeployment's Secret holds.
READER: Final = Identity(
    "models-reader", "testbed-reader", "testbed-reader-secret", (f"Read:{BUCKET}", f"List:{BUCKET}")
)
#: A valid key with no right on the models bucket: S3 answers AccessDenied.
OUTSIDER: Final = Identity(
    "outsider", "testbed-outsider", "testbed-outsider-secret", ("Read:elsewhere",)
)
IDENTITIES: Final = (ADMIN, READER, OUTSIDER)

LABELS: Final = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/component": "object-store",
    "app.kubernetes.io/part-of": "modelship-testbed",
}
WAIT_FOR: Final = (("-n", NAMESPACE, f"deployment/{NAME}", "--for=condition=Available"),)


def s3_endpoint(cluster_ip: str) -> str:
    """The S3 endpoint as the host reaches it."""
    return f"http://{cluster_ip}:{S3_PORT}"


def filer_url(cluster_ip: str) -> str:
    """The filer (uploads without S3) as the host reaches it."""
    return f"http://{cluster_ip}:{FILER_PORT}"


def manifests(cluster_ip: str | None = None) -> list[dict[str, Any]]:
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)}
    service_spec: dict[str, Any] = {
        "selector": {"app.kubernetes.io/name": NAME},
        "ports": [
            {"name": "s3", "port": S3_PORT, "targetPort": "s3"},
            {"name": "filer", "port": FILER_PORT, "targetPort": "filer"},
        ],
    }
    if cluster_ip is not None:
        service_spec["clusterIP"] = cluster_ip
    # The filer lists its root once a volume can take data.
    probe = {"httpGet": {"path": "/", "port": "filer"}, "periodSeconds": 2}
    container = {
        "name": "weed",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": [
            "server",
            "-dir=/data",
            "-ip.bind=0.0.0.0",
            "-master.volumeSizeLimitMB=32",
            "-volume.max=64",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={FILER_PORT}",
            "-s3",
            f"-s3.port={S3_PORT}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.config=/etc/seaweedfs/s3.json",
        ],
        "ports": [
            {"name": "s3", "containerPort": S3_PORT},
            {"name": "filer", "containerPort": FILER_PORT},
        ],
        "readinessProbe": probe,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": "/etc/seaweedfs", "readOnly": True},
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    **LABELS,
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**meta, "name": f"{NAME}-s3-config"},
            "stringData": {"s3.json": s3_config(list(IDENTITIES))},
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service_spec},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": dict(LABELS)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "runAsGroup": 65534,
                            "fsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [
                            {"name": "data", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                            {"name": "config", "secret": {"secretName": f"{NAME}-s3-config"}},
                        ],
                    },
                },
            },
        },
    ]
