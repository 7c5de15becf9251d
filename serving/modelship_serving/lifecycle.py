"""The model's lifecycle in one server process: load in the background, install, drain.

What the probes report (ready, the reason when not) and what the handlers serve (the data
plane) live here, apart from HTTP. ``ModelServerApp`` subscribes to installs to open its fast
lanes; the uvicorn server sets ``on_load_failure`` to exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import anyio.to_thread

from .config import Settings
from .dataplane import DataPlane
from .errors import ModelLoadError, ServingError
from .fastpath import choose_path, quiet_feature_name_warnings
from .loading import LoadedModel, load_model
from .metrics import ServingMetrics
from .profile import align
from .quality import plan_quality

log = logging.getLogger("modelship.serving")


class ModelLifecycle:
    """Loading, readiness and drain of the one served model."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dataplane: DataPlane | None = None
        self.load_error: str | None = None
        self.draining = False
        self.on_load_failure: Callable[[str], None] | None = None
        self.on_install: list[Callable[[DataPlane], None]] = []
        self._task: asyncio.Task[None] | None = None

    # -- state the probes report ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.dataplane is not None and not self.draining

    def not_ready_reason(self) -> str:
        if self.load_error:
            return f"model failed to load: {self.load_error}"
        if self.draining:
            return "shutting down: draining in-flight requests"
        return "model is loading"

    def begin_drain(self) -> None:
        """Readiness turns false first; requests keep being served until the server stops."""
        if not self.draining:
            log.info("drain started: readiness is now false, in-flight requests will finish")
        self.draining = True
        self.metrics.ready.set(0)

    def plane_for(self, name: str, version: str | None = None) -> DataPlane:
        """The data plane serving ``name`` (and ``version``), or the 404 / 503 saying why not."""
        settings = self.settings
        if name != settings.model_name:
            raise ServingError(
                404,
                f"model {name!r} is not served here; this server serves {settings.model_name!r}",
            )
        if version is not None and version != settings.model_version:
            raise ServingError(
                404,
                f"version {version!r} of {name!r} is not served here; "
                f"this server serves version {settings.model_version!r}",
            )
        plane = self.dataplane
        if plane is None:
            raise ServingError(503, self.not_ready_reason())
        return plane

    # -- loading -------------------------------------------------------------------------------

    def install(self, loaded: LoadedModel) -> DataPlane:
        """Serve a loaded model: choose its inference path, publish metrics, tell subscribers."""
        settings = self.settings
        path = choose_path(loaded.estimator, settings.inference_path, loaded.signature)
        sig = loaded.signature
        quality = plan_quality(
            settings.feedback_log_loss,
            settings.feedback_score_classes,
            estimator_type=sig.estimator_type,
            has_predict_proba=sig.has_predict_proba,
            classes=sig.classes,
        )
        for warning in quality.warnings:
            log.warning("%s", warning)
        self.metrics.model_loaded(
            sha256=loaded.sha256,
            sklearn_version=sig.sklearn_version_runtime,
            sklearn_saved_version=sig.sklearn_version_saved,
            inference_path=path.name,
            estimator=sig.estimator_class,
            load_seconds=loaded.load_seconds,
            classes=sig.classes,
            feature_names=sig.drift_features()[: settings.drift_max_features],
            drift_window=settings.drift_window,
            quality=quality,
        )
        plane = DataPlane(settings, loaded, path, self.metrics, quality)
        self.dataplane = plane
        for subscriber in self.on_install:
            subscriber(plane)
        self._use_reference(loaded)
        if not self.draining:
            self.metrics.ready.set(1)
        log.info(
            "serving %s version %s (%s, %s, sha256 %s, inference path %s) loaded in %.3fs",
            settings.model_name,
            settings.model_version,
            sig.estimator_class,
            loaded.artifact_format,
            loaded.sha256[:12],
            path.name,
            loaded.load_seconds,
        )
        return plane

    def _use_reference(self, loaded: LoadedModel) -> None:
        """Hand the profile saved with the model to the drift summary, matched to its
        features (by name; by position for a model without column names)."""
        drift = self.metrics.drift
        if loaded.reference is None or drift is None:
            return
        sig = loaded.signature
        names = sig.drift_features()[: self.settings.drift_max_features]
        positional = None if sig.tabular or sig.feature_names else sig.n_features
        references, warning = align(loaded.reference, names, positional)
        if warning is not None:
            log.warning("drift reference of %s: %s", self.settings.model_uri, warning)
        drift.use_reference(references)

    def start(self) -> None:
        """Begin loading in the background (the event loop runs); no-op once installed."""
        quiet_feature_name_warnings()
        if self.dataplane is None and self._task is None:
            self._task = asyncio.create_task(self._load())

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _load(self) -> None:
        try:
            loaded = await anyio.to_thread.run_sync(load_model, self.settings)
            self.install(loaded)
            # The libraries and the model live as long as the process: move them out of the
            # collector's sight, so a full collection scans only what requests allocate
            # instead of pausing the server for tens of milliseconds every few seconds.
            gc.collect()
            gc.freeze()
        except ModelLoadError as exc:
            self._failed(str(exc))
        except Exception as exc:
            log.exception("unexpected error while loading the model")
            self._failed(f"unexpected error: {exc!r}")

    def _failed(self, reason: str) -> None:
        self.load_error = reason
        log.error("cannot serve the model: %s", reason)
        if self.on_load_failure is not None:
            self.on_load_failure(reason)
