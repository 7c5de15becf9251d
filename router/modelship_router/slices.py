"""Pure translation of EndpointSlice objects (discovery.k8s.io/v1, as JSON) to addresses.

Kept apart from the watch so the rules (which endpoints count as ready, which port is
used) are tested table-driven, without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Address = tuple[str, int]


def service_of(slice_obj: Mapping[str, Any]) -> str | None:
    """The Service an EndpointSlice belongs to (its ``kubernetes.io/service-name`` label)."""
    labels = slice_obj.get("metadata", {}).get("labels") or {}
    name = labels.get(SERVICE_NAME_LABEL)
    return name if isinstance(name, str) else None


def select_port(ports: Iterable[Mapping[str, Any]], wanted: int | str | None) -> int | None:
    """The slice port number to use.

    ``wanted`` is a port name (str), a port number (int), or None for the first port
    (Services for model servers normally have exactly one).
    """
    for port in ports:
        number = port.get("port")
        if not isinstance(number, int):
            continue
        if wanted is None:
            return number
        if isinstance(wanted, str) and port.get("name") == wanted:
            return number
        if isinstance(wanted, int) and number == wanted:
            return number
    return None


def is_ready(endpoint: Mapping[str, Any]) -> bool:
    """Ready per the API: ``conditions.ready`` true, or unset (which means ready)."""
    ready = (endpoint.get("conditions") or {}).get("ready")
    return ready is None or ready is True


def ready_addresses(slice_obj: Mapping[str, Any], wanted_port: int | str | None) -> list[Address]:
    """Addresses of a slice's ready endpoints on the selected port (empty if no such port).

    An endpoint's addresses are fungible: the first one is used.
    """
    port = select_port(slice_obj.get("ports") or [], wanted_port)
    if port is None:
        return []
    result: list[Address] = []
    for endpoint in slice_obj.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        if addresses and is_ready(endpoint):
            result.append((str(addresses[0]), port))
    return result


def service_addresses(
    slices: Iterable[Mapping[str, Any]], service: str, wanted_port: int | str | None
) -> list[Address]:
    """Sorted, de-duplicated ready addresses of ``service`` across all of its slices."""
    found: set[Address] = set()
    for slice_obj in slices:
        if service_of(slice_obj) == service:
            found.update(ready_addresses(slice_obj, wanted_port))
    return sorted(found)
