"""Simulated world: the slow database and third-party providers around the service.

The service is fast on a laptop; the world makes it behave like a real deployment: a round trip
injected per SQL statement (a networked database) and each provider's latency, jitter and
failure rate. Changes apply to every process within a second.
"""

from __future__ import annotations

import streamlit as st

from latency_lab.dashboard import data, panels


def main() -> None:
    st.title("Simulated world")
    st.caption(
        "What makes the lab behave like production: a networked database and slow, "
        "sometimes failing providers."
    )
    with panels.reporting_problems():
        live = data.world()
        panels.world_form(live)
        st.markdown(
            f"With these settings, the N+1 list page (301 statements) waits about "
            f"**{301 * live.db_round_trip_ms:,.0f} ms** on database round trips alone, and a "
            f"read waits **{live.analytics.latency_ms:,.0f} ms** for the analytics call "
            "unless `async_offload` is on."
        )


if __name__ == "__main__":
    main()
