"""Fuzzed ModelDeployments against a real kube-apiserver and a running operator.

1,000 resources are generated from the CRD's own schema (manifests/crds): valid ones from
the shipped examples with random valid values, and invalid ones by breaking exactly one
field of a valid one the way the schema forbids (wrong type, value outside an enum, below a
minimum or above a maximum, too long, a value its validation rule refuses, an unknown field,
a required field left out). Every resource is created with strict field validation, as
``kubectl apply`` does. Then:

* each invalid one is refused by the API server with a message that names the broken field
  (or, for a value a rule may accept, is accepted and then handled like a valid one);
* each valid one is accepted and reconciled by the operator (``status.observedGeneration``
  reaches the resource's generation; a spec the operator refuses says which field);
* the operator never crashes, restarts or logs a traceback, and no resource is left stuck.

No nodes run (as on a cordoned node): reconciling means rendering and applying the children.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apiserver import (
    ADMIN_TOKEN,
    ApiServer,
    install_crd,
    start_apiserver,
    start_operator,
    stop_process,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests/crds/modeldeployments.yaml"
EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))
NAMESPACE = "fuzz"
TOTAL = 1000
VALID_SHARE = 0.35
SEED = 20261203
RECONCILE_TIMEOUT = 300.0

#: Mutation kinds the schema refuses for certain; a "rule" mutation (a garbage string where
#: a validation rule checks the value) may happen to be acceptable for some fields.
CERTAIN = {"type", "enum", "minimum", "maximum", "maxLength", "maxItems", "unknown", "required"}


@dataclass(frozen=True)
class Field:
    """One field of the schema: its path (list items as ``[0]``) and its constraints."""

    path: tuple[str, ...]
    schema: dict[str, Any]
    required: bool


@dataclass
class Case:
    name: str
    body: dict[str, Any]
    kind: str  # "valid" or the mutation kind
    field: str  # dotted path of the broken field ("" for valid ones)


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return dict(version["schema"]["openAPIV3Schema"])


def fields(node: dict[str, Any], path: tuple[str, ...] = (), required: bool = False) -> list[Field]:
    out = [Field(path, node, required)]
    needed = set(node.get("required") or [])
    for key, child in (node.get("properties") or {}).items():
        out += fields(child, (*path, key), key in needed)
    if "items" in node:
        out += fields(node["items"], (*path, "[0]"), False)
    return out


def lookup(body: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if key == "[0]":
            if not isinstance(body, list) or not body:
                return False, None
            body = body[0]
        elif isinstance(body, dict) and key in body:
            body = body[key]
        else:
            return False, None
    return True, body


def container(body: Any, path: tuple[str, ...]) -> tuple[Any, str | int]:
    parent = lookup(body, path[:-1])[1]
    last = path[-1]
    return parent, 0 if last == "[0]" else last


def display(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[0]", "[0]")


def wrong_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return {"not": "a quantity"}
    return {
        "string": 12345,
        "integer": "twelve",
        "number": "a lot",
        "boolean": "yes",
        "array": "not-a-list",
        "object": ["not", "an", "object"],
    }.get(kind or "", {"unexpected": True})


def mutations(schema: dict[str, Any], required: bool) -> list[tuple[str, Any]]:
    """(kind, value or None to delete) that break a field with this schema."""
    out: list[tuple[str, Any]] = [("type", wrong_type(schema))]
    if "enum" in schema:
        out.append(("enum", "NotOneOfThem"))
    if "minimum" in schema:
        out.append(("minimum", schema["minimum"] - 1))
    if "maximum" in schema:
        out.append(("maximum", schema["maximum"] + 1))
    if "maxLength" in schema:
        out.append(("maxLength", "x" * (schema["maxLength"] + 1)))
    if "maxItems" in schema and isinstance(schema.get("items"), dict):
        item = schema["items"]
        if item.get("type") == "integer":
            out.append(("maxItems", list(range(1, schema["maxItems"] + 2))))
    if schema.get("type") == "string" and "enum" not in schema:
        out.append(("rule", "no such value!"))
    if schema.get("type") == "object" and schema.get("properties"):
        out.append(("unknown", None))
    if required:
        out.append(("required", None))
    return out


def valid_variant(rng: random.Random, base: dict[str, Any], name: str) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = body["spec"]
    spec["model"]["version"] = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}"
    if rng.random() < 0.5:
        spec["replicas"] = rng.randint(1, 5)
    if rng.random() < 0.3:
        spec["paused"] = rng.random() < 0.5
    strategy = spec.get("strategy")
    if isinstance(strategy, dict) and isinstance(strategy.get("steps"), list):
        strategy["steps"] = sorted(rng.sample(range(1, 100), rng.randint(1, 4)))
    return body


def generate(schema: dict[str, Any]) -> list[Case]:
    rng = random.Random(SEED)
    bases = [
        doc
        for path in EXAMPLES
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "ModelDeployment"
    ]
    spec_fields = [f for f in fields(schema) if f.path[:1] == ("spec",) and len(f.path) > 1]
    cases: list[Case] = []
    for index in range(TOTAL):
        name = f"fz-{index:04d}"
        body = valid_variant(rng, rng.choice(bases), name)
        if rng.random() < VALID_SHARE:
            cases.append(Case(name, body, "valid", ""))
            continue
        present = [f for f in spec_fields if lookup(body, f.path)[0]]
        field = rng.choice(present)
        kind, value = rng.choice(mutations(field.schema, field.required))
        parent, key = container(body, field.path)
        if kind == "required":
            del parent[key]
            broken = field.path
        elif kind == "unknown":
            target = lookup(body, field.path)[1]
            target["fuzzExtra"] = rng.randint(0, 9)
            broken = (*field.path, "fuzzExtra")
        else:
            parent[key] = value
            broken = field.path
        cases.append(Case(name, body, kind, display(broken)))
    return cases


def names_field(message: str, path: str) -> bool:
    """Whether an API error message names ``path`` (or, for a rule on an object, the object
    that holds it, or its last key)."""
    flat = re.sub(r"\[\d+\]", "[0]", message)
    if path in flat:
        return True
    parts = path.split(".")
    return any(".".join(parts[:n]) in flat for n in range(len(parts), 2, -1)) or (
        f'"{parts[-1]}"' in message or f"{parts[-1]}:" in message or f".{parts[-1]}" in flat
    )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    for server in start_apiserver(tmp_path_factory.mktemp("fuzz-api"), "10.98.0.0/20"):
        install_crd(server, NAMESPACE, "modelship-system")
        yield server


@pytest.fixture(scope="module")
def operator(api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("fuzz-operator") / "operator.log"
    proc = start_operator("fuzz-operator", api.kubeconfig, log)
    try:
        yield log
        assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-4000:]}"
    finally:
        stop_process(proc)


def client(api: ApiServer) -> httpx.AsyncClient:
    url = re.search(r"server: '([^']+)'", api.kubeconfig.read_text())
    assert url is not None
    return httpx.AsyncClient(
        base_url=url.group(1),
        verify=False,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
        limits=httpx.Limits(max_connections=16),
    )


MDS = f"/apis/modelship.io/v1alpha2/namespaces/{NAMESPACE}/modeldeployments"


async def create_all(api: ApiServer, cases: list[Case]) -> dict[str, httpx.Response]:
    slots = asyncio.Semaphore(16)
    async with client(api) as http:

        async def one(case: Case) -> tuple[str, httpx.Response]:
            async with slots:
                answer = await http.post(MDS, json=case.body, params={"fieldValidation": "Strict"})
                return case.name, answer

        return dict(await asyncio.gather(*(one(c) for c in cases)))


async def wait_reconciled(api: ApiServer, names: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + RECONCILE_TIMEOUT
    async with client(api) as http:
        while True:
            items = (await http.get(MDS)).raise_for_status().json()["items"]
            found = {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in names}
            pending = [
                n
                for n, md in found.items()
                if (md.get("status") or {}).get("observedGeneration")
                != md["metadata"]["generation"]
            ]
            if not pending or time.monotonic() > deadline:
                return found
            await asyncio.sleep(2)


def test_fuzzed_resources_are_refused_by_field_or_reconciled(
    api: ApiServer, operator: Path
) -> None:
    cases = generate(crd_schema())
    kinds = Counter(c.kind for c in cases)
    assert len(cases) == TOTAL and kinds["valid"] > 250 and len(kinds) >= 8, kinds

    answers = asyncio.run(create_all(api, cases))
    refused_valid: list[str] = []
    unnamed: list[str] = []
    accepted_invalid: list[str] = []
    server_errors: list[str] = []
    accepted: set[str] = set()
    for case in cases:
        answer = answers[case.name]
        if answer.status_code >= 500:
            server_errors.append(f"{case.name}: {answer.status_code} {answer.text[:300]}")
        elif answer.status_code == 201:
            accepted.add(case.name)
            if case.kind in CERTAIN:
                accepted_invalid.append(f"{case.name}: {case.kind} at {case.field}")
        elif case.kind == "valid":
            refused_valid.append(f"{case.name}: {answer.text[:400]}")
        else:
            message = answer.json().get("message", "")
            if not names_field(message, case.field):
                unnamed.append(f"{case.name} ({case.kind} at {case.field}): {message[:400]}")
    assert not server_errors, server_errors[:5]
    assert not refused_valid, refused_valid[:5]
    assert not accepted_invalid, accepted_invalid[:10]
    assert not unnamed, unnamed[:10]

    found = asyncio.run(wait_reconciled(api, accepted))
    missing = sorted(accepted - found.keys())
    stuck = [
        n
        for n, md in found.items()
        if (md.get("status") or {}).get("observedGeneration") != md["metadata"]["generation"]
    ]
    assert not missing, missing[:10]
    assert not stuck, [(n, found[n].get("status")) for n in stuck[:5]]
    # A spec the API server took but the operator refuses says which field to fix.
    refused_by_operator = [
        (n, c.get("message", ""))
        for n, md in found.items()
        for c in (md.get("status") or {}).get("conditions") or []
        if c.get("reason") == "InvalidSpec"
    ]
    assert all("spec." in message for _, message in refused_by_operator), refused_by_operator[:5]

    log = operator.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    refused = TOTAL - len(accepted)
    print(
        f"\nresource fuzz: {TOTAL} generated ({kinds['valid']} valid), {refused} refused by the "
        f"API server naming the field, {len(accepted)} accepted and reconciled "
        f"({len(refused_by_operator)} refused by the operator), 0 stuck; kinds: {dict(kinds)}"
    )
