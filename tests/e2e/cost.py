"""Requests and cost of one harness run, measured, not modelled.

S3 and SQS requests come from the `Requests` member of the Lambdas' EMF log lines (the
dmarc-tsv-aws adapters count every call); Step Functions transitions from the execution's event
log; Lambda time from the invocations' durations and the template's memory sizes. Added to that:
what AWS does per mail outside the Lambdas (SES's PUT of the mail, S3's SendMessage of the event).
Prices: us-east-1 list prices, free tiers ignored.

The Lambda line is the measured wall time of the invocations against moto, whose latency is not
AWS's (a few ms per request when one client talks to it; tens of ms when four ingest workers
share its one interpreter), so it bounds nothing. Next to it, clearly an estimate, the GB-s that
the measured CPU time of the function processes plus an assumed AWS latency per counted request
would bill.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

PRICES = {
    "s3_tier1_per_1k": 0.005,  # PUT, COPY, POST, LIST
    "s3_tier2_per_1k": 0.0004,  # GET, HEAD
    "sqs_per_million": 0.40,
    "sfn_per_1k_transitions": 0.025,
    "lambda_per_million": 0.20,
    "lambda_arm_gb_second": 0.0000133334,
}

# Assumed in-region latency of one request, for the Lambda estimate only (not measured here):
# small-object S3 requests take ~10-30 ms, SQS requests ~5-15 ms. The functions send their
# requests one after another, so waiting time adds up per request, except for GETs of mails:
# S3Store::get_many keeps MAX_CONCURRENT_GETS (shared/aws/src/s3.rs) in flight, and ingest (a
# batch's mails) and archive (a bundle's mails) fetch through it. Every GET is counted at that
# concurrency; the few sequential GETs (staged objects, ledgers, manifests) are undercounted.
ASSUMED_LATENCY_S = {"s3": 0.020, "sqs": 0.010}
CONCURRENT_GETS = 16


def requests_by_function(log: Path) -> dict[str, dict[str, collections.Counter]]:
    """function (the EMF `Function` dimension: ingest, compact) -> service -> API -> requests."""
    totals: dict[str, dict[str, collections.Counter]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        per_service = totals.setdefault(doc.get("Function", "?"), {})
        for service, apis in doc.get("Requests", {}).items():
            per_service.setdefault(service, collections.Counter()).update(apis)
    return totals


def requests_from_log(log: Path) -> dict[str, collections.Counter]:
    totals = {"s3": collections.Counter(), "sqs": collections.Counter()}
    for per_service in requests_by_function(log).values():
        for service, apis in per_service.items():
            totals.setdefault(service, collections.Counter()).update(apis)
    return totals


def estimated_gb_seconds(by_function: dict[str, dict[str, collections.Counter]], cpu_seconds: dict[str, float],
                         memory_mb: dict[str, int]) -> float | None:
    """GB-s if each function were busy for its measured CPU time plus ASSUMED_LATENCY_S per request
    it sent. Empty polls are left out: their wait is the per-run closing long polls (emptypolls x
    polltimeout per ingest worker), a fixed cost per run, not per report. None without CPU times."""
    if not cpu_seconds:
        return None
    total = 0.0
    for binary, cpu in cpu_seconds.items():
        # Binaries are dmarc-tsv-<function>; the EMF dimension is <function>.
        per_service = by_function.get(binary.removeprefix("dmarc-tsv-"), {})
        s3 = per_service.get("s3", collections.Counter())
        s3_waits = sum(s3.values()) - s3["get"] + s3["get"] / CONCURRENT_GETS
        sqs = per_service.get("sqs", collections.Counter())
        sqs_requests = sqs["receive"] - sqs["empty_receive"] + sqs["delete_batch"] + sqs["get_queue_url"]
        busy = cpu + s3_waits * ASSUMED_LATENCY_S["s3"] + sqs_requests * ASSUMED_LATENCY_S["sqs"]
        total += busy * memory_mb.get(binary, 128) / 1024
    return total


def transitions(event_files: list[Path]) -> int:
    count = 0
    for path in event_files:
        for line in path.read_text().splitlines():
            if '"StateEntered"' in line:
                count += 1
    return count


def measure(log: Path, event_files: list[Path], invocations: list[dict], memory_mb: dict[str, int],
            mails: int, reports: int, seconds: float, cpu_seconds: dict[str, float] | None = None) -> dict:
    by_function = requests_by_function(log)
    req = requests_from_log(log)
    s3, sqs = req["s3"], req["sqs"]
    s3_tier1 = s3["put"] + s3["copy"] + s3["list"] + mails  # + SES writing each mail
    s3_tier2 = s3["get"] + s3["head"]
    sqs_billed = sqs["receive"] + sqs["delete_batch"] + sqs["get_queue_url"] + mails  # + S3's event send
    steps = transitions(event_files)
    gb_seconds = sum(c["ms"] / 1000 * memory_mb.get(c["name"], 128) / 1024 for c in invocations)
    cost = {
        "s3": s3_tier1 / 1000 * PRICES["s3_tier1_per_1k"] + s3_tier2 / 1000 * PRICES["s3_tier2_per_1k"],
        "sqs": sqs_billed / 1e6 * PRICES["sqs_per_million"],
        "sfn": steps / 1000 * PRICES["sfn_per_1k_transitions"],
        "lambda": len(invocations) / 1e6 * PRICES["lambda_per_million"] + gb_seconds * PRICES["lambda_arm_gb_second"],
    }
    per_million = {k: v / max(reports, 1) * 1e6 for k, v in cost.items()}
    estimate_gb_seconds = estimated_gb_seconds(by_function, cpu_seconds or {}, memory_mb)
    lambda_estimate = None
    if estimate_gb_seconds is not None:
        lambda_estimate = (len(invocations) / 1e6 * PRICES["lambda_per_million"]
                           + estimate_gb_seconds * PRICES["lambda_arm_gb_second"]) / max(reports, 1) * 1e6
    return {
        "mails": mails,
        "reports": reports,
        "seconds": round(seconds, 1),
        "s3": dict(s3),
        "sqs": dict(sqs),
        "s3_tier1": s3_tier1,
        "s3_tier2": s3_tier2,
        "sqs_billed": sqs_billed,
        "transitions": steps,
        "invocations": len(invocations),
        "gb_seconds": round(gb_seconds, 1),
        "cost_per_million_reports": {k: round(v, 2) for k, v in per_million.items()},
        "total_per_million_reports": round(sum(per_million.values()), 2),
        "cpu_seconds": {k: round(v, 1) for k, v in (cpu_seconds or {}).items()},
        "estimate": None if lambda_estimate is None else {
            "assumed_latency_ms": {k: round(v * 1000) for k, v in ASSUMED_LATENCY_S.items()},
            "gb_seconds": round(estimate_gb_seconds, 1),
            "lambda_per_million_reports": round(lambda_estimate, 2),
            "total_per_million_reports": round(sum(per_million.values()) - per_million["lambda"] + lambda_estimate, 2),
        },
    }


def per_report(m: dict, value: float) -> str:
    return f"{value / max(m['reports'], 1):.3f}"


def markdown(m: dict, label: str) -> str:
    s3, sqs = m["s3"], m["sqs"]
    c = m["cost_per_million_reports"]
    lines = [
        f"Run: {label}; {m['mails']:,} mails, {m['reports']:,} reports staged, {m['seconds']:.0f} s from the first upload to the end of the execution "
        f"(2-core machine, moto, `cargo lambda watch`, local Step Functions).",
        "",
        "| API | requests | per report |",
        "|---|---|---|",
    ]
    for api in ("get", "put", "copy", "list", "delete", "head"):
        lines.append(f"| S3 {api.upper()} | {s3.get(api, 0):,} | {per_report(m, s3.get(api, 0))} |")
    lines.append(f"| S3 PUT by SES (one per mail, not counted by the Lambdas) | {m['mails']:,} | {per_report(m, m['mails'])} |")
    labels = {
        "receive": "SQS ReceiveMessage",
        "empty_receive": "… of which empty polls",
        "delete_batch": "SQS DeleteMessageBatch",
        "get_queue_url": "SQS GetQueueUrl",
    }
    for api, label in labels.items():
        lines.append(f"| {label} | {sqs.get(api, 0):,} | {per_report(m, sqs.get(api, 0))} |")
    lines.append(f"| SQS SendMessage by the S3 event | {m['mails']:,} | {per_report(m, m['mails'])} |")
    lines.append(f"| Step Functions transitions | {m['transitions']:,} | {per_report(m, m['transitions'])} |")
    lines.append(f"| Lambda invocations | {m['invocations']:,} | {per_report(m, m['invocations'])} |")
    lines += [
        "",
        "Derived cost per million reports (us-east-1 list prices, free tiers ignored; Lambda GB-s "
        "measured as the invocations' wall time on x86 against moto, priced as arm64 — moto's latency is not AWS's, see the estimate below):",
        "",
        "| S3 | SQS | Step Functions | Lambda | total |",
        "|---|---|---|---|---|",
        f"| ${c['s3']:.2f} | ${c['sqs']:.2f} | ${c['sfn']:.2f} | ${c['lambda']:.2f} | **${m['total_per_million_reports']:.2f}** |",
        "",
        "SES receiving ($0.10 per 1,000 mails + $0.09 per 1,000 256 KB chunks) comes on top and dominates.",
    ]
    e = m.get("estimate")
    if e:
        cpu = ", ".join(f"{name} {secs:,.1f} s" for name, secs in sorted(m["cpu_seconds"].items()))
        lat = e["assumed_latency_ms"]
        lines += [
            "",
            f"Lambda, measured: {m['gb_seconds']:,.1f} GB-s of invocation wall time against moto. "
            f"Lambda, **estimate** (not a measurement): the measured CPU time of the function processes "
            f"({cpu}) plus an assumed {lat['s3']} ms per S3 request (GETs {CONCURRENT_GETS} at a time, as "
            f"`get_many` sends them) and {lat['sqs']} ms per non-empty SQS request, at each function's "
            f"memory size: {e['gb_seconds']:,.1f} GB-s, "
            f"${e['lambda_per_million_reports']:.2f} per million reports "
            f"(total with it ${e['total_per_million_reports']:.2f}; the closing empty polls of each run, "
            "a fixed cost per run, are not in it).",
        ]
    return "\n".join(lines)


BEGIN = "<!-- e2e-volume: begin (generated by scripts/e2e-volume) -->"
END = "<!-- e2e-volume: end -->"


def write_doc(doc: Path, text: str) -> None:
    """Replaces the generated block of doc/cost.md (or the placeholder table under `## Measured`)."""
    content = doc.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in content and END in content:
        content = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, content, flags=re.S)
    else:
        placeholder = re.compile(r"\| scenario \| mails \|.*?\n\| \(to be filled from the e2e harness\)[^\n]*\n?", re.S)
        if placeholder.search(content):
            content = placeholder.sub(lambda _: block + "\n", content)
        else:
            content = content.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(content)
