"""A SeaweedFS process: the test bed's S3-compatible object store.

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process,
every port on one address. The S3 gateway checks SigV4 signatures against the identities of
an S3 config file (access keys and what each may do), as a production store does. Objects
are put through the filer's HTTP API (a bucket is a folder under /buckets), so uploading
never depends on the S3 client being tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelship_cluster import binaries, ports


@dataclass(frozen=True)
class Identity:
    """An S3 user: its access key and actions (SeaweedFS' names: Read, List, Write, Admin,
    optionally scoped to a bucket as Read:models)."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]


def s3_config(identities: list[Identity]) -> str:
    """The S3 gateway's identities file (`-s3.config`)."""
    return json.dumps(
        {
            "identities": [
                {
                    "name": i.name,
                    "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
                    "actions": list(i.actions),
                }
                for i in identities
            ]
        },
        indent=2,
    )


def put_object(filer_url: str, bucket: str, key: str, data: bytes, timeout: float = 60) -> None:
    """Store an object through a filer (creating the bucket when it is new); retried while
    the new bucket's volumes are being allocated or the filer is not up yet."""
    import httpx

    url = f"{filer_url}/buckets/{bucket}/{key}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.post(url, files={"file": (Path(key).name, data)}, timeout=30)
        except httpx.TransportError as error:
            failure = f"{type(error).__name__}: {error}"
        else:
            if response.status_code < 300:
                return
            failure = f"{response.status_code} {response.text}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"filer refused {url}: {failure}")
        time.sleep(0.5)


def weed_binary() -> Path | None:
    """The built `weed` ($MODELSHIP_WEED, else the cache of `modelship-cluster build`)."""
    explicit = os.environ.get("MODELSHIP_WEED")
    candidate = Path(explicit) if explicit else binaries.seaweedfs_bin_dir() / "weed"
    return candidate if candidate.is_file() else None


@dataclass
class SeaweedFS:
    """One running `weed server -filer -s3` on HOST, data under ROOT."""

    weed: Path
    root: Path
    identities: list[Identity]
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def filer_url(self) -> str:
        return f"http://{self.host}:{self.ports['filer']}"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(self.weed), "server",
            f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={self.root / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=32",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=64", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.root / 's3.json'}",
        ]  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        import httpx

        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "s3.json").write_text(s3_config(self.identities))
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc")  # fmt: skip
        self.ports = dict(zip(names, ports.free_ports(len(names), self.host), strict=True))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                # The S3 gateway answers (403 to an anonymous request) and the filer can
                # place data: a volume is writable.
                if httpx.get(f"{self.s3_endpoint}/", timeout=2).status_code in (200, 403):
                    status = httpx.get(f"{self.filer_url}/", timeout=2).status_code
                    if status < 500:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def put(self, bucket: str, key: str, data: bytes, timeout: float = 60) -> None:
        """Store an object (see :func:`put_object`)."""
        put_object(self.filer_url, bucket, key, data, timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
