"""The report's headline: what was evaluated (model and its generation settings, the reference
MD) and a short verdict per metric family against the MD replica, static and ANM baselines.

A verdict counts, over the family's metrics that have a better direction and a value in both
columns, where the method is better, equal at the table's three significant figures, or worse
than the baseline. It is a reading aid over the medians of the table, not a statistical test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from starmd.evaluate.report import METRICS, MetricsTable, format_value

VERDICT_BASELINES = ("md_replica", "static", "anm")
_NOT_SUBJECTS = {"md_reference", *VERDICT_BASELINES}
# Generation settings of the sidecar shown in the headline, in this order, with their labels.
_GENERATION_KEYS = (
    ("dt_ps", "dt (ps)"),
    ("frames", "frames"),
    ("replicas", "replicas"),
    ("steps", "denoising steps"),
    ("sampler", "sampler"),
    ("seed", "seed"),
)


@dataclass(frozen=True)
class Verdict:
    """One family's tally of a method against one baseline."""

    family: str
    method: str
    baseline: str
    better: int
    equal: int
    worse: int

    @property
    def compared(self) -> int:
        return self.better + self.equal + self.worse

    @property
    def cue(self) -> str:
        """``ahead`` (better on at least 60% counting ties as half), ``behind`` (at most 40%),
        else ``mixed``; empty when nothing was comparable."""
        if not self.compared:
            return ""
        share = (self.better + 0.5 * self.equal) / self.compared
        return "ahead" if share >= 0.6 else "behind" if share <= 0.4 else "mixed"

    def text(self) -> str:
        if not self.compared:
            return "not comparable"
        return f"{self.cue}: {self.better} better / {self.equal} equal / {self.worse} worse"


def family_name(section: str) -> str:
    """``"A. STAR-MD paper (reference: ...)"`` -> ``"A. STAR-MD paper"``."""
    return section.split(" (")[0]


def verdicts(table: MetricsTable, method: str) -> list[Verdict]:
    """Per metric family and baseline present in ``table``, how ``method`` compares."""
    out = []
    families = dict.fromkeys(s.section for s in METRICS if s.better)
    for section in families:
        specs = [s for s in METRICS if s.section == section and s.better]
        for baseline in VERDICT_BASELINES:
            if baseline not in table.methods or baseline == method:
                continue
            tally = {"better": 0, "equal": 0, "worse": 0}
            for spec in specs:
                mine = table.values.get(spec.key, {}).get(method, np.nan)
                theirs = table.values.get(spec.key, {}).get(baseline, np.nan)
                if not (np.isfinite(mine) and np.isfinite(theirs)):
                    continue
                if format_value(mine, spec.key) == format_value(theirs, spec.key):
                    tally["equal"] += 1
                elif (mine < theirs) == (spec.better == "lower"):
                    tally["better"] += 1
                else:
                    tally["worse"] += 1
            out.append(Verdict(family_name(section), method, baseline, **tally))
    return out


def subjects(table: MetricsTable) -> list[str]:
    """The methods the headline judges: the model and any user folder; the MD replica when
    only baselines were scored."""
    found = [m for m in table.methods if m not in _NOT_SUBJECTS]
    return found or (["md_replica"] if "md_replica" in table.methods else [])


def _distinct(values: list) -> str:
    seen = list(dict.fromkeys(values))
    return " / ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in seen)


def generation_provenance(sidecars: Sequence[Path | None]) -> dict[str, str]:
    """Model name and generation settings recorded in the generated folder's sidecar JSONs
    (``{name}.json`` written by ``starmd generate``); values that differ between proteins are
    listed with ``/``. Empty when no sidecar is readable."""
    records = []
    for path in sidecars:
        if path is None:
            continue
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    records = [r for r in records if isinstance(r, dict) and "settings" in r]
    if not records:
        return {}
    out = {"model": _distinct([Path(str(r.get("model", "?"))).stem for r in records])}
    for key, label in _GENERATION_KEYS:
        found = [r["settings"][key] for r in records if key in r["settings"]]
        if found:
            out[label] = _distinct(found)
    versions = [r["starmd_version"] for r in records if "starmd_version" in r]
    if versions:
        out["starmd version"] = _distinct(versions)
    return out


def reference_summary(results: list[dict]) -> str:
    """The reference MD in words: replicas, length and frame step (ranges over proteins)."""
    refs = [r["methods"].get("md_reference", {}) for r in results]
    refs = [r for r in refs if r.get("n_replicas") and r.get("dt_ps") and r.get("n_frames")]
    if not refs:
        return ""
    replicas = sorted({int(r["n_replicas"]) for r in refs})
    ns = [r["n_frames"] / r["n_replicas"] * r["dt_ps"] / 1000.0 for r in refs]
    steps = sorted({r["dt_ps"] for r in refs})
    length = f"{min(ns):.3g} ns" if min(ns) == max(ns) else f"{min(ns):.3g}-{max(ns):.3g} ns"
    return (
        f"{_span(replicas)} replica(s) of {length} each, frames every {_span(steps)} ps "
        f"(replica 2 is held out as the MD-replica baseline when present)"
    )


