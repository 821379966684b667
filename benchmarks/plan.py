"""What one bench run measures: the configurations, and how many requests each gets."""

from __future__ import annotations

from dataclasses import dataclass

from latency_lab.core.toggles import ARTICLE_ORDER, EAGER_LOADERS, Toggles

# The article's "Measurable impact" numbers.
ARTICLE_LATENCY_MS = (500.0, 50.0)
ARTICLE_THROUGHPUT_RATIO = 2.0
ARTICLE_STATEMENTS = ("100+", "1")
# The list-size sweep's loaders: the article's before, its single JOIN, and the lab's others up
# to the database-built JSON (the default).
SWEEP_LOADERS = ("lazy", *EAGER_LOADERS)


@dataclass(frozen=True)
class Targets:
    """The figures the lab aims for (issues 5 and 15); the report says where one is missed."""

    leads_all_off_p50_ms: tuple[float, float] = (400.0, 650.0)
    leads_cache_hit_p50_ms: float = 5.0
    leads_no_cache_p50_ms: float = 15.0  # eager + offload, no caches, the default loader
    leads_no_cache_n500_p50_ms: float = 50.0  # the same for N = 500 (the sweep)
    throughput_ratio: float = 10.0
    telemetry_overhead_pct: float = 10.0
    queue_drain_s: float = 2.0  # after a load ends, until nothing is queued or running
    lab_pss_mb: float = 700.0  # the whole lab under load, shared pages counted once
    relay_idle_statements_per_5_s: float = 1.0
    dashboard_query_ms: float = 1000.0


TARGETS = Targets()


@dataclass(frozen=True)
class Configuration:
    name: str
    toggles: Toggles

    @property
    def header(self) -> str:
        return self.toggles.label()


def configurations() -> list[Configuration]:
    """All off; each toggle alone; the toggles added one by one in the article's order; all on.

    Duplicates (the first cumulative step is "eager_loading alone") are listed once.
    """
    candidates = [Configuration("all off", Toggles())]
    candidates += [
        Configuration(f"{toggle.value} alone", Toggles().replace(**{toggle.value: True}))
        for toggle in ARTICLE_ORDER
    ]
    cumulative = Toggles()
    for step, toggle in enumerate(ARTICLE_ORDER, start=1):
        cumulative = cumulative.replace(**{toggle.value: True})
        name = "all on" if step == len(ARTICLE_ORDER) else f"article step {step}: +{toggle.value}"
        candidates.append(Configuration(name, cumulative))
    seen: set[str] = set()
    unique = []
    for config in candidates:
        if config.header not in seen:
            seen.add(config.header)
            unique.append(config)
    return unique


@dataclass(frozen=True)
class BenchPlan:
    """Request counts and sizes; ``quick()`` is the CI smoke run, ``full()`` the real one."""

    quick: bool
    warmup: int
    mix_requests: int
    leads_requests: int
    concurrency: int
    sweep_sizes: tuple[int, ...]
    sweep_requests: int
    sweep_loaders: tuple[str, ...]
    overhead_requests: int
    ingest_writers: int
    ingest_spans_per_writer: int
    store_requests: int
    store_spans_per_request: int
    profiled_requests: int  # per configuration: where the application time goes
    queue_burst_requests: int  # uncached eager + offload reads at `concurrency`, then the drain
    relay_idle_window_s: float  # how long an idle outbox relay's statements are counted

    @classmethod
    def full(cls) -> BenchPlan:
        return cls(
            quick=False,
            warmup=20,
            mix_requests=200,
            leads_requests=100,
            concurrency=4,
            sweep_sizes=(10, 50, 100, 250, 500),
            sweep_requests=10,
            sweep_loaders=SWEEP_LOADERS,
            overhead_requests=300,
            ingest_writers=4,
            ingest_spans_per_writer=20_000,
            store_requests=100_000,
            store_spans_per_request=10,
            profiled_requests=10,
            queue_burst_requests=600,
            relay_idle_window_s=30.0,
        )

    @classmethod
    def smoke(cls) -> BenchPlan:
        return cls(
            quick=True,
            warmup=3,
            mix_requests=24,
            leads_requests=8,
            concurrency=4,
            sweep_sizes=(10, 100),
            sweep_requests=2,
            sweep_loaders=SWEEP_LOADERS,
            overhead_requests=30,
            ingest_writers=2,
            ingest_spans_per_writer=1_000,
            store_requests=2_000,
            store_spans_per_request=10,
            profiled_requests=2,
            queue_burst_requests=120,
            relay_idle_window_s=10.0,
        )
