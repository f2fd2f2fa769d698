#!/usr/bin/env python3
"""Checks that the Switchyard dashboards and alerts query metrics that exist.

Reads every PromQL expression in monitoring/grafana/dashboards/*.json (panel
targets and annotations) and in monitoring/prometheus/alerts.yml, fills in
the Grafana variables, and asks a Prometheus that scrapes a real host
whether each one returns data. A panel without data means a metric or label
the host does not export under that name: the dashboard is broken even if
the JSON loads.

    check-dashboards.py --list
    check-dashboards.py --prometheus http://127.0.0.1:9090 --components order-handler,connector-email
    check-dashboards.py --prometheus http://127.0.0.1:9090 --components order-handler --check-per-component

What must return data:
  * every panel target, evaluated now;
  * for each alert, every series selector in its expression (the alert
    itself is only evaluated, since a healthy system fires none);
  * annotations only with --require-annotations, over --annotation-window
    (deploy markers exist only after a deploy).
With --check-per-component, every panel query that uses $component is run
once per component named in --components, and alert selectors whose series carry
a `component` label must have one for every component: a repeated row in
Grafana is empty for a component that lacks them.

Before querying, the dashboards are linted: every panel needs a title, a
description, a unit and the `prometheus` data source.

Exit status: 0 all good, 1 a check failed, 2 usage or connection error.
Standard library only, so it runs wherever python3 does.
"""

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "prometheus"


@dataclass
class Query:
    source: str  # file name: overview.json, alerts.yml
    title: str  # panel title, annotation name or alert name
    ref: str  # refId, "annotation", "expr" or "selector"
    expr: str  # PromQL with Grafana variables still in it
    kind: str  # panel | annotation | alert | selector

    @property
    def per_component(self) -> bool:
        return "$component" in self.expr or "${component}" in self.expr

    def where(self) -> str:
        return f'{self.source} / "{self.title}" [{self.ref}]'


# ------------------------------------------------------------------ dashboards


