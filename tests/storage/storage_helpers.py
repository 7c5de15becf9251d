"""What the S3 tests share: the store's identities and stored artifacts."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from modelship_cluster.seaweedfs import Identity

sys.path.append(str(Path(__file__).resolve().parents[1] / "serving"))

from serving_helpers import Artifact

READER = Identity("reader", "READERKEY0000001", "reader-secret-0001", ("Read", "List"))
#: May read the "models" bucket only.
SCOPED = Identity("scoped", "SCOPEDKEY0000001", "scoped-secret-0001", ("Read:models",))


def env_of(identity: Identity) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": identity.access_key, "AWS_SECRET_ACCESS_KEY": identity.secret_key}


@dataclass
class Stored(Artifact):
    """A model artifact stored in the object store under ``s3_uri``."""

    s3_uri: str = ""

    @property
    def uri(self) -> str:
        return self.s3_uri
