"""nginx as the reference proxy for bench/run_router.py: config and process management.

nginx (Debian's nginx-light) runs as a single foreground process (`daemon off;
master_process off;`) from a generated config in a temporary directory, listening on
127.0.0.1 only, with `split_clients` between the same two backends the router splits
between, and keep-alive upstream connections (the equivalent of the router's pools).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ensure_nginx() -> str:
    """Path of the nginx binary, installing Debian's nginx-light if it is missing."""
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if found:
        return str(found)
    print("== installing nginx-light (Debian) for the reference proxy", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "nginx-light"],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return "/usr/sbin/nginx"


def write_config(workdir: Path, port: int, stable: str, canary: str, canary_percent: float) -> Path:
    """An nginx.conf splitting traffic like the router (random per request)."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream stable {{ server {stable}; keepalive 64; }}
    upstream canary {{ server {canary}; keepalive 64; }}
    split_clients "${{request_id}}" $variant {{
        {canary_percent}% canary;
        * stable;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://$variant;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header x-modelship-variant $variant;
        }}
    }}
}}
"""
    )
    return conf


def nginx_command(binary: str, conf: Path, workdir: Path) -> list[str]:
    return [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