def walk_panels(panels):
    """Yields every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def load_dashboard(path: Path, problems: list) -> list:
    board = json.loads(path.read_text())
    name = path.name
    queries = []
    if board.get("schemaVersion") != 39:
        problems.append(f"{name}: schemaVersion is {board.get('schemaVersion')}, expected 39")
    for panel in walk_panels(board.get("panels", [])):
        if panel.get("type") == "row":
            continue
        title = panel.get("title") or ""
        label = f'{name} / panel {panel.get("id")} "{title}"'
        if not title.strip():
            problems.append(f"{label}: no title")
        if not (panel.get("description") or "").strip():
            problems.append(f"{label}: no description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{label}: no fieldConfig.defaults.unit")
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            problems.append(f"{label}: data source is not uid {DATASOURCE_UID!r}")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{label}: no queries")
        for target in targets:
            expr = (target.get("expr") or "").strip()
            if not expr:
                problems.append(f"{label} [{target.get('refId')}]: empty expr")
                continue
            queries.append(Query(name, title, target.get("refId", "?"), expr, "panel"))
    for annotation in board.get("annotations", {}).get("list", []):
        expr = (annotation.get("expr") or annotation.get("target", {}).get("expr") or "").strip()
        if expr:
            queries.append(Query(name, annotation.get("name", "?"), "annotation", expr, "annotation"))
    return queries


# ---------------------------------------------------------------------- alerts

BLOCK_MARKERS = {"|", "|-", "|+", ">", ">-", ">+"}


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


def load_alerts(path: Path) -> list:
    """Reads `alert:`/`record:` names and their `expr:` from a rules file.

    Not a YAML parser: it understands what alerts.yml uses, an expr on one
    line (plain or quoted) or as a block scalar (`|`, `>-`, ...).
    """
    lines = path.read_text().splitlines()
    queries = []
    name = "?"
    i = 0
    while i < len(lines):
        line = lines[i]
        rule = re.match(r"^\s*-\s*(alert|record):\s*(.+?)\s*$", line)
        if rule:
            name = unquote(rule.group(2))
        expr = re.match(r"^(\s*)(?:-\s*)?expr:\s*(.*?)\s*$", line)
        if expr:
            indent, value = len(expr.group(1)), expr.group(2)
            if value in BLOCK_MARKERS:
                block = []
                while i + 1 < len(lines) and (
                    not lines[i + 1].strip() or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
                ):
                    i += 1
                    block.append(lines[i].strip())
                value = " ".join(part for part in block if part)
            else:
                value = unquote(value)
            queries.append(Query(path.name, name, "expr", value, "alert"))
        i += 1
    return queries


SKIP_LABEL_LIST = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Aggregations may be followed by `by (...)` instead of `(`.
AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio",
}


def skip_bracket(expr: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket opened at expr[i], skipping quoted strings."""
    depth = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = skip_string(expr, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def selectors(expr: str) -> list:
    """The series selectors in a PromQL expression, e.g. `up{job="x"}`.

    Enough of a tokenizer for rule expressions: skips strings, ranges,
    numbers, durations, keywords, function names and label lists.
    """
    found = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = skip_string(expr, i)
        elif c == "[":
            i = skip_bracket(expr, i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            while i < len(expr) and (expr[i].isalnum() or expr[i] in "._"):
                i += 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < len(expr) and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            word = expr[i:j]
            k = j
            while k < len(expr) and expr[k].isspace():
                k += 1
            nxt = expr[k] if k < len(expr) else ""
            if word.lower() in SKIP_LABEL_LIST:
                i = skip_bracket(expr, k, "(", ")") if nxt == "(" else j
            elif word.lower() in KEYWORDS or word in AGGREGATIONS or nxt == "(":
                i = j
            elif nxt == "{":
                end = skip_bracket(expr, k, "{", "}")
                found.append(word + expr[k:end])
                i = end
            else:
                found.append(word)
                i = j
        elif c == "{":
            end = skip_bracket(expr, i, "{", "}")
            found.append(expr[i:end])
            i = end
        else:
            i += 1
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------- querying


def component_regex(names: list) -> str:
    """A PromQL regex string body matching exactly these names, as Grafana builds it."""
    if not names:
        return ".+"
    escaped = [re.sub(r"([\\.+*?()\[\]{}|^$])", r"\\\\\1", n) for n in names]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, component: str, args) -> str:
    values = {
        "component": component,
        "__rate_interval": args.rate_interval,
        "__interval": args.interval,
        "__range": args.range,
    }
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value)
    # \b: $__interval must not match the start of a longer name ($__interval_ms).
    for name in values:
        expr = re.sub(r"\$" + re.escape(name) + r"\b", lambda _m, v=values[name]: v, expr)
    return expr


class Prometheus:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, params: dict):
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            # Prometheus answers 400/422 with a JSON error body for bad queries.
            try:
                body = json.load(err)
            except ValueError:
                raise ConnectionError(f"{url}: HTTP {err.code}") from err
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(f"{self.url}: {err}") from err
        if body.get("status") != "success":
            return None, body.get("error", "unknown error")
        return body["data"], None

    def instant(self, expr: str):
        data, error = self.get("/api/v1/query", {"query": expr})
        return (data["result"] if data else None), error

    def over(self, expr: str, window_s: float):
        end = time.time()
        step = max(15.0, window_s / 500)
        data, error = self.get(
            "/api/v1/query_range", {"query": expr, "start": end - window_s, "end": end, "step": step}
        )
        return (data["result"] if data else None), error

    def label_values(self, label: str, match: str):
        data, error = self.get(f"/api/v1/label/{label}/values", {"match[]": match})
        return data or [], error


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {duration}")
    return float(m.group(1)) * units[m.group(2)]


