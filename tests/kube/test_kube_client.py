"""The client over real HTTP against the API stand-in (kube_standin): requests, errors,
token rotation, TLS with client certificates, watches and list-and-watch."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kube_standin import (
    ApiStandIn,
    Recorded,
    Reply,
    Stream,
    bookmark,
    event,
    expired,
    listing,
    make_pki,
    status,
)
from modelship_kube import errors
from modelship_kube.backoff import Backoff
from modelship_kube.credentials import Credentials, StaticAuth, TokenFile, from_kubeconfig
from modelship_kube.informer import SYNC, ListWatch, list_all
from modelship_kube.request import Client, PatchType
from modelship_kube.watch import Watch

T = TypeVar("T")
CMS = "/api/v1/namespaces/ns/configmaps"


def run(coro: Awaitable[T], timeout: float = 20) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def client_for(server: ApiStandIn, token: Path | None = None, **kw: Any) -> Client:
    auth = TokenFile(token) if token is not None else None
    return Client(Credentials(server.url, auth=auth), **kw)


async def take(
    lw: ListWatch, count: int, between: Callable[[int], None] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` (type, object) pairs of a list-and-watch."""
    got: list[tuple[str, dict[str, Any]]] = []
    events = aiter(lw)
    try:
        async for kind, obj in events:
            got.append((kind, obj))
            if between is not None:
                between(len(got))
            if len(got) == count:
                break
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return got


