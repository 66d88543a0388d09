#!/usr/bin/env python3
"""Generates deploy/grafana/ksight.json: a Grafana dashboard with a panel for every metric
family in docs/metrics.md's metric table (the one list of families, between its
`<!-- metrics:begin -->` and `<!-- metrics:end -->` lines; a test checks the two agree and runs
every panel query against a real Prometheus).

Run: python3 scripts/gen-dashboard.py > deploy/grafana/ksight.json
Queries use Grafana's $__rate_interval and the dashboard's $instance variable.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEL = 'instance=~"$instance"'
# Labels that make too many series to draw one line each: the top 10 by rate.
WIDE = {"comm", "syscall", "errno", "from", "to", "program", "map"}
# Labels a panel's lines are drawn by, per family (the first label otherwise); families
# with no labels are drawn per instance.
BY = {
    "ksight_process_killed_total": ["signal"],
    "ksight_signals_total": ["signal"],
    "ksight_file_opens_total": ["result"],
    "ksight_tcp_state_transitions_total": ["from", "to"],
    "ksight_block_io_bytes_total": ["device", "op"],
    "ksight_block_io_latency_seconds": ["device", "op"],
    "ksight_bpf_program_runs_total": ["collector", "program"],
}


def families():
    """(name, type, labels) from docs/metrics.md's metric table, in its order."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    start = text.index("| metric | type | labels | what |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([a-z_]+)`", cells[0])
        labels = [l.strip() for l in cells[2].split(",") if l.strip()]
        base = names[0]
        for name in names:
            if name.startswith("_"):  # `ksight_map_entries` / `_capacity`: same stem
                name = base.rsplit("_", 1)[0] + name
            kind = cells[1] or ("counter" if name.endswith("_total") else "gauge")
            rows.append((name, kind, labels))
    return rows


def series(name, labels):
    return f"{name}{{{SEL}}}"


def panel(name, kind, labels):
    by = BY.get(name, labels[:1])
    by_text = ", ".join(["instance"] + by) if by else "instance"
    legend = " ".join("{{%s}}" % l for l in (by or ["instance"]))
    if kind == "histogram":
        rate = f"rate({name}_bucket{{{SEL}}}[$__rate_interval])"
        targets = [
            (f"histogram_quantile({q}, sum by ({by_text}, le) ({rate}))", f"p{int(q * 100)} {legend}")
            for q in (0.5, 0.99)
        ]
        unit = "s"
    elif kind == "counter":
        expr = f"sum by ({by_text}) (rate({series(name, labels)}[$__rate_interval]))"
        if set(by) & WIDE:
            expr = f"topk(10, {expr})"
        if name == "ksight_bpf_program_run_seconds_total":
            runs = f"sum by ({by_text}) (rate(ksight_bpf_program_runs_total{{{SEL}}}[$__rate_interval]))"
            expr = f"topk(10, {expr} / {runs})"
            unit = "s"
        else:
            unit = "bytes" if name.endswith("bytes_total") else "ops"
            if name.endswith("_seconds_total"):
                unit = "s"
        targets = [(expr, legend)]
    else:  # gauge
        targets = [(series(name, labels), legend if by else "{{instance}}")]
        unit = "bytes" if name.endswith("_bytes") else ("s" if name.endswith("_seconds") else "short")
        if name.endswith("_timestamp_seconds"):
            targets = [(f"time() - {series(name, labels)}", f"since last success {legend}")]
    return {
        "type": "timeseries",
        "title": name,
        "description": f"{kind}: {name}" + (f" by {', '.join(by)}" if by else ""),
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend_format}
            for i, (expr, legend_format) in enumerate(targets)
        ],
    }


def dashboard():
    panels = []
    for i, (name, kind, labels) in enumerate(families()):
        p = panel(name, kind, labels)
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
        panels.append(p)
    return {
        "title": "ksight",
        "uid": "ksight",
        "description": "Kernel metrics from ksight serve; one panel per metric family.",
        "tags": ["ksight", "linux", "ebpf"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus",
                 "label": "Data source"},
                {"name": "instance", "type": "query", "label": "Instance",
                 "datasource": {"type": "prometheus", "uid": "${datasource}"},
                 "query": {"query": "label_values(ksight_build_info, instance)", "refId": "I"},
                 "definition": "label_values(ksight_build_info, instance)",
                 "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
                 "current": {"text": "All", "value": "$__all"}},
            ]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    json.dump(dashboard(), sys.stdout, indent=2)
    sys.stdout.write("\n")
