"""modelship model server: one scikit-learn model per process over KServe V1 and Open Inference
Protocol V2, with per-version Prometheus metrics and a verified, safe model loader."""

__all__ = ["__version__"]

__version__ = "0.1.0"