def names(got: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    return [
        (k, [i["metadata"]["name"] for i in o["items"]] if k == SYNC else o["metadata"]["name"])
        for k, o in got
    ]


# --- requests ------------------------------------------------------------------------------


def test_requests_send_json_with_the_patch_content_types(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t1")
    with ApiStandIn(lambda r: Reply(200, {"kind": "ConfigMap", "echo": r.method})) as server:

        async def main() -> None:
            async with client_for(server, token) as client:
                assert (await client.get(f"{CMS}/a"))["echo"] == "GET"
                await client.create(CMS, {"metadata": {"name": "a"}})
                await client.replace(f"{CMS}/a", {"metadata": {"resourceVersion": "3"}})
                await client.patch(f"{CMS}/a", {"data": {"k": "v"}})
                await client.patch(f"{CMS}/a", {"data": {}}, PatchType.STRATEGIC)
                await client.patch(f"{CMS}/a", [{"op": "remove", "path": "/x"}], PatchType.JSON)
                await client.apply(f"{CMS}/a", {"kind": "ConfigMap"}, "modelship", force=True)
                await client.apply(f"{CMS}/a", {"kind": "ConfigMap"}, "modelship", force=False)
                await client.delete(f"{CMS}/a")

        run(main())
    got = [(r.method, r.headers.get("content-type"), r.query) for r in server.requests]
    assert got == [
        ("GET", None, {}),
        ("POST", "application/json", {}),
        ("PUT", "application/json", {}),
        ("PATCH", "application/merge-patch+json", {}),
        ("PATCH", "application/strategic-merge-patch+json", {}),
        ("PATCH", "application/json-patch+json", {}),
        ("PATCH", "application/apply-patch+yaml", {"fieldManager": "modelship", "force": "true"}),
        ("PATCH", "application/apply-patch+yaml", {"fieldManager": "modelship"}),
        ("DELETE", "application/json", {}),
    ]
    assert server.requests[1].json() == {"metadata": {"name": "a"}}
    assert server.requests[8].json() == {"propagationPolicy": "Background"}
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer t1"}
    assert {r.headers["accept"] for r in server.requests} == {"application/json"}


def test_failures_are_typed_errors_with_the_api_reason() -> None:
    def script(request: Recorded) -> Reply:
        if request.path.endswith("/missing"):
            return Reply(404, status(404, "NotFound", 'configmaps "missing" not found'))
        if request.method == "POST":
            return Reply(409, status(409, "AlreadyExists", "already exists"))
        if request.method == "PATCH":
            return Reply(422, status(422, "Invalid", "metadata.name: Invalid value"))
        return Reply(500, text="etcd is unhappy")

    with ApiStandIn(script) as server:

        async def main() -> list[errors.ApiError]:
            caught = []
            async with client_for(server) as client:
                assert await client.get_or_none(f"{CMS}/missing") is None
                await client.delete(f"{CMS}/missing")  # gone already is fine
                for call in (
                    client.get(f"{CMS}/missing"),
                    client.create(CMS, {}),
                    client.patch(f"{CMS}/a", {}),
                    client.get(f"{CMS}/a", what="read a"),
                    client.delete(f"{CMS}/missing", missing_ok=False),
                ):
                    try:
                        await call
                    except errors.ApiError as exc:
                        caught.append(exc)
            return caught

        missing, exists, invalid, broken, delete = run(main())
    assert isinstance(missing, errors.NotFound) and "not found" in missing.message
    assert isinstance(exists, errors.Conflict) and exists.reason == "AlreadyExists"
    assert invalid.status == 422 and invalid.reason == "Invalid" and not invalid.transient
    assert broken.status == 500 and broken.transient and "etcd is unhappy" in broken.message
    assert str(broken).startswith("read a: 500")
    assert isinstance(delete, errors.NotFound)


def test_no_answer_is_unavailable() -> None:
    with ApiStandIn() as server:
        url = server.url  # stopped on leaving: nobody listens there any more

    async def main() -> None:
        async with Client(Credentials(url)) as client:
            await client.get(CMS)

    with pytest.raises(errors.Unavailable) as caught:
        run(main())
    assert caught.value.status == 0 and caught.value.transient


def test_a_rotated_token_is_sent_with_the_next_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    with ApiStandIn(lambda r: Reply(200, {})) as server:

        async def main() -> None:
            async with client_for(server, token) as client:
                await client.get(CMS)
                # What the kubelet does: a new file swapped in under the same name.
                (tmp_path / "token.new").write_text("second-token")
                os.replace(tmp_path / "token.new", token)
                await client.get(CMS)

        run(main())
    assert [r.headers["authorization"] for r in server.requests] == [
        "Bearer first",
        "Bearer second-token",
    ]


def test_a_401_rereads_the_token_and_retries_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old-token")
    accepted = {"Bearer new-token"}

    def script(request: Recorded) -> Reply:
        if request.headers.get("authorization") in accepted:
            return Reply(200, {"ok": True})
        return Reply(401, status(401, "Unauthorized", "Unauthorized"))

    with ApiStandIn(script) as server:

        async def main() -> None:
            async with client_for(server, token) as client:
                with pytest.raises(errors.Unauthorized):
                    await client.get(CMS)  # refused twice: an error, not a loop
                # Rewritten in place with the same size and mtime: only the 401 tells.
                stat = token.stat()
                token.write_text("new-token")
                os.utime(token, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                assert await client.get(CMS) == {"ok": True}

        run(main())
    assert [r.headers["authorization"] for r in server.requests] == [
        "Bearer old-token",
        "Bearer old-token",
        "Bearer old-token",
        "Bearer new-token",
    ]


def test_kubeconfig_with_a_ca_and_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with ApiStandIn(lambda r: Reply(200, {"kind": "Namespace"}), tls=pki.server_context()) as s:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            "current-context: t\n"
            f"clusters: [{{name: t, cluster: {{server: '{s.url}', "
            "certificate-authority: ca.crt}}]\n"
            "users: [{name: u, user: {client-certificate: client.crt, client-key: client.key}}]\n"
            "contexts: [{name: t, context: {cluster: t, user: u}}]\n"
        )
        inline = tmp_path / "inline"
        inline.write_text(
            "current-context: t\n"
            f"clusters: [{{name: t, cluster: {{server: '{s.url}', "
            f"certificate-authority-data: {_b64(pki.ca)}}}}}]\n"
            f"users: [{{name: u, user: {{client-certificate-data: {_b64(pki.client_cert)}, "
            f"client-key-data: {_b64(pki.client_key)}}}}}]\n"
            "contexts: [{name: t, context: {cluster: t, user: u}}]\n"
        )

        async def main() -> None:
            for config in (kubeconfig, inline):
                async with Client(from_kubeconfig(config)) as client:
                    assert (await client.get("/api/v1/namespaces/ns"))["kind"] == "Namespace"
            # A client that does not trust the server's CA gets no answer.
            async with Client(Credentials(s.url)) as untrusting:
                with pytest.raises(errors.Unavailable):
                    await untrusting.get("/api/v1/namespaces/ns")

        run(main())
    assert [r.client_cn for r in s.requests] == ["system:serviceaccount:ns:tester"] * 2


def test_an_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, pathlib, sys\n"
        f"p = pathlib.Path({str(runs)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False\n"
        "print(json.dumps({'kind': 'ExecCredential', 'apiVersion': info['apiVersion'],\n"
        "  'status': {'token': 'exec-' + sys.argv[1] + '-' + str(len(p.read_text()))}}))\n"
    )
    with ApiStandIn(lambda r: Reply(200, {})) as server:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            "current-context: t\n"
            f"clusters: [{{name: t, cluster: {{server: '{server.url}'}}}}]\n"
            f"users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, "
            f"command: {sys.executable}, args: [{plugin}, cloud]}}}}}}]\n"
            "contexts: [{name: t, context: {cluster: t, user: u}}]\n"
        )

        async def main() -> None:
            async with Client(from_kubeconfig(kubeconfig)) as client:
                await client.get(CMS)
                await client.get(CMS)

        run(main())
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer exec-cloud-1"] * 2


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


# --- watch ---------------------------------------------------------------------------------


