"""`<sweep dir>/sweep_report.html`: a multirun at a glance, offline.

The jobs' table (sortable by any column), each swept hyper-parameter against val/mIoU, the
failed jobs with their error, and a link to each job's own report.html. Built from the job
directories alone (`<job>/.hydra/overrides.yaml`, `<job>/metrics.json`), so
`seglab report SWEEP_DIR` redraws it; `collect_jobs` is also what sweep_summary.csv is made of.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from seglab.atomic import atomic_write_text
from seglab.report.charts import scatter
from seglab.report.html import Raw, escape, number, page, table

SWEEP_REPORT_FILE = "sweep_report.html"
SUMMARY_METRICS = ("val/mIoU", "val/mDice", "val/pixel_acc", "val/loss", "test/mIoU")
OBJECTIVE = "val/mIoU"


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per job directory (`<n>/.hydra/overrides.yaml`) in job order: its name, status
    (ok | failed | incomplete), the overrides that tell the jobs apart (those common to all
    are in every job's config) as text and as a {key: value} dict, its error, its metrics."""
    jobs = sorted(
        (p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/overrides.yaml")),
        key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
    )
    if not jobs:
        return []
    overrides = {job: list(OmegaConf.load(job / ".hydra" / "overrides.yaml")) for job in jobs}
    shared = set.intersection(*(set(o) for o in overrides.values()))
    rows = []
    for job in jobs:
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        status = metrics.get("status") or ("ok" if OBJECTIVE in metrics else "incomplete")
        varying = [o for o in overrides[job] if o not in shared or len(jobs) == 1]
        rows.append(
            {
                "job": job.name,
                "dir": job,
                "status": status,
                "overrides": " ".join(varying),
                "params": dict(o.split("=", 1) for o in varying if "=" in o),
                "error": metrics.get("error") or _last_error_line(job / "error.txt"),
                "metrics": metrics,
            }
        )
    return rows


def write_sweep_report(sweep_dir: str | Path) -> Path | None:
    """Render sweep_report.html; None when the folder holds no job directory."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        return None
    params = list(dict.fromkeys(k for job in jobs for k in job["params"]))
    finished = [j for j in jobs if _objective(j) is not None]
    best = max(finished, key=_objective, default=None)
    failed = [j for j in jobs if j["status"] != "ok"]
    head = (
        f"<h1>seglab sweep <code>{escape(sweep_dir.name)}</code></h1>"
        f'<p class="muted">{escape(sweep_dir.resolve())}</p>'
        f"<p>{len(jobs)} jobs: <span class=ok>{len(jobs) - len(failed)} ok</span>, "
        f"<span class=failed>{len(failed)} not</span>."
        + (
            f" Best {OBJECTIVE}: <b>{number(_objective(best))}</b>, job {escape(best['job'])} "
            f"(<code>{escape(best['overrides'] or 'the defaults')}</code>)."
            if best
            else ""
        )
        + "</p>"
    )
    headers = ["job", "status", *params, *SUMMARY_METRICS]
    rows = [
        [_job_link(sweep_dir, j), j["status"], *(j["params"].get(p, "") for p in params),
         *(number(j["metrics"].get(m)) for m in SUMMARY_METRICS)]
        for j in jobs
    ]  # fmt: skip
    numeric = [False, False, *[False] * len(params), *[True] * len(SUMMARY_METRICS)]
    summary = "<h2>Jobs</h2><p>Click a column to sort.</p>" + table(
        headers, rows, numeric, css_id="jobs"
    )
    body = [head, summary, _parameter_charts(finished, params), _failures(failed)]
    text = page(f"seglab sweep {sweep_dir.name}", "\n".join(b for b in body if b))
    return atomic_write_text(sweep_dir / SWEEP_REPORT_FILE, text)


def _parameter_charts(finished: list[dict[str, Any]], params: list[str]) -> str:
    charts = []
    for param in params:
        values = [j["params"].get(param) for j in finished]
        numbers = [_float(v) for v in values]
        tips = [f"job {j['job']}: {param}={v}, {OBJECTIVE} {_objective(j):.4f}"
                for j, v in zip(finished, values, strict=True)]  # fmt: skip
        if all(n is not None for n in numbers) and len(set(numbers)) > 1:
            points = [
                (n, _objective(j), t) for n, j, t in zip(numbers, finished, tips, strict=True)
            ]
            charts.append(scatter(points, param, OBJECTIVE))
        else:
            categories = list(dict.fromkeys(str(v) for v in values))
            points = [(categories.index(str(v)), _objective(j), t)
                      for v, j, t in zip(values, finished, tips, strict=True)]  # fmt: skip
            charts.append(scatter(points, param, OBJECTIVE, x_categories=categories))
    if not charts:
        return ""
    return f'<h2>Parameters</h2><div class="row" id="parameters">{"".join(charts)}</div>'


def _failures(failed: list[dict[str, Any]]) -> str:
    if not failed:
        return ""
    items = "".join(
        f"<li>job {escape(j['job'])} (<code>{escape(j['overrides'])}</code>): "
        f'<span class="failed">{escape(j["error"] or j["status"])}</span></li>'
        for j in failed
    )
    return (
        f"<h2>Failed jobs</h2><ul id=failures>{items}</ul>"
        "<p>Tracebacks: <code>&lt;job&gt;/error.txt</code>.</p>"
    )


def _job_link(sweep_dir: Path, job: dict[str, Any]) -> Raw:
    report = job["dir"] / "report.html"
    if report.is_file():
        href = report.relative_to(sweep_dir).as_posix()
        return Raw(f'<a href="{escape(href)}">{escape(job["job"])}</a>')
    return Raw(escape(job["job"]))


def _objective(job: dict[str, Any] | None) -> float | None:
    value = (job or {}).get("metrics", {}).get(OBJECTIVE)
    return None if value is None or math.isnan(float(value)) else float(value)


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _last_error_line(path: Path) -> str | None:
    """The exception line of a traceback file (its last line that is not indented)."""
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln]
    unindented = [ln for ln in lines if not ln.startswith((" ", "\t"))]
    return (unindented or lines or [None])[-1]
