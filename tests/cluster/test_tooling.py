"""The local cluster tool's own pieces, without a running cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from modelship_cluster import binaries, controlplane, pki
from modelship_cluster.processes import ProcessDir

KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tgithub.com/x/y v1.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/x/y => github.com/x/y v1.0.1
)
"""


def test_wrapper_go_mod_replaces_every_staging_module_with_its_published_version() -> None:
    text = binaries.kubernetes_wrapper_go_mod(KUBERNETES_GO_MOD, "1.37.2")
    assert "require k8s.io/kubernetes v1.37.2" in text
    assert "\tk8s.io/api => k8s.io/api v0.37.2" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.2" in text
    assert "github.com/x/y" not in text  # only staging modules are rewritten
    assert "go 1.26.0" in text


def test_wrapper_go_mod_refuses_a_go_mod_without_staging_modules() -> None:
    with pytest.raises(ValueError, match="no staging replacements"):
        binaries.kubernetes_wrapper_go_mod("module x\n\ngo 1.26\n", "1.37.2")


def test_cache_location_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELSHIP_CACHE", str(tmp_path))
    assert (
        binaries.kubernetes_bin_dir()
        == tmp_path / "k8s" / f"v{binaries.KUBERNETES_VERSION}" / "bin"
    )
    with pytest.raises(FileNotFoundError, match="modelship-cluster build"):
        binaries.toolset().path("kube-apiserver")


def test_certificates_chain_to_the_ca_with_the_right_names_and_usages(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path)
    server = pki.issue(
        ca,
        tmp_path,
        "srv",
        "kube-apiserver",
        dns_names=("kubernetes",),
        ip_addresses=("10.96.0.1",),
        server=True,
    )
    admin = pki.issue(ca, tmp_path, "adm", "admin", organizations=("system:masters",), client=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    for pair in (server, admin):
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    srv = x509.load_pem_x509_certificate(server.cert.read_bytes())
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.96.0.1"]
    adm = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    assert (
        adm.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    usage = adm.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Issuing again reuses what exists instead of rotating a running cluster's keys.
    assert pki.issue(ca, tmp_path, "srv", "other").cert.read_bytes() == server.cert.read_bytes()


def test_the_front_proxy_has_a_ca_of_its_own_and_a_client_certificate_of_it(
    tmp_path: Path,
) -> None:
    cluster_ca = pki.create_ca(tmp_path)
    ca, client = pki.create_front_proxy(tmp_path)
    assert (ca, client) == pki.front_proxy_paths(tmp_path)
    assert ca.cert.read_bytes() != cluster_ca.cert.read_bytes()
    assert cluster_ca.cert.read_bytes() == pki.create_ca(tmp_path).cert.read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert = x509.load_pem_x509_certificate(client.cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    with pytest.raises(ValueError):  # not of the cluster CA: no other identity asserts users
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(cluster_ca.cert.read_bytes()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "front-proxy-client"
    )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert oct(client.key.stat().st_mode & 0o777) == "0o600"
    assert pki.create_front_proxy(tmp_path)[1].cert.read_bytes() == client.cert.read_bytes()


def test_the_apiserver_runs_the_aggregation_layer_with_the_front_proxy_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "kube-apiserver").touch()
    tools = binaries.Toolset((tmp_path,))
    args = controlplane.apiserver_args(tools, controlplane.ClusterConfig(), tmp_path / "pki")
    ca, client = pki.front_proxy_paths(tmp_path / "pki")
    for flag in (
        f"--requestheader-client-ca-file={ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={client.cert}",
        f"--proxy-client-key-file={client.key}",
        "--enable-aggregator-routing=true",
    ):
        assert flag in args
    # The users' client CA stays the cluster CA; the front proxy's is another file.
    assert f"--client-ca-file={tmp_path / 'pki' / 'ca.crt'}" in args
    assert ca.cert != tmp_path / "pki" / "ca.crt"
    assert args[-1] == "--v=1" and len(args) == len(set(args))


def test_process_dir_starts_detached_and_stops_the_whole_group(tmp_path: Path) -> None:
    procs = ProcessDir(tmp_path)
    # A parent that ignores SIGTERM and has a child: stop must still leave nothing behind.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = procs.start("stubborn", [sys.executable, "-c", script])
    assert proc.alive()
    assert procs.start("stubborn", ["false"]).pid == proc.pid  # idempotent while running
    pgid = proc.pid
    procs.stop("stubborn", grace=1.0)
    assert not proc.alive()
    assert procs.get("stubborn") is None
    left = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
