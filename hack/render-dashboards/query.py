#!/usr/bin/env python3
"""Asks a Prometheus server what a Grafana dashboard's panels would show
(hack/render-dashboards.sh).

    query.py alerts URL ALERTS_YAML START END OUT.om
        ALERTS series of the alerting rules over [START, END], as the rule
        manager would have written them (pending, then firing after `for`),
        evaluated every minute: OpenMetrics for the backfill.
    query.py panels URL DASHBOARD.json NOW SCRAPE_SECONDS PAGE_WIDTH OUT.js
        Every panel's queries over the dashboard's time range ending at NOW,
        with Grafana's variables given the values Grafana would send (its
        step, $__interval and $__rate_interval from the panel's width), as
        `window.DASHBOARD = {...}` for page.html.
"""

import json
import math
import re
import sys
import urllib.parse
import urllib.request

import yaml


def api(url, path, **params):
    data = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(f"{url}/api/v1/{path}", data=data, timeout=120) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query.py: {path} {params}: {body}")
    return body["data"]


def duration(text):
    """Seconds in a Prometheus or Grafana duration (`5m`, `1h30m`, `7d`)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise SystemExit(f"query.py: not a duration: {text!r}")
    return total


def prom_duration(seconds):
    seconds = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def alerts(url, rules_file, start, end, out):
    start, end = int(start), int(end)
    with open(rules_file) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    lines = []
    for rule in rules:
        hold = duration(rule.get("for", "0s"))
        data = api(url, "query_range", query=rule["expr"], start=start, end=end, step=60)
        for series in data["result"]:
            labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
            labels.update(rule.get("labels", {}))
            labels["alertname"] = rule["alert"]
            since, prev = None, None
            for t, _ in series["values"]:
                t = int(t)
                if prev is None or t - prev > 60:
                    since = t  # active again after a gap: pending anew
                prev = t
                state = "firing" if t - since >= hold else "pending"
                name = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "alertstate": state}.items()))
                lines.append((name, t))
    lines.sort()
    with open(out, "w") as f:
        for name, t in lines:
            f.write(f"ALERTS{{{name}}} 1 {t}\n")
        f.write("# EOF\n")
    print(f"query.py: {len(lines)} ALERTS samples from {len(rules)} alerting rules")


# Grafana's rounding of a query interval (public/app/core/utils/kbn), in ms.
ROUND = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
         (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
         (450000, 300000), (1050000, 600000), (2100000, 1800000), (6000000, 3600000), (25200000, 21600000),
         (64800000, 43200000), (129600000, 86400000), (604800000, 86400000 * 7)]


def round_interval(ms):
    for below, to in ROUND:
        if ms < below:
            return to
    return 86400000 * 30


def panel_width(grid_w, page_width):
    return (page_width - 32 - 23 * 8) / 24 * grid_w + (grid_w - 1) * 8


def substitute(expr, values):
    def one(m):
        name = (m.group(1) or m.group(2) or m.group(3) or m.group(4)).split(":")[0]
        if name not in values:
            raise SystemExit(f"query.py: unknown variable {name!r} in {expr!r}")
        return values[name]
    return re.sub(r"\$\{([^}]+)\}|\[\[([^\]]+)\]\]|\$(__[A-Za-z_]+)|\$([A-Za-z0-9_]+)", one, expr)


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        name = metric.get("__name__", "")
        rest = ", ".join(f'{k}="{v}"' for k, v in metric.items() if k != "__name__")
        return f"{name}{{{rest}}}" if rest else name or "{}"
    return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def panels(url, dashboard_file, now, scrape, page_width, out):
    now, scrape, page_width = int(now), float(scrape), int(page_width)
    with open(dashboard_file) as f:
        d = json.load(f)
    span = duration(d["time"]["from"].removeprefix("now-"))
    start, end = now - span, now
    variables, shown = {}, []
    for v in d["templating"]["list"]:
        if v["type"] == "datasource":
            variables[v["name"]] = "prometheus"
            shown.append({"label": v.get("label") or v["name"], "value": "Prometheus"})
        else:
            # All values: what Grafana sends for "All" with allValue .*
            variables[v["name"]] = v.get("allValue") or ".*"
            shown.append({"label": v.get("label") or v["name"], "value": "All"})
    out_panels = []
    for p in d["panels"]:
        panel = {k: p.get(k) for k in ("id", "type", "title", "description", "gridPos", "fieldConfig", "options",
                                         "interval", "maxDataPoints", "collapsed", "transformations")}
        if p["type"] == "row":
            out_panels.append(panel)
            continue
        width = panel_width(p["gridPos"]["w"], page_width)
        min_interval = duration(p["interval"]) if p.get("interval") else scrape
        points = p.get("maxDataPoints") or width
        interval_ms = max(round_interval(span * 1000 / points), min_interval * 1000)
        step = interval_ms / 1000
        values = dict(variables)
        values.update({
            "__interval": prom_duration(step),
            "__interval_ms": str(int(interval_ms)),
            "__rate_interval": prom_duration(max(step + scrape, 4 * scrape)),
            "__range": prom_duration(span),
            "__range_s": str(int(span)),
            "__range_ms": str(int(span * 1000)),
        })
        q_start = math.floor(start / step) * step
        q_end = math.floor(end / step) * step
        series = []
        for t in p.get("targets", []):
            expr = substitute(t["expr"], values)
            if t.get("instant"):
                data = api(url, "query", query=expr, time=end)
                answers = [(s["metric"], [s["value"]]) for s in data["result"]]
            else:
                data = api(url, "query_range", query=expr, start=q_start, end=q_end, step=step)
                answers = [(s["metric"], s["values"]) for s in data["result"]]
            for metric, samples in answers:
                series.append({
                    "refId": t["refId"],
                    "name": legend(t.get("legendFormat"), metric),
                    "labels": {k: v for k, v in metric.items() if k != "__name__"},
                    "times": [float(x) for x, _ in samples],
                    "values": [None if v in ("NaN", "+Inf", "-Inf") else float(v) for _, v in samples],
                })
        panel.update({"series": series, "step": step, "start": q_start, "end": q_end})
        out_panels.append(panel)
    page = {
        "title": d["title"],
        "uid": d["uid"],
        "tags": d.get("tags", []),
        "variables": shown,
        "time": d["time"],
        "from": start,
        "to": end,
        "width": page_width,
        "panels": out_panels,
    }
    with open(out, "w") as f:
        f.write("window.DASHBOARD = ")
        json.dump(page, f)
        f.write(";\n")
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in d["panels"])
    # The page's height: its header, then 30 px a grid unit and 8 px between.
    print(int(96 + rows * 38 + 24))


def main():
    what = sys.argv[1]
    if what == "alerts":
        alerts(*sys.argv[2:7])
    elif what == "panels":
        panels(*sys.argv[2:9])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
