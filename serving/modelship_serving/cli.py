"""``modelship-serve``: run the model server. Flags override ``MODELSHIP_*`` environment."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

from .config import Settings

# flag → (settings field, help); booleans are --flag / --no-flag.
_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--model-uri",
        "model_uri",
        {"help": "model artifact: file:///path, http(s)://... or s3://bucket/key"},
    ),
    ("--sha256", "model_sha256", {"help": "expected sha256 of the artifact; checked before load"}),
    ("--name", "model_name", {"help": "model name in URLs, headers and metrics (default: model)"}),
    ("--model-version", "model_version", {"help": "model version reported (default: 0)"}),
    ("--variant", "variant", {"help": "rollout variant label: stable | canary (default: stable)"}),
    ("--host", "host", {"help": "listen address (default: 0.0.0.0)"}),
    ("--port", "port", {"type": int, "help": "listen port (default: 8080)"}),
    (
        "--grpc-port",
        "grpc_port",
        {"type": int, "help": "gRPC (Open Inference Protocol) port; 0: no gRPC (default: 8081)"},
    ),
    (
        "--format",
        "model_format",
        {
            "choices": ["auto", "skops", "joblib", "pickle", "mlflow"],
            "help": "artifact format (auto); mlflow: an MLflow model directory",
        },
    ),
    (
        "--trusted-types",
        "trusted_types",
        {"help": "extra comma-separated type names skops may load"},
    ),
    ("--cache-dir", "model_cache_dir", {"help": "download dir for http(s) and s3 models"}),
    (
        "--max-model-bytes",
        "model_max_bytes",
        {"type": int, "help": "largest artifact downloaded (1 GiB)"},
    ),
    (
        "--download-attempts",
        "download_attempts",
        {"type": int, "help": "tries of a transiently failing download (5)"},
    ),
    (
        "--s3-endpoint-url",
        "s3_endpoint_url",
        {"help": "S3-compatible endpoint (else AWS_ENDPOINT_URL[_S3], else AWS S3)"},
    ),
    ("--s3-region", "s3_region", {"help": "S3 region (else AWS_REGION, else us-east-1)"}),
    (
        "--s3-addressing-style",
        "s3_addressing_style",
        {"choices": ["auto", "path", "virtual"], "help": "S3 request style (auto)"},
    ),
    (
        "--inference-path",
        "inference_path",
        {"choices": ["auto", "sklearn"], "help": "auto (accelerated when possible) | sklearn"},
    ),
    ("--max-rows", "max_rows", {"type": int, "help": "most rows per request (10000)"}),
    ("--max-body-bytes", "max_body_bytes", {"type": int, "help": "largest body (8 MiB)"}),
    (
        "--prediction-store-size",
        "prediction_store_size",
        {"type": int, "help": "predicted rows kept for feedback (100000; 0 disables)"},
    ),
    (
        "--prediction-ttl",
        "prediction_ttl_seconds",
        {"type": float, "help": "seconds a prediction waits for feedback (3600)"},
    ),
    (
        "--feedback-token-file",
        "feedback_token_file",
        {"help": "file with the token feedback must carry as x-modelship-token (none)"},
    ),
    ("--drain-seconds", "drain_seconds", {"type": float, "help": "serve after SIGTERM (5)"}),
    (
        "--graceful-timeout",
        "graceful_timeout_seconds",
        {"type": float, "help": "most seconds to finish in-flight requests on exit (30)"},
    ),
    (
        "--log-level",
        "log_level",
        {"choices": ["debug", "info", "warning", "error"], "help": "log level (info)"},
    ),
]
_BOOLS = [
    ("allow-unsafe-pickle", "allow_unsafe_pickle", "load an unpinned joblib/pickle (unsafe)"),
    ("allow-non-finite", "allow_non_finite", "accept NaN/Infinity in inputs"),
    ("access-log", "access_log", "log every request"),
    ("feedback", "feedback_enabled", "take feedback at :feedback (on; off: 403)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelship-serve",
        description=(
            "Serve one scikit-learn model over KServe V1 (/v1/models/NAME:predict) and the Open "
            "Inference Protocol V2 (/v2/models/NAME/infer), with Prometheus metrics at /metrics "
            "and probes at /v2/health/live and /v2/health/ready; the Open Inference Protocol's "
            "gRPC service (inference.GRPCInferenceService) on --grpc-port. Every flag can also be "
            "set through the environment as MODELSHIP_<SETTING>, e.g. MODELSHIP_MODEL_URI, "
            "MODELSHIP_MODEL_SHA256, MODELSHIP_MODEL_NAME, MODELSHIP_MODEL_VERSION, "
            "MODELSHIP_VARIANT; flags win. See docs/serving.md for every setting."
        ),
        argument_default=argparse.SUPPRESS,
    )
    for flag, field, options in _FLAGS:
        help_text = f"{options.pop('help')} [env MODELSHIP_{field.upper()}]"
        parser.add_argument(flag, dest=field, help=help_text, **options)
    for flag, field, text in _BOOLS:
        parser.add_argument(
            f"--{flag}",
            dest=field,
            action=argparse.BooleanOptionalAction,
            help=f"{text} [env MODELSHIP_{field.upper()}]",
        )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    try:
        settings = Settings(**args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        print(f"modelship-serve: invalid settings: {problems}", file=sys.stderr)
        print("(set --model-uri or MODELSHIP_MODEL_URI; see --help)", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .app import create_app
    from .server import serve

    raise SystemExit(serve(create_app(settings)))
