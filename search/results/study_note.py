"""The study's optuna-dashboard note, written in sections: each command that records a result
(finalize, train-best) owns one ``## `` section and replaces only that one, so the study's
description and the other commands' sections stay."""

from __future__ import annotations

from typing import Any

SECTION_MARK = "## "


def replace_section(note: str, heading: str, section: str) -> str:
    """`note` with the section whose heading line starts with `heading` replaced by
    `section` (appended when there is none). A section runs from its ``## `` line to the
    next one."""
    parts: list[str] = []
    current: list[str] = []
    for line in note.splitlines():
        if line.startswith(SECTION_MARK) and current:
            parts.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("\n".join(current))
    new = section.strip()
    kept = []
    replaced = False
    for part in parts:
        if part.startswith(heading):
            if not replaced:
                kept.append(new)
                replaced = True
            continue
        kept.append(part.strip())
    if not replaced:
        kept.append(new)
    return "\n\n".join(p for p in kept if p) + "\n"


def save_section(study: Any, heading: str, section: str) -> bool:
    """Replace one section of the study's dashboard note; False when optuna-dashboard is not
    installed (nothing written)."""
    try:
        import optuna_dashboard
    except ImportError:
        return False
    before = optuna_dashboard.get_note(study) or ""
    optuna_dashboard.save_note(study, replace_section(before, heading, section))
    return True
