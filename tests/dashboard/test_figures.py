"""The charts as pure functions: what each one draws from the frames the data layer returns."""

from __future__ import annotations

import pandas as pd
import pytest

from latency_lab.core.toggles import Toggles
from latency_lab.dashboard import configs, data, figures, traces

OFF, EAGER = Toggles().label(), Toggles(eager_loading=True).label()
ALL_ON = Toggles.all_on().label()
T0 = pd.Timestamp("2026-01-15 10:00:00", tz="UTC")


def buckets(*rows: tuple[int, str, float, float]) -> pd.DataFrame:
    """Time series rows: (seconds after T0, configuration, p50, statements)."""
    frame = pd.DataFrame(
        [
            {
                "time": T0 + pd.Timedelta(seconds=s),
                "config": c,
                "p50_ms": p50,
                "p95_ms": p50 * 2,
                "requests": 10,
                "statements": statements,
                "first_ns": int((T0 + pd.Timedelta(seconds=s)).value) + i,
            }
            for i, (s, c, p50, statements) in enumerate(rows)
        ]
    )
    frame["label"] = frame["config"].map(configs.short_label)
    return frame


# --- configurations ------------------------------------------------------------------------------
def test_short_labels_name_the_switches_in_the_articles_order() -> None:
    assert configs.short_label(OFF) == "all off"
    assert configs.short_label(ALL_ON) == "all on"
    both = Toggles(eager_loading=True, redis_cache=True, async_offload=True).label()
    assert configs.short_label(both) == "eager + offload + L1"
    assert configs.short_label("") == configs.UNKNOWN
    assert configs.changes(EAGER, Toggles(redis_cache=True).label()) == "-eager +L1"


def test_flips_are_changes_of_configuration_between_consecutive_buckets() -> None:
    series = buckets(
        (0, OFF, 500, 301),
        (10, OFF, 480, 301),
        (20, EAGER, 60, 1),
        (20, OFF, 490, 301),
        (30, EAGER, 55, 1),
        (40, OFF, 470, 301),
    )
    # in the bucket at 20 s the old configuration came first: ordered by first request
    series.loc[3, "first_ns"] = series.loc[2, "first_ns"] - 1

    flips = configs.flips(series)

    assert flips["label"].tolist() == ["+eager", "-eager"]
    assert flips["time"].tolist() == [T0 + pd.Timedelta(seconds=20), T0 + pd.Timedelta(seconds=40)]
    assert configs.flips(series.iloc[:2]).empty


# --- over time -----------------------------------------------------------------------------------
def test_latency_over_time_colours_by_configuration_and_marks_flips() -> None:
    series = buckets((0, OFF, 500, 301), (10, OFF, 480, 301), (20, EAGER, 60, 1))
    figure = figures.latency_over_time(series, configs.flips(series))

    p50 = [t for t in figure.data if t.name in ("all off", "eager")]
    assert [t.name for t in p50] == ["all off", "eager"]
    assert p50[0].line.color == figures.BASELINE_COLOR
    assert list(p50[1].y) == [60]
    flip = next(t for t in figure.data if t.name == "toggle flip")
    assert list(flip.text) == ["+eager"] and flip.yaxis == "y2"  # on the top edge
    assert [a.text for a in figure.layout.annotations] == ["+eager"]
    assert figure.layout.yaxis.type == "log"


def test_statements_over_time_marks_flips_without_crowding_labels() -> None:
    series = buckets((0, OFF, 500, 301), (20, EAGER, 60, 1))
    figure = figures.statements_over_time(series, configs.flips(series))

    assert [list(t.y) for t in figure.data if t.name in ("all off", "eager")] == [[301], [1]]
    assert len(figure.layout.shapes) == 1 and not figure.layout.annotations


def test_hit_rates_per_layer_skip_layers_not_consulted() -> None:
    series = buckets((0, ALL_ON, 5, 1))
    series["hit_rate_edge"], series["hit_rate_redis"], series["hit_rate_app"] = 0.8, None, 0.5

    figure = figures.hit_rate_over_time(data.hit_rates_long(series))

    assert [t.name for t in figure.data] == ["edge (CDN)", "L2 app"]
    assert figure.layout.yaxis.tickformat == ".0%"


