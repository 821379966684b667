"""The Latency Lab dashboard: ``streamlit run dashboard/app.py`` (``latency-lab up`` runs it).

This entry point is the frame around every page: page setup, the navigation (one file per page
under ``dashboard/views``), and the sidebar every page shares (time window, the five switches,
the load generator, the lab's status). The folder is not called ``pages``: Streamlit treats a
``pages/`` folder next to the entry point as the old automatic navigation until the first
``st.navigation`` call, so a deep link (``/compare``) opened first would run that page bare.
Pages only arrange sections and charts; data comes from :mod:`latency_lab.dashboard.data`, charts
from
:mod:`latency_lab.dashboard.figures`.

Configuration comes from the lab's settings (``LAB_TRACE_STORE_URL``, ``LAB_SERVICE_URL``,
``REDIS_URL``, ``LAB_ADMIN_TOKEN``, ``LAB_VAR_DIR``). No traceback reaches the page: the data
layer's errors become a message saying what to do, and anything unexpected is logged on the
server and reported in one line.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from latency_lab.dashboard import data, panels

VIEWS = Path(__file__).resolve().parent / "views"


def navigation() -> dict[str, list[st.Page]]:
    """The pages, each at its own URL (``/live``, ``/compare``, ...).

    Streamlit serves its default page at ``/`` whatever its ``url_path``, so ``/live`` would be
    "page not found": the default is instead a hidden page that opens Live at ``/live`` (query
    parameters kept), and every URL in the address bar is one that can be shared.
    """

    def page(name: str, title: str, icon: str) -> st.Page:
        return st.Page(VIEWS / f"{name}.py", title=title, icon=icon, url_path=name)

    live = page("live", "Live", ":material/monitoring:")

    def front_door() -> None:
        st.switch_page(live, query_params=st.query_params.to_dict())

    return {
        "Watch": [
            st.Page(front_door, title="Live", url_path="front", default=True, visibility="hidden"),
            live,
            page("compare", "Compare configurations", ":material/compare_arrows:"),
            page("trace_explorer", "Trace explorer", ":material/account_tree:"),
            page("jobs", "Background jobs", ":material/work_history:"),
        ],
        "Learn": [page("tour", "Guided tour", ":material/school:")],
        "Configure": [page("world", "Simulated world", ":material/public:")],
    }


def sidebar() -> None:
    with st.sidebar:
        panels.window_picker()
        with panels.reporting_problems():
            panels.toggle_switches()
        with (
            st.expander("Drive load", expanded=True, icon=":material/speed:"),
            panels.reporting_problems(),
        ):
            panels.load_panel()
        lab_status()


def lab_status() -> None:
    """One line per part of the lab: where it is and whether it answers; then the processes of
    the running ``latency-lab up`` (its ``var/lab.json``): state and restarts, refreshed every
    few seconds, with a clear message for any process that is down or not responding."""
    with panels.reporting_problems():
        lab = data.settings()
        counts = data.store_counts()
        st.caption(
            f"Service {lab.resolved_service_url} · edge {lab.edge_url}  \n"
            f"Trace store: {counts['requests']:,} requests, {counts['spans']:,} spans"
        )

    @st.fragment(run_every=5)
    def processes() -> None:
        from latency_lab.lab.lab_info import process_statuses, read_lab_info  # psutil: only here

        with panels.reporting_problems():
            info = read_lab_info(data.settings())
            if info is None:
                st.caption("Processes: no `latency-lab up` runs from this LAB_VAR_DIR.")
                return
            statuses = process_statuses(info)
            st.dataframe(
                [{"process": p.name, "state": p.state, "restarts": p.restarts} for p in statuses],
                hide_index=True,
                key="lab_processes",
            )
            for p in statuses:
                log = f"{info.log_dir}/{p.name}.log"
                if p.state == "down":
                    st.error(
                        f"**{p.name} is down**: it kept dying (last: it {p.last_exit}) and "
                        f"is not started again. The lab goes on without it; see {log}.",
                        icon=":material/error:",
                    )
                elif p.state == "not responding":
                    st.warning(
                        f"**{p.name} is not responding** (pid {p.pid}): it runs but does "
                        "not answer (stopped, or hung).",
                        icon=":material/warning:",
                    )

    processes()


def run(page: st.Page) -> None:
    """Run the page; a problem becomes a message, never a traceback."""
    with panels.reporting_problems():
        page.run()


def main() -> None:
    st.set_page_config(page_title="Latency Lab", page_icon=":material/speed:", layout="wide")
    st.set_option("client.showErrorDetails", "none")
    page = st.navigation(navigation())
    sidebar()
    run(page)


if __name__ == "__main__":
    main()
