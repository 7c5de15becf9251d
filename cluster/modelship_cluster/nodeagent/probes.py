"""Container probes (httpGet, tcpSocket, exec), run from the host like the kubelet does."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping, Sequence
from typing import Any


def named_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no port named {port!r} in container {container.get('name')!r}")


async def http_get(
    host: str, probe: Mapping[str, Any], container: Mapping[str, Any], limit: float
) -> tuple[bool, str]:
    """Success is a status from 200 to 399, as in Kubernetes."""
    port = named_port(container, probe.get("port", 80))
    path = probe.get("path", "/") or "/"
    headers = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}
    target = probe.get("host") or host
    context = None
    if probe.get("scheme", "HTTP").upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(target, port, ssl=context)
            lines = [f"GET {path} HTTP/1.1", f"Host: {headers.pop('Host', f'{target}:{port}')}"]
            lines += ["User-Agent: modelship-node-agent/probe", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            status_line = await reader.readline()
    except (OSError, TimeoutError, ssl.SSLError) as error:
        return False, f"Get http://{target}:{port}{path}: {error or type(error).__name__}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"malformed HTTP response {status_line[:80]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(
    host: str, probe: Mapping[str, Any], container: Mapping[str, Any], limit: float
) -> tuple[bool, str]:
    port = named_port(container, probe["port"])
    target = probe.get("host") or host
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(target, port)
        writer.close()
        return True, ""
    except (OSError, TimeoutError) as error:
        return False, f"dial tcp {target}:{port}: {error or 'timeout'}"


async def exec_in(
    pid: int,
    identity: tuple[int, int, list[int]],
    env: Mapping[str, str],
    argv: Sequence[str],
    limit: float,
) -> tuple[bool, str]:
    """Run `argv` in the container's namespaces and root, as the container's user."""
    uid, gid, groups = identity
    group_arg = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    cmd = [
        "nsenter", "-t", str(pid), "-n", "-m", "-u", "-i", "-r", "-w", "--",
        "setpriv", "--reuid", str(uid), "--regid", str(gid), *group_arg, "--no-new-privs",
        "--", *argv,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"command timed out after {limit:g}s"
    text = out.decode(errors="replace")[-512:]
    return proc.returncode == 0, text or f"exit code {proc.returncode}"


async def run_probe(
    probe: Mapping[str, Any],
    *,
    pod_ip: str,
    container: Mapping[str, Any],
    pid: int,
    identity: tuple[int, int, list[int]],
    env: Mapping[str, str],
) -> tuple[bool, str]:
    limit = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            return await http_get(pod_ip, probe["httpGet"], container, limit)
        if "tcpSocket" in probe:
            return await tcp_socket(pod_ip, probe["tcpSocket"], container, limit)
        if "exec" in probe:
            return await exec_in(pid, identity, env, probe["exec"]["command"], limit)
    except ValueError as error:
        return False, str(error)
    return False, "probe has no handler (httpGet, tcpSocket or exec)"
