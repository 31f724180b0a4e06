"""The report's Grad-CAM panel: train-best's example overlays, embedded in the page.

train-best records on the study (user attribute ``train_best``) its output folder
(``out_dir``, absolute) and the records `search.results.explain.write_examples` returned
(``examples``: class, kind, predicted, probability, png relative to ``out_dir``). The panel
shows them as a grid, one row per class, the correctly and the wrongly classified example
side by side, each PNG as a base64 data URI so that the report stays one file. When there
is nothing to show it says why (no train-best yet, no examples, files not on this machine).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

HEADING = "<h2>Grad-CAM: where the model looked</h2>"
KINDS = (("correct", "correctly classified"), ("wrong", "misclassified"))
# Not the figures' "placeholder" class: the report counts those as figures it could not draw.
_NOTE = (
    '<div class="gradcam-missing" style="border: 1px dashed #bbb; background: #fafafa; '
    'color: #666; padding: 2rem; text-align: center;">{}</div>'
)
_CELL = (
    '<td><figure style="margin: 0;"><img src="data:image/png;base64,{data}" alt="{alt}" '
    'style="max-width: 256px; display: block;"><figcaption>{caption}</figcaption></figure></td>'
)


def _section(body: str) -> str:
    return f'<section class="gradcam">\n{HEADING}\n{body}\n</section>'


def _note(text: str) -> str:
    return _section(_NOTE.format(html.escape(text)))


def _png(out_dir: Path, relative: object) -> bytes | None:
    """The bytes of a PNG inside `out_dir`; None when missing or outside it."""
    if not isinstance(relative, str) or not relative.lower().endswith(".png"):
        return None
    path = (out_dir / relative).resolve()
    if not path.is_relative_to(out_dir.resolve()) or not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def _cell(record: dict[str, Any], payload: bytes) -> str:
    caption = (
        f"true {record.get('class')}, predicted {record.get('predicted')} "
        f"({float(record.get('probability') or 0.0):.1%})"
    )
    return _CELL.format(
        data=base64.b64encode(payload).decode("ascii"),
        alt=html.escape(f"Grad-CAM: {caption}", quote=True),
        caption=html.escape(caption),
    )


def _grid(records: list[dict[str, Any]], out_dir: Path) -> tuple[str, int]:
    """The per-class table and the number of images embedded."""
    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        if isinstance(record, dict):
            by_class.setdefault(str(record.get("class")), {})[str(record.get("kind"))] = record
    header = "".join(f"<th>{label}</th>" for _, label in KINDS)
    rows, embedded = [], 0
    for name, kinds in by_class.items():
        cells = []
        for kind, label in KINDS:
            record = kinds.get(kind)
            payload = _png(out_dir, record.get("png")) if record else None
            if payload is None:
                why = f"no {label} test image" if record is None else "image file missing"
                cells.append(f"<td>{html.escape(why)}</td>")
            else:
                cells.append(_cell(record, payload))
                embedded += 1
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    table = f"<table><tr><th>class</th>{header}</tr>\n" + "\n".join(rows) + "\n</table>"
    return table, embedded


def gradcam_html(train_best: dict[str, Any] | None) -> str:
    """The Grad-CAM section for a study's ``train_best`` attribute (None: not run yet)."""
    if not train_best:
        return _note("no train-best result yet: run tumor-search train-best to see examples")
    records = train_best.get("examples")
    if not records or not isinstance(records, list):
        return _note("train-best recorded no Grad-CAM examples")
    out_dir = train_best.get("out_dir")
    if not isinstance(out_dir, str) or not Path(out_dir).is_dir():
        return _note(f"train-best's output folder {out_dir} is not on this machine")
    table, embedded = _grid(records, Path(out_dir))
    if not embedded:
        return _note(f"the example images are not in {out_dir} on this machine")
    intro = (
        "<p>Per class, the test image classified correctly and the one misclassified with "
        "the highest confidence; red marks where the predicted class's evidence lies.</p>"
    )
    return _section(intro + "\n" + table)
