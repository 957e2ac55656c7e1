"""Evaluation: the runs the evaluation notebook wrote, compared in a table and in charts, and a
form that starts a new run (`ragkit notebook run evaluate`) with its progress."""

from __future__ import annotations

import json
import shlex

import altair as alt
import pandas as pd
import streamlit as st

from ragkit.core.types import MAX_TOP_K, SEARCH_MODES
from ragkit.workbench.ui import common, connection, evaluation

JOB_KEY = "evaluation_job"
DATASETS = ("scifact", "arguana")



def grouped_bars(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Horizontal bars, one group per run: long run names stay readable on the y axis."""
    runs = list(dict.fromkeys(frame["run"]))
    modes = sorted(set(frame["mode"]))
    return (
        alt.Chart(frame, height=alt.Step(16))  # per bar: the chart grows with runs and modes
        .mark_bar()
        .encode(
            y=alt.Y("run:N", sort=runs, title=None, axis=alt.Axis(labelLimit=320)),
            yOffset=alt.YOffset("mode:N", sort=modes),
            x=alt.X("value:Q", title=title),
            color=alt.Color("mode:N", sort=modes, legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["run:N", "mode:N", alt.Tooltip("value:Q", format=".3f")],
        )
    )


st.title("Evaluation")
data_dir = connection.data_dir().resolve()
runs_dir = data_dir / "runs"
st.caption(f"Runs written by the evaluation notebook to `{runs_dir}/*/metrics.json`.")

runs, problems = evaluation.load_runs(runs_dir)
if problems:
    with st.expander(f"{len(problems)} run folder(s) could not be read", icon=":material/warning:"):
        for problem in problems:
            st.text(problem)

if not runs:
    st.info("No evaluation runs yet. Start one below, or run `ragkit notebook run evaluate`.")
else:
    names = [r.name for r in runs]
    left, right = st.columns([3, 2])
    chosen = left.multiselect("Runs", names, default=names[:6], key="eval_runs")
    table = evaluation.comparison_table([r for r in runs if r.name in chosen])
    all_modes = sorted(set(table["mode"])) if not table.empty else []
    modes = right.multiselect("Modes", all_modes, default=all_modes, key="eval_modes")
    table = table[table["mode"].isin(modes)]
    if table.empty:
        st.caption("Pick at least one run and one mode.")
    else:
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                **{m: st.column_config.NumberColumn(evaluation.METRIC_LABELS[m], format="%.3f")
                   for m in evaluation.QUALITY_METRICS},
                **{f"{p} ms": st.column_config.NumberColumn(f"{p} ms", format="%.1f")
                   for p in evaluation.LATENCY_METRICS},
            },
        )
        tabs = st.tabs([evaluation.METRIC_LABELS[m] for m in evaluation.QUALITY_METRICS] + ["Latency"])
        for tab, metric in zip(tabs, evaluation.QUALITY_METRICS, strict=False):
            with tab:
                frame = evaluation.chart_frame(table, metric)
                if frame.empty:
                    st.caption("No run reports this metric.")
                else:
                    st.altair_chart(grouped_bars(frame, evaluation.METRIC_LABELS[metric]), width="stretch")
        with tabs[-1]:
            percentile = st.segmented_control("Percentile", evaluation.LATENCY_METRICS, default="p95",
                                              key="eval_percentile", required=True) or "p95"
            frame = evaluation.chart_frame(table, percentile)
            if frame.empty:
                st.caption("No run reports latency.")
            else:
                st.altair_chart(grouped_bars(frame, f"{percentile} latency (ms)"), width="stretch")
        st.download_button(
            "Download this table as CSV", table.to_csv(index=False), "ragkit-evaluation.csv", mime="text/csv",
            icon=":material/download:", on_click="ignore",
        )
        with st.expander("Configuration of each run"):
            for run in runs:
                if run.name in chosen:
                    st.markdown(f"**{run.name}** · {run.dataset} · {run.created_at} · ragkit {run.ragkit_version}")
                    st.code(json.dumps(dict(run.config), indent=1, default=str), language="json")

st.divider()
st.subheader("Start a new run")
available, why_not = evaluation.notebook_command_available()
job: evaluation.EvaluationJob | None = st.session_state.get(JOB_KEY)
probe = common.last_probe()

if not available:
    st.info(f"Starting runs from here needs `ragkit notebook run`: {why_not}", icon=":material/info:")
elif not probe.ok:
    st.info("The evaluation talks to the ragkit service, which is not usable right now (see the other pages).")

with st.form("new_run", border=True):
    a, b, c = st.columns(3)
    dataset = a.selectbox(
        "Dataset", DATASETS, accept_new_options=True,
        help="A shared dataset's name, or the path of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)",
    )
    modes_to_run = b.multiselect("Modes", list(SEARCH_MODES), default=list(SEARCH_MODES))
    top_k = c.number_input("top_k (documents ranked per query)", min_value=1, max_value=MAX_TOP_K, value=100)
    a, b, c = st.columns(3)
    queries = a.number_input("Queries (a seeded sample)", min_value=1, max_value=1_000_000, value=50, step=50)
    all_queries = a.checkbox("Every test query", help="Slow on large datasets")
    documents = b.number_input("Documents (judged ones plus random others)", min_value=1, max_value=10_000_000,
                               value=300, step=100)
    whole_corpus = b.checkbox("The whole corpus", help="Ingests every document of the dataset once")
    collection = c.text_input("Collection", placeholder="named after the dataset and selection", max_chars=63)
    extra = st.text_area(
        "More parameters", placeholder="chunk_size=120\nchunk_overlap=20\ningest=False", height=80,
        help="One KEY=VALUE per line, passed as -p KEY VALUE (read like papermill -p: True, None, numbers, text)",
    )
    busy = job is not None and job.running
    start = st.form_submit_button("Start evaluation", type="primary", icon=":material/play_arrow:",
                                  disabled=not available or not probe.ok or busy)

if start:
    params, bad_lines = evaluation.parse_extra_parameters(extra)
    problems = list(bad_lines)
    if not modes_to_run:
        problems.append("Pick at least one mode.")
    if not str(dataset or "").strip():
        problems.append("Name a dataset.")
    for problem in problems:
        st.error(problem)
    if not problems:
        fixed = {
            "dataset": str(dataset).strip(),
            "modes": ",".join(modes_to_run),
            "top_k": int(top_k),
            "max_queries": None if all_queries else int(queries),
            "max_documents": None if whole_corpus else int(documents),
        }
        if collection.strip():
            fixed["collection"] = collection.strip()
        params = {**fixed, **params}  # a line in "More parameters" wins over the fields
        conn = common.connection()
        output_dir = evaluation.new_run_dir(data_dir)
        try:
            job = evaluation.start_evaluation(
                evaluation.evaluate_command(params, output_dir),
                data_dir / "logs",
                env={"RAGKIT_API_URL": conn.api_url, "INTER_SERVICE_SECRET": conn.token,
                     "RAGKIT_DATA_DIR": str(data_dir)},
                output_dir=output_dir,
            )
        except OSError as exc:
            st.error(f"The run could not be started: {exc}")
        else:
            st.session_state[JOB_KEY] = job
            st.session_state.pop("evaluation_announced", None)
            st.rerun()


@st.fragment(run_every=1.0 if job is not None and job.running else None)
def job_status() -> None:
    current: evaluation.EvaluationJob | None = st.session_state.get(JOB_KEY)
    if current is None:
        return
    st.caption("`" + shlex.join(current.command[2:]) + "`")  # from `ragkit`, without the interpreter
    progress = current.progress()
    if current.running:
        cells = current.cells()
        label = f"Running for {current.elapsed():.0f} s" + (
            f" · cell {cells[0]} of {cells[1]}" if cells else f" · {progress:.0%}" if progress is not None else ""
        )
        st.progress(progress or 0.0, text=label)
        if st.button("Stop the run", icon=":material/stop:"):
            current.stop()
            st.rerun(scope="app")
    else:
        failure = current.failure()
        if failure:
            st.error(failure, icon=":material/error:")
        else:
            st.success(f"The run finished in {current.elapsed():.0f} s; it is listed above.", icon=":material/check:")
        if not st.session_state.get("evaluation_announced"):
            # Once: a full rerun lists the new run and stops this fragment's timer.
            st.session_state["evaluation_announced"] = True
            st.rerun(scope="app")
    output = current.output().replace("\r", "\n")
    lines = [line for line in output.splitlines() if line.strip()][-12:]
    if lines:
        with st.expander("Output", expanded=current.running):
            st.code("\n".join(lines), language=None)


job_status()
