"""The lead service's application factory: ``create_app(settings)``.

gunicorn runs it as ``'latency_lab.service.app:create_app()'`` (settings from the environment);
tests pass their own settings and telemetry.
"""

from __future__ import annotations

import atexit

from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from latency_lab import telemetry
from latency_lab.core import errors
from latency_lab.core.settings import Settings
from latency_lab.service import admin, api, request_scope, site
from latency_lab.service.context import EXTENSION_KEY, ServiceContext

# Health checks poll constantly and the dashboard polls the admin API: tracing them would bury the
# requests people look at (and count as zero-statement requests in the figures).
UNTRACED_URLS = "healthz,admin/,static/favicon"


def create_app(
    settings: Settings | None = None, *, lab_telemetry: telemetry.ProcessTelemetry | None = None
) -> Flask:
    settings = settings or Settings()
    lab_telemetry = lab_telemetry or telemetry.configure(
        "latency-lab-service", role="service", **settings.telemetry_options()
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    FlaskInstrumentor().instrument_app(
        app, tracer_provider=lab_telemetry.tracer_provider, excluded_urls=UNTRACED_URLS
    )
    service = ServiceContext.build(settings, lab_telemetry)
    app.extensions[EXTENSION_KEY] = service
    errors.init_app(app)
    request_scope.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(site.bp)
    atexit.register(lab_telemetry.shutdown)
    return app