def check(queries: list, args, prom: Prometheus) -> list:
    """Runs every query; returns a list of failure messages."""
    failures = []
    components = args.components
    everyone = component_regex(components)

    def run(expr: str, label: str, kind: str):
        if "$" in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
            failures.append(f"{label}: unknown variable left in query\n      {expr}")
            return
        if kind == "annotation":
            result, error = prom.over(expr, seconds(args.annotation_window))
        else:
            result, error = prom.instant(expr)
        if error:
            failures.append(f"{label}: query error: {error}\n      {expr}")
        elif kind == "alert":
            pass  # evaluated for errors only; an empty alert is a quiet system
        elif not result:
            if kind == "annotation" and not args.require_annotations:
                print(f"note  {label}: no annotation in the last {args.annotation_window}")
            else:
                failures.append(f"{label}: no data\n      {expr}")
        elif kind == "selector" and args.check_per_component and components:
            seen = {s["metric"].get("component") for s in result}
            if seen != {None}:
                missing = [c for c in components if c not in seen]
                if missing:
                    failures.append(f"{label}: no series for component(s) {', '.join(missing)}\n      {expr}")

    for query in queries:
        # Annotations run once per dashboard in Grafana too, not per row.
        if args.check_per_component and components and query.per_component and query.kind == "panel":
            for name in components:
                expr = substitute(query.expr, component_regex([name]), args)
                run(expr, f"{query.where()} component={name}", query.kind)
        else:
            run(substitute(query.expr, everyone, args), query.where(), query.kind)
        if query.kind == "alert":
            for selector in selectors(substitute(query.expr, everyone, args)):
                run(selector, f'{query.source} / "{query.title}" [selector {selector}]', "selector")

    if args.check_per_component and components:
        values, error = prom.label_values("component", "component_invocations_total")
        if error:
            failures.append(f"$component variable: query error: {error}")
        missing = [c for c in components if c not in values]
        if missing:
            failures.append(
                "$component variable (label_values(component_invocations_total, component)) "
                f"does not list: {', '.join(missing)}"
            )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument(
        "--components",
        default="",
        type=lambda s: [c for c in s.split(",") if c],
        help="comma-separated component names for $component (default: every component)",
    )
    parser.add_argument("--list", action="store_true", help="print the expressions and do not query")
    parser.add_argument(
        "--check-per-component",
        action="store_true",
        help="run $component queries once per component of --components and require data for each",
    )
    parser.add_argument("--dashboards", type=Path, default=HERE / "grafana" / "dashboards")
    parser.add_argument("--alerts", type=Path, default=HERE / "prometheus" / "alerts.yml")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    parser.add_argument("--interval", default="15s", help="value of $__interval (default 15s)")
    parser.add_argument("--range", default="5m", help="value of $__range (default 5m)")
    parser.add_argument(
        "--annotation-window", default="15m", help="how far back annotations are looked for (default 15m)"
    )
    parser.add_argument("--require-annotations", action="store_true", help="fail when an annotation has no data")
    args = parser.parse_args()
    for duration in (args.rate_interval, args.interval, args.range, args.annotation_window):
        try:
            seconds(duration)
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))
    if args.check_per_component and not args.components:
        parser.error("--check-per-component needs --components")
    if not args.list and not args.prometheus:
        parser.error("give --prometheus URL, or --list")

    problems = []
    queries = []
    boards = sorted(args.dashboards.glob("*.json"))
    if not boards:
        parser.error(f"no dashboards in {args.dashboards}")
    for path in boards:
        queries += load_dashboard(path, problems)
    queries += load_alerts(args.alerts)

    if args.list:
        everyone = component_regex(args.components)
        for query in queries:
            print(f"{query.where()}\n    {substitute(query.expr, everyone, args)}")
            if query.kind == "alert":
                for selector in selectors(query.expr):
                    print(f"    selector: {substitute(selector, everyone, args)}")
    for problem in problems:
        print(f"LINT  {problem}")
    if args.list:
        return 1 if problems else 0

    try:
        failures = check(queries, args, Prometheus(args.prometheus))
    except ConnectionError as err:
        print(f"cannot query Prometheus: {err}", file=sys.stderr)
        return 2
    for failure in failures:
        print(f"FAIL  {failure}")
    total = len(queries)
    print(
        f"{total} expressions from {len(boards)} dashboards and {args.alerts.name}: "
        f"{len(failures)} failed checks, {len(problems)} lint problems"
    )
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