@pytest.mark.parametrize(
    "draw",
    [
        lambda: figures.latency_over_time(pd.DataFrame(), pd.DataFrame()),
        lambda: figures.statements_over_time(pd.DataFrame(), pd.DataFrame()),
        lambda: figures.hit_rate_over_time(pd.DataFrame()),
        lambda: figures.impact_bars(pd.DataFrame()),
        lambda: figures.time_by_kind(pd.DataFrame()),
        lambda: figures.span_counts(pd.DataFrame()),
        lambda: figures.waterfall(pd.DataFrame()),
        lambda: figures.job_durations(pd.DataFrame()),
    ],
)
def test_every_chart_explains_itself_when_empty(draw: object) -> None:
    figure = draw()  # type: ignore[operator]
    assert not figure.data
    assert figure.layout.annotations[0].text


# --- compare -------------------------------------------------------------------------------------
def test_impact_bars_put_the_fastest_on_top_with_the_ratio() -> None:
    summary = pd.DataFrame(
        {
            "config": [OFF, EAGER, ALL_ON],
            "label": ["all off", "eager", "all on"],
            "p50_ms": [500.0, 100.0, 10.0],
            "p95_ms": [900.0, 200.0, 20.0],
            "requests_per_s": [8.0, 30.0, 100.0],
            "statements": [301.0, 1.0, 0.5],
        }
    )
    table = data.impact_table(summary)
    figure = figures.impact_bars(table)

    assert table["speedup"].tolist() == [
        "1.0\u00d7 baseline",
        "5.0\u00d7 faster",
        "50.0\u00d7 faster",
    ]
    assert table["throughput_vs_baseline"].tolist() == [1.0, 3.75, 12.5]
    bars = figure.data[0]
    assert list(bars.y) == ["all on", "eager", "all off"]
    assert list(bars.marker.color) == [
        figures.ALL_ON_COLOR,
        figures.config_color(EAGER),
        figures.BASELINE_COLOR,
    ]


def test_time_by_kind_stacks_kinds_with_background_apart() -> None:
    breakdown = pd.DataFrame(
        {
            "config": [OFF, OFF, ALL_ON, ALL_ON],
            "label": ["all off", "all off", "all on", "all on"],
            "kind": ["database", "third_party", "cache", traces.BACKGROUND],
            "time_ms": [240.0, 100.0, 1.0, 80.0],
            "spans": [301.0, 1.0, 1.0, 3.0],
        }
    )
    figure = figures.time_by_kind(breakdown)

    assert [t.name for t in figure.data] == [
        "database",
        "cache",
        "third party",
        "background job (off the request path)",
    ]
    assert figure.layout.barmode == "stack"
    assert figure.data[-1].marker.pattern.shape == "/"
    counts = figures.span_counts(breakdown)
    assert [t.name for t in counts.data] == ["all off", "all on"]
    assert list(counts.data[0].y) == [301.0, 1.0]


# --- one trace -----------------------------------------------------------------------------------
def test_waterfall_outlines_n_plus_one_rows_and_flags_their_labels() -> None:
    segments = pd.DataFrame(
        {
            "row": [0, 1, 1, 1, 2],
            "label": [
                "service: GET /api/leads",
                *["SQL … (Lead.owner) \u00d73"] * 3,
                "third_party.call email",
            ],
            "start_ms": [0.0, 1.0, 2.0, 3.0, 4.0],
            "duration_ms": [10.0, 0.5, 0.5, 0.5, 5.0],
            "kind": ["application", "database", "database", "database", "third_party"],
            "detail": ["a", "b", "b", "b", "c"],
            "n_plus_one": [False, True, True, True, False],
        }
    )
    figure = figures.waterfall(segments)

    database = next(t for t in figure.data if t.name == "database")
    assert list(database.marker.line.color) == [figures.N_PLUS_ONE_COLOR] * 3
    assert list(database.y) == [1, 1, 1]  # one row, three ticks
    ticks = list(figure.layout.yaxis.ticktext)
    assert "⚠" in ticks[1] and "⚠" not in ticks[0]
    assert figure.layout.yaxis.autorange == "reversed"


def test_job_durations_show_waiting_and_running_per_task() -> None:
    finished = pd.DataFrame(
        {
            "task": ["send_owner_email", "track_event"],
            "wait_ms": [12.0, 30.0],
            "run_ms": [80.0, 40.0],
        }
    )
    figure = figures.job_durations(finished)

    assert sorted(t.name for t in figure.data) == ["running", "waiting in the queue"]


def test_log_ticks_get_denser_when_the_data_spans_less_than_a_decade() -> None:
    assert {1.0, 2.0, 5.0, 100.0, 500.0} <= set(figures.log_ticks(1.5, 900))
    assert 300.0 not in figures.log_ticks(1.5, 900)
    assert {700.0, 1000.0, 1500.0} <= set(figures.log_ticks(800, 1400))
