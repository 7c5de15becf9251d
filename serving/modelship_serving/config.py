"""Server settings: flags and ``MODELSHIP_*`` environment variables share one pydantic model."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server needs to know; each field is also ``MODELSHIP_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MODELSHIP_", extra="ignore", frozen=True)

    model_uri: str = Field(
        description="Where the model artifact lives: file://, http(s):// or s3://bucket/key."
    )
    model_sha256: str | None = Field(
        default=None, description="Expected sha256 of the artifact (hex); verified before loading."
    )
    model_name: str = Field(default="model", description="Name the model is served under.")
    model_version: str = Field(default="0", description="Version reported in headers and metrics.")
    variant: str = Field(default="stable", description="Rollout variant label (stable | canary).")
    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
    grpc_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol gRPC service (0: no gRPC).",
    )
    allow_unsafe_pickle: bool = Field(
        default=False,
        description="Allow loading a joblib/pickle artifact whose sha256 is not pinned.",
    )
    model_format: Literal["auto", "skops", "joblib", "pickle", "mlflow"] = Field(
        default="auto",
        description="Artifact format; auto detects skops (zip) vs pickle. mlflow: the URI is "
        "an MLflow model directory (its MLmodel file names the file and its format).",
    )
    trusted_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra type names skops may load (comma separated in the environment).",
    )
    model_cache_dir: str = Field(
        default="/tmp/modelship-models",
        description="Where http(s) artifacts are downloaded (a writable volume, e.g. emptyDir).",
    )
    download_timeout_seconds: float = Field(default=60.0, gt=0)
    download_attempts: int = Field(
        default=5, ge=1, le=20, description="Tries of a download that fails transiently."
    )
    model_max_bytes: int = Field(
        default=1 << 30,
        ge=1,
        description="Largest artifact downloaded (http(s) and s3); a larger one is refused.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint, e.g. http://seaweedfs:8333. Unset: "
        "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS S3.",
    )
    s3_region: str | None = Field(
        default=None, description="S3 region. Unset: AWS_REGION, AWS_DEFAULT_REGION, us-east-1."
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="auto: path-style with a custom endpoint, virtual-hosted on AWS S3.",
    )
    inference_path: Literal["auto", "sklearn"] = Field(
        default="auto",
        description="auto: use the accelerated path when one covers the model; sklearn: never.",
    )
    allow_non_finite: bool = Field(
        default=False, description="Accept NaN/Infinity in inputs (models that handle them)."
    )
    max_rows: int = Field(default=10_000, ge=1, description="Most rows in one request.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest body.")
    inline_max_rows: int = Field(
        default=256,
        ge=0,
        description="Requests with more rows run in a worker thread so probes stay responsive.",
    )
    prediction_store_size: int = Field(
        default=100_000, ge=0, description="Predictions kept for feedback (by request id)."
    )
    prediction_ttl_seconds: float = Field(
        default=3600.0, gt=0, description="How long a prediction waits for its feedback."
    )
    feedback_enabled: bool = Field(
        default=True,
        description="Take feedback (POST /v1/models/NAME:feedback); false: refused with 403.",
    )
    feedback_token_file: str | None = Field(
        default=None,
        description="File holding the access token feedback must carry in the "
        "x-modelship-token header (re-read at most once a second, so a rotated Secret "
        "applies; empty or missing: all feedback refused). Unset: no token needed.",
    )
    feedback_log_loss: bool = Field(
        default=False,
        description="Remember each predicted row's class probabilities and export the log "
        "loss of feedback (classifiers with predict_proba).",
    )
    feedback_score_classes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Classes whose probability of feedback rows is exported as a score "
        "histogram (one-vs-rest ROC AUC); a JSON list or comma separated in the environment.",
    )
    drift_max_features: int = Field(
        default=32, ge=0, description="Input features summarised for drift (first N, bounded)."
    )
    drift_window: int = Field(
        default=1024, ge=16, description="Recent rows kept to compute drift quantiles."
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="After SIGTERM: seconds to keep serving while readiness is false.",
    )
    graceful_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Most seconds to wait for in-flight requests on exit."
    )
    access_log: bool = Field(default=False, description="Log every request (costs throughput).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")

    @field_validator("model_sha256")
    @classmethod
    def _check_sha(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip().lower().removeprefix("sha256:")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("model_sha256 must be 64 hex characters")
        return value

    @field_validator("feedback_token_file")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("trusted_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("feedback_score_classes", mode="before")
    @classmethod
    def _split_classes(cls, value: object) -> object:
        # The operator renders a JSON list (a class name may hold a comma); by hand, commas.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    parsed = json.loads(text)
                except ValueError:
                    raise ValueError("feedback_score_classes is not a valid JSON list") from None
                if type(parsed) is not list:
                    raise ValueError("feedback_score_classes must be a list")
                return [str(item) for item in parsed]
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("model_name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/:?# "):
            raise ValueError("model_name must be non-empty without '/', ':', '?', '#' or spaces")
        return value
