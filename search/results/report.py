"""`tumor-search report`: one self-contained HTML file that shows how a study went.

The page embeds plotly.js once and every figure as a plotly div, so it opens offline.
A figure the study cannot draw yet (too few trials, nothing varied) becomes a short
placeholder that says why; the report is written either way.
"""

from __future__ import annotations

import html
from pathlib import Path

from plotly.offline import get_plotlyjs

from search.results.outputs import write_result
from search.results.report_data import ReportData
from search.results.report_figures import MULTI_FIGURES, SEARCH_FIGURES, TEST_FIGURES, render_figure
from search.results.report_gradcam import gradcam_html
from search.results.report_tables import (
    best_trial_html,
    config_html,
    header_html,
    held_out_html,
)
from search.runtime.study import describe_storage, open_study

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
section.figure { margin: 1.5rem 0; }
.placeholder { border: 1px dashed #bbb; background: #fafafa; color: #666; padding: 2rem;
  text-align: center; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
"""


def build_report(data: ReportData, storage: str) -> tuple[str, int, int]:
    """The whole page, the number of figures drawn and the number of placeholders."""
    sections = [header_html(data, storage), best_trial_html(data), config_html(data)]
    sections.append("<h2>Search</h2>")
    builders = (*MULTI_FIGURES, *SEARCH_FIGURES) if data.multi else SEARCH_FIGURES
    figures = [render_figure(title, builder, data) for title, builder in builders]
    sections += [f.html for f in figures]
    if data.train_best:
        sections.append(held_out_html(data.train_best))
        test_figures = [render_figure(title, builder, data) for title, builder in TEST_FIGURES]
        sections += [f.html for f in test_figures]
        figures += test_figures
    sections.append(gradcam_html(data.train_best))
    drawn = sum(f.drawn for f in figures)
    title = html.escape(f"tumor-search report: {data.study.study_name}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script>{get_plotlyjs()}</script>\n</head>\n"
        f'<body data-figures="{drawn}" data-placeholders="{len(figures) - drawn}">\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    return page, drawn, len(figures) - drawn


def write_report(study_name: str, storage_url: str | None, out: Path) -> str:
    """Write the study's HTML report to `out` (atomically) and say what it holds.

    Args:
        study_name: The study to report on.
        storage_url: Its storage (None: the environment's or the default).
        out: The HTML file to write.

    Returns:
        A short summary such as ``"7 figures"`` or ``"4 figures, 2 placeholders"``.

    Raises:
        InputError: the storage or the study cannot be opened.
    """
    study, config = open_study(study_name, storage_url)
    data = ReportData(study, config, tuple(study.get_trials(deepcopy=False)))
    page, drawn, missing = build_report(data, describe_storage(storage_url))
    write_result(out, page.encode("utf-8"))
    summary = f"{drawn} figure{'s' if drawn != 1 else ''}"
    if missing:
        summary += f", {missing} placeholder{'s' if missing != 1 else ''}"
    return summary
