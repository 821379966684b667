"""``telemetry.configure`` honours the standard OpenTelemetry variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latency_lab import telemetry
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.processors import BatchSettings
from latency_lab.telemetry.store import TraceStore

VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _configure(
    store_url: str | None = None,
) -> tuple[telemetry.ProcessTelemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    lab = telemetry.configure(
        "latency-lab-test",
        role="service",
        store_url=store_url,
        processors=[SimpleSpanProcessor(exporter)],
    )
    return lab, exporter


def test_each_process_is_named_and_otel_service_name_wins(environment: pytest.MonkeyPatch) -> None:
    lab, exporter = _configure()
    with lab.tracer.start_as_current_span("work"):
        pass
    environment.setenv("OTEL_SERVICE_NAME", "checkout-api")
    renamed, renamed_exporter = _configure()
    with renamed.tracer.start_as_current_span("work"):
        pass

    [span] = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "latency-lab-test"
    assert span.resource.attributes[v.PROCESS_ROLE] == "service"
    [other] = renamed_exporter.get_finished_spans()
    assert other.resource.attributes["service.name"] == "checkout-api"


def test_sdk_disabled_records_nothing(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environment.setenv("OTEL_SDK_DISABLED", "true")
    store_url = f"sqlite:///{tmp_path / 'traces.db'}"

    lab, exporter = _configure(store_url=store_url)
    with lab.tracer.start_as_current_span("work") as span:
        assert not span.get_span_context().is_valid
    lab.shutdown()

    assert not lab.enabled
    assert isinstance(lab.tracer_provider, trace.NoOpTracerProvider)
    assert exporter.get_finished_spans() == ()
    assert not (tmp_path / "traces.db").exists()


@pytest.mark.parametrize(
    ("sampler", "argument", "recorded"),
    [
        ("always_off", None, 0),
        ("traceidratio", "0", 0),
        ("traceidratio", "1", 20),
        ("parentbased_always_on", None, 20),
    ],
)
def test_sampler_comes_from_the_environment(
    environment: pytest.MonkeyPatch,
    tmp_path: Path,
    sampler: str,
    argument: str | None,
    recorded: int,
) -> None:
    environment.setenv("OTEL_TRACES_SAMPLER", sampler)
    if argument is not None:
        environment.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    store_url = f"sqlite:///{tmp_path / 'traces.db'}"

    lab, exporter = _configure(store_url=store_url)
    for _ in range(20):
        with lab.tracer.start_as_current_span("work"):
            pass
    lab.shutdown()

    assert len(exporter.get_finished_spans()) == recorded
    assert TraceStore(store_url).create().counts()["spans"] == recorded


def test_batch_settings_come_from_otel_bsp(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    environment.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

    settings = BatchSettings.from_environment()

    assert (settings.max_queue_size, settings.schedule_delay_ms) == (64, 50)


def test_bad_bsp_values_fall_back_to_the_defaults(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")

    assert BatchSettings.from_environment().max_queue_size == BatchSettings().max_queue_size