def test_a_watch_yields_typed_events_follows_bookmarks_and_raises_410() -> None:
    with ApiStandIn() as server:
        server.scripted.on(
            CMS,
            Stream(
                [
                    event("ADDED", "a", "11"),
                    b"\n",
                    bookmark("15"),
                    event("MODIFIED", "a", "16"),
                    0.05,
                    expired(),
                ]
            ),
            watch=True,
        )

        async def main() -> tuple[list[tuple[str, str | None]], str | None]:
            seen = []
            async with client_for(server) as client:
                watch = Watch(client, CMS, {"labelSelector": "app=x"}, resource_version="10",
                              timeout_seconds=60)  # fmt: skip
                with pytest.raises(errors.Gone) as caught:
                    async for ev in watch:
                        seen.append((ev.type, ev.resource_version))
                assert caught.value.reason == "Expired"
                return seen, watch.resource_version

        seen, version = run(main())
    assert seen == [("ADDED", "11"), ("BOOKMARK", "15"), ("MODIFIED", "16")]
    assert version == "16"
    (request,) = server.requests
    assert request.query == {"labelSelector": "app=x", "watch": "true", "resourceVersion": "10",
                             "allowWatchBookmarks": "true", "timeoutSeconds": "60"}  # fmt: skip


def test_a_watch_refused_at_once_with_410_is_gone() -> None:
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(410, status(410, "Gone", "too old")), watch=True)

        async def main() -> None:
            async with client_for(server) as client:
                async for _ in Watch(client, CMS, resource_version="1"):
                    pass

        with pytest.raises(errors.Gone):
            run(main())


def test_a_held_watch_is_cancelled_at_once() -> None:
    hold = threading.Event()
    with ApiStandIn() as server:
        server.scripted.on(CMS, Stream([event("ADDED", "a", "2")], hold=hold), watch=True)

        async def main() -> list[str]:
            got: list[str] = []
            first = asyncio.Event()
            async with client_for(server) as client:

                async def consume() -> None:
                    async for ev in Watch(client, CMS, resource_version="1"):
                        got.append(ev.type)
                        first.set()

                task = asyncio.create_task(consume())
                await first.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return got

        try:
            assert run(main(), timeout=5) == ["ADDED"]
        finally:
            hold.set()


# --- list and watch ------------------------------------------------------------------------


def test_list_and_watch_resumes_relists_on_410_and_resyncs() -> None:
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(200, listing("10", "a")), Reply(200, listing("30", "a", "b")))
        server.scripted.on(
            CMS,
            # The server ends the first watch (its timeout): resumed from the bookmark.
            Stream([event("ADDED", "b", "11"), bookmark("15")]),
            # The second starts from 15, which etcd compacted meanwhile: listed again.
            Stream([event("DELETED", "b", "16"), expired()]),
            Stream([event("MODIFIED", "a", "31")], hold=threading.Event()),
            watch=True,
        )
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        async def main() -> list[tuple[str, dict[str, Any]]]:
            async with client_for(server) as client:
                lw = ListWatch(client, CMS, {"fieldSelector": "metadata.name=a"}, what="cms",
                               sleep=sleep)  # fmt: skip
                return await take(lw, 5)

        got = run(main())
    assert names(got) == [
        (SYNC, ["a"]),
        ("ADDED", "b"),
        ("DELETED", "b"),
        (SYNC, ["a", "b"]),
        ("MODIFIED", "a"),
    ]
    # List items carry kind and apiVersion (the API leaves them out).
    assert got[0][1]["items"][0]["kind"] == "ConfigMap"
    lists = server.matching(CMS, watch=False)
    watches = server.matching(CMS, watch=True)
    assert [r.query.get("resourceVersion") for r in watches] == ["10", "15", "30"]
    assert all(r.query["fieldSelector"] == "metadata.name=a" for r in lists + watches)
    assert all(r.query["allowWatchBookmarks"] == "true" for r in watches)
    assert len(lists) == 2 and sleeps == []  # an expired watch is no failure: no back-off


def test_list_and_watch_backs_off_on_errors_and_resets_after_success() -> None:
    with ApiStandIn() as server:
        boom = Reply(500, status(500, "InternalError", "etcd timeout"))
        server.scripted.on(CMS, boom, boom, boom, Reply(200, listing("10", "a")))
        server.scripted.on(
            CMS,
            Reply(503, text="apiserver restarting"),
            Stream([event("ADDED", "b", "11")]),  # then the server ends the watch
            Reply(500, status(500, "InternalError", "again")),
            Stream([event("ADDED", "c", "12")], hold=threading.Event()),
            watch=True,
        )
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        async def main() -> list[tuple[str, dict[str, Any]]]:
            async with client_for(server) as client:
                backoff = Backoff(initial=0.5, cap=1.5, jitter=0.0)
                lw = ListWatch(client, CMS, what="cms", backoff=backoff, sleep=sleep)
                return await take(lw, 3)

        got = run(main())
    assert names(got) == [(SYNC, ["a"]), ("ADDED", "b"), ("ADDED", "c")]
    # Three failed lists (0.5, 1.0, then capped), a success resets; a failed watch after
    # it starts again at 0.5; an event resets again.
    assert sleeps == [0.5, 1.0, 1.5, 0.5, 0.5]
    watches = server.matching(CMS, watch=True)
    # A failed watch is resumed from where it was, not listed again.
    assert [r.query["resourceVersion"] for r in watches] == ["10", "10", "11", "11"]
    assert len(server.matching(CMS, watch=False)) == 4