def _span(values: list) -> str:
    text = [f"{v:g}" for v in values]
    return text[0] if len(text) == 1 else f"{text[0]}-{text[-1]}"


def readable_settings(settings: dict) -> list[tuple[str, str]]:
    """``settings.json`` as (label, text) pairs for people: lists joined, empty values named."""
    labels = {
        "generated": "generated trajectories",
        "reference": "reference MD",
        "baselines": "baselines",
        "extra": "other methods",
        "proteins": "proteins",
        "lag_ps": "lag of tICA, VAMP-2 and MSM",
        "ensemble_frames": "frames per ensemble subset",
        "seed": "seed",
    }
    rows = []
    for key, value in settings.items():
        if key == "generated_with":
            continue
        if isinstance(value, dict):
            text = "; ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        elif isinstance(value, list | tuple):
            text = f"{len(value)}: " + ", ".join(map(str, value)) if value else "none"
        elif key == "lag_ps" and isinstance(value, int | float):
            text = f"{value:g} ps"
        elif key == "baselines":
            text = ", ".join(b for b in str(value).split(",") if b) or "none"
        else:
            text = str(value) if value not in ("", None) else "none"
        rows.append((labels.get(key, key.replace("_", " ")), text))
    return rows


@dataclass(frozen=True)
class Headline:
    """What was evaluated and how it fared, for the top of ``metrics.md`` and ``report.html``."""

    provenance: dict[str, dict[str, str]]
    reference: str
    n_proteins: int
    verdicts: list[Verdict]

    @classmethod
    def build(cls, table: MetricsTable, settings: dict, results: list[dict]) -> Headline:
        """From the aggregated table, the run's settings (``generated_with``: method ->
        :func:`generation_provenance`) and the per-protein results."""
        summary = reference_summary(results)
        reference = str(settings.get("reference", "?")) + (f": {summary}" if summary else "")
        judged = [v for m in subjects(table) for v in verdicts(table, m)]
        return cls(settings.get("generated_with", {}), reference, table.n_proteins, judged)

    def to_markdown(self) -> str:
        lines = ["# starmd evaluation", ""]
        for method, record in self.provenance.items():
            lines.append(f"- **{method}**: {_provenance_text(record)}")
        lines.append(f"- **reference MD**: {self.reference}")
        lines.append(f"- **proteins**: {self.n_proteins} (medians over proteins below)")
        if self.verdicts:
            baselines = list(dict.fromkeys(v.baseline for v in self.verdicts))
            lines += ["", "Verdict (metrics with a better direction, medians over proteins):", ""]
            lines.append("| method | family | " + " | ".join(f"vs {b}" for b in baselines) + " |")
            lines.append("|---|---|" + "---|" * len(baselines))
            for (method, family), row in _rows(self.verdicts).items():
                cells = " | ".join(row[b].text() if b in row else "" for b in baselines)
                lines.append(f"| {method} | {family} | {cells} |")
        return "\n".join(lines)

    def to_html(self) -> str:
        import html

        out = ["<div class='headline'><ul>"]
        for method, record in self.provenance.items():
            out.append(
                f"<li><b>{html.escape(method)}</b>: {html.escape(_provenance_text(record))}</li>"
            )
        out.append(f"<li><b>reference MD</b>: {html.escape(self.reference)}</li>")
        out.append(f"<li><b>proteins</b>: {self.n_proteins} (medians over proteins)</li></ul>")
        if self.verdicts:
            baselines = list(dict.fromkeys(v.baseline for v in self.verdicts))
            out.append("<table class='verdict'><tr><th>method</th><th>family</th>")
            out.append("".join(f"<th>vs {html.escape(b)}</th>" for b in baselines) + "</tr>")
            for (method, family), row in _rows(self.verdicts).items():
                cells = "".join(
                    f"<td class='{row[b].cue}'>{html.escape(row[b].text())}</td>"
                    if b in row
                    else "<td></td>"
                    for b in baselines
                )
                out.append(
                    f"<tr><td>{html.escape(method)}</td><td>{html.escape(family)}</td>{cells}</tr>"
                )
            out.append("</table>")
            out.append(
                "<p class='legend'>Counts over the family's metrics with a better direction "
                "(medians over proteins; equal = same value at three significant figures). "
                "<span class='ahead'>ahead</span> better on at least 60% (ties count half), "
                "<span class='behind'>behind</span> at most 40%, "
                "<span class='mixed'>mixed</span> in between.</p>"
            )
        out.append("</div>")
        return "".join(out)


def _provenance_text(record: dict[str, str]) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in record.items() if k != "model")
    return f"generated by {record.get('model', '?')} ({shown})"


def _rows(found: list[Verdict]) -> dict[tuple[str, str], dict[str, Verdict]]:
    rows: dict[tuple[str, str], dict[str, Verdict]] = {}
    for v in found:
        rows.setdefault((v.method, v.family), {})[v.baseline] = v
    return rows
