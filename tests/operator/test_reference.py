"""docs/reference.md is generated from the CRD and names every field."""

from __future__ import annotations

from pathlib import Path

from modelship_operator import reference
from modelship_operator.crd import resource_schema

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_committed_reference_matches_the_crd() -> None:
    assert REFERENCE.read_text() == reference.render_markdown(), (
        "docs/reference.md is stale: run "
        "`.venv/bin/python -m modelship_operator.reference > docs/reference.md`"
    )


def test_every_spec_and_status_field_is_documented() -> None:
    text = reference.render_markdown()
    schema = resource_schema()

    def fields(node: dict, path: str) -> list[tuple[str, str]]:  # type: ignore[type-arg]
        found = []
        for name, sub in node.get("properties", {}).items():
            found.append((path, name))
            found += fields(sub, f"{path}.{name}")
            if "items" in sub:
                found += fields(sub["items"], f"{path}.{name}[]")
        return found

    for root in ("spec", "status"):
        for path, name in fields(schema["properties"][root], root):
            section = text.split(f"### `{path}`\n", 1)
            assert len(section) == 2, f"no section for {path}"
            assert f"| `{name}`" in section[1].split("### ", 1)[0], f"{path}.{name} missing"