def test_list_and_watch_sends_the_rotated_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("before")
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(200, listing("1", "a")))
        server.scripted.on(
            CMS,
            Stream([event("ADDED", "b", "2")]),
            Stream([event("ADDED", "c", "3")], hold=threading.Event()),
            watch=True,
        )

        def rotate(count: int) -> None:
            if count == 2:  # between the first watch and the next
                token.write_text("after-rotation")

        async def main() -> None:
            async with client_for(server, token) as client:
                await take(ListWatch(client, CMS), 3, rotate)

        run(main())
    assert [r.headers["authorization"] for r in server.requests] == [
        "Bearer before",
        "Bearer before",
        "Bearer after-rotation",
    ]


def test_a_watch_the_server_closes_at_once_is_backed_off() -> None:
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(200, listing("1")))
        server.scripted.on(
            CMS, Stream([]), Stream([]), Stream([event("ADDED", "a", "2")]), watch=True
        )
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        async def main() -> None:
            async with client_for(server) as client:
                lw = ListWatch(client, CMS, backoff=Backoff(jitter=0.0), sleep=sleep)
                await take(lw, 2)

        run(main())
    assert sleeps == [0.2, 0.4]


def test_lists_follow_continue_tokens() -> None:
    def script(request: Recorded) -> Reply:
        if request.query.get("continue") == "page2":
            return Reply(200, listing("99", "c"))  # later pages' versions do not count
        return Reply(200, listing("7", "a", "b", cont="page2"))

    with ApiStandIn(script) as server:

        async def main() -> dict[str, Any]:
            async with client_for(server) as client:
                return await list_all(client, CMS, {"labelSelector": "x"}, page_size=2)

        whole = run(main())
    assert [i["metadata"]["name"] for i in whole["items"]] == ["a", "b", "c"]
    assert whole["metadata"] == {"resourceVersion": "7"}
    assert [r.query for r in server.requests] == [
        {"labelSelector": "x", "limit": "2"},
        {"labelSelector": "x", "limit": "2", "continue": "page2"},
    ]


def test_static_auth_and_json_bodies_round_trip() -> None:
    def script(request: Recorded) -> Reply:
        return Reply(
            201, {"got": json.loads(request.body), "auth": request.headers["authorization"]}
        )

    with ApiStandIn(script) as server:

        async def main() -> dict[str, Any]:
            async with Client(Credentials(server.url, auth=StaticAuth.basic("u", "p"))) as client:
                return await client.create(CMS, {"data": {"k": "ü"}})

        answer = run(main())
    assert answer == {"got": {"data": {"k": "ü"}}, "auth": "Basic dTpw"}


def test_a_failing_callback_is_logged_and_the_collection_listed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with ApiStandIn() as server:
        server.scripted.on(CMS, Reply(200, listing("1", "a")), Reply(200, listing("3", "a", "b")))
        server.scripted.on(
            CMS,
            Stream([event("ADDED", "b", "2"), event("ADDED", "never-seen", "3")]),
            Stream([event("MODIFIED", "b", "4")], hold=threading.Event()),
            watch=True,
        )
        lists: list[list[str]] = []
        changes: list[tuple[str, str]] = []
        sleeps: list[float] = []
        done = asyncio.Event()

        def on_list(items: list[dict[str, Any]]) -> None:
            lists.append([i["metadata"]["name"] for i in items])

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            changes.append((kind, name))
            if name == "b" and kind == "ADDED":
                raise KeyError("a bug in the handler")
            if kind == "MODIFIED":
                done.set()

        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        async def main() -> None:
            async with client_for(server) as client:
                lw = ListWatch(client, CMS, what="cms", backoff=Backoff(jitter=0.0), sleep=sleep)
                task = asyncio.create_task(lw.run(on_list, on_event))
                await done.wait()
                task.cancel()

        run(main())
    assert lists == [["a"], ["a", "b"]]
    assert changes == [("ADDED", "b"), ("MODIFIED", "b")]  # the event after the bug: relisted
    assert sleeps == [0.2]
    assert "handling ADDED of cms failed: listing again" in caplog.text
