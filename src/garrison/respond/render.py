"""An incident report (the dict of ``store.incidents.incident_report``) as Markdown or HTML.

Pure: the report in, text out. Every value that came from a caller (model names, reasons,
addresses, notes) is escaped in HTML, and in Markdown so that it cannot render as a link,
an image, HTML or formatting.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from garrison.safe_text import markdown_inline


def _t(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) of each table in the report."""
    return [
        (
            "Models reached",
            ["model", "calls", "refused", "tokens in", "tokens out", "first", "last"],
            [
                [
                    m["model"],
                    str(m["calls"]),
                    str(m["refused"]),
                    str(m["tokens_in"]),
                    str(m["tokens_out"]),
                    _t(m["first"]),
                    _t(m["last"]),
                ]
                for m in report["models"]
            ],
        ),
        (
            "Refusals (what was tried and not reached)",
            ["model", "reason", "count"],
            [[r["model"], r["reason"], str(r["count"])] for r in report["refusals"]],
        ),
        (
            "Source addresses",
            ["address", "calls", "refused", "first", "last"],
            [
                [s["address"], str(s["calls"]), str(s["refused"]), _t(s["first"]), _t(s["last"])]
                for s in report["sources"]
            ],
        ),
        (
            "Other principals seen from the same addresses",
            ["principal", "address", "calls", "last seen"],
            [
                [o["principal"], o["address"], str(o["calls"]), _t(o["last_seen"])]
                for o in report["others_from_same_sources"]
            ],
        ),
        (
            "Credentials involved (state now)",
            ["key", "principal", "state", "expires", "canary"],
            [
                [
                    c["id"],
                    c["principal"],
                    c["state"],
                    _t(c["expires_at"]),
                    "yes" if c["canary"] else "no",
                ]
                for c in report["credentials"]
            ],
        ),
        (
            "Locks",
            ["lock", "kind", "target", "reason", "placed", "lifted"],
            [
                [
                    lk["id"],
                    lk["kind"],
                    lk["target"],
                    lk["reason"],
                    _t(lk["created_at"]),
                    _t(lk["lifted_at"]),
                ]
                for lk in report["locks"]
            ],
        ),
        (
            "Timeline",
            ["index", "time", "event", "principal", "key", "model", "address", "status", "reasons"],
            [
                [
                    str(e["index"]),
                    _t(e["at"]),
                    e["name"],
                    e["principal_id"] or "-",
                    e["credential_id"] or "-",
                    e["model"] or "-",
                    e["client_address"] or "-",
                    str(e["status"] if e["status"] is not None else "-"),
                    ",".join(e["reasons"] or []) or "-",
                ]
                for e in report["timeline"]
            ],
        ),
        (
            "Notes",
            ["time", "author", "kind", "text"],
            [[_t(n["at"]), n["author"], n["kind"], n["text"]] for n in report["notes"]],
        ),
    ]


def _header(report: dict[str, Any]) -> list[tuple[str, str]]:
    inc = report["incident"]
    subj = inc["subjects"]
    return [
        ("Status", inc["status"]),
        ("Opened", f"{_t(inc['opened_at'])} by {inc['opened_by']}"),
        ("Window", f"since {_t(inc['since'])}"),
        (
            "Subjects",
            "; ".join(f"{k}: {', '.join(v)}" for k, v in subj.items() if v) or "-",
        ),
        ("Principals", ", ".join(report["principals"]) or "-"),
        ("First / last seen", f"{_t(report['first_seen'])} / {_t(report['last_seen'])}"),
        ("Events", str(report["events"])),
        ("Generated", _t(report["generated_at"])),
    ]


def _md_cell(text: str) -> str:
    """One table cell or header value: nothing unprintable (a terminal would obey control
    characters, a \\r would split the row), HTML, pipes and link/image syntax escaped."""
    return markdown_inline(text)


def to_markdown(report: dict[str, Any]) -> str:
    inc = report["incident"]
    out = [f"# Incident {inc['id']}: {_md_cell(inc['title'])}", ""]
    out += [f"- **{k}**: {_md_cell(v)}" for k, v in _header(report)]
    for title, columns, rows in _sections(report):
        out += ["", f"## {title}", ""]
        if not rows:
            out.append("None.")
            continue
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def to_html(report: dict[str, Any]) -> str:
    esc = html.escape
    inc = report["incident"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Incident {esc(inc['id'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}</style>",
        "</head><body>",
        f"<h1>Incident {esc(inc['id'])}: {esc(inc['title'])}</h1>",
        "<dl>",
    ]
    for key, value in _header(report):
        parts.append(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>")
    parts.append("</dl>")
    for title, columns, rows in _sections(report):
        parts.append(f"<h2>{esc(title)}</h2>")
        if not rows:
            parts.append("<p>None.</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
