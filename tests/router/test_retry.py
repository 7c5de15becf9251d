"""Which requests the router sends again after the first answer was cut off."""

from __future__ import annotations

import pytest
from modelship_router.retry import repeatable


@pytest.mark.parametrize(
    ("method", "url"),
    [
        (b"POST", b"/v1/models/churn:predict"),
        (b"POST", b"/v2/models/churn/infer"),
        (b"POST", b"/v2/models/churn/versions/3/infer?trace=1"),
        (b"GET", b"/v1/models/churn"),
        (b"HEAD", b"/v2/health/ready"),
    ],
)
def test_reads_and_predictions_are_repeatable(method: bytes, url: bytes) -> None:
    assert repeatable(method, url)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        (b"POST", b"/v1/models/churn:feedback"),
        (b"POST", b"/v1/models/churn:predict/extra"),
        (b"PUT", b"/v1/models/churn:predict"),
        (b"DELETE", b"/v2/models/churn"),
        (b"POST", b"/upload?next=/infer"),
    ],
)
def test_writes_are_not_repeated(method: bytes, url: bytes) -> None:
    assert not repeatable(method, url)
