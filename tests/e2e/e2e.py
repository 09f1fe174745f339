#!/usr/bin/env python3
"""dmarc-tsv end-to-end harness.

Runs the real pipeline locally: S3 + SQS from moto, the two Rust Lambdas served by
`cargo lambda watch`, the state machine extracted from the synthesized CDK template executed by
aws-local-stepfunctions (tests/e2e/sfn.mjs). Then checks the output against `dmarc-tsv parse` of
the same mails, reads it back with DuckDB the way Athena would, and repeats the run with a
failpoint that kills one Lambda invocation mid-way.

Every missing tool is an error. See doc/e2e.md.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# No __pycache__ in the work tree.
sys.dont_write_bytecode = True
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import cost  # noqa: E402
import mailgen  # noqa: E402
import template as tpl  # noqa: E402
from procs import HarnessError, Service, free_port  # noqa: E402

try:
    import boto3  # noqa: E402
    import duckdb  # noqa: E402
    from botocore.config import Config as BotoConfig  # noqa: E402
except ImportError as missing:  # pragma: no cover - tool check
    sys.exit(f"e2e: MISSING Python package {missing.name}: run scripts/setup (.venv from scripts/requirements-test.txt)")

INGEST = "dmarc-tsv-ingest"
COMPACT = "dmarc-tsv-compact"
DEFAULT_FAILPOINTS = ["stage.after_staged_put", "compact.after_output_put", "archive.after_bundle_put"]
OUTPUT_KEY = re.compile(r"^(?P<prefix>.*)dt=(?P<dt>\d{4}-\d{2}-\d{2})/part-(?P<name>[0-9a-f]{16})\.(?P<ext>tsv|csv)\.gz$")


def log(message: str) -> None:
    print(f"e2e: {message}", flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Tools, template, state machine definition


@dataclass
class Tools:
    venv: Path
    moto_server: Path
    cargo_lambda: Path
    node: str
    cli: Path  # target/debug/dmarc-tsv

    @staticmethod
    def find(venv: Path) -> "Tools":
        missing = []
        moto = venv / "bin" / "moto_server"
        cargo_lambda = venv / "bin" / "cargo-lambda"
        for path in (moto, cargo_lambda):
            if not os.access(path, os.X_OK):
                missing.append(str(path))
        node = shutil.which("node")
        if node is None:
            missing.append("node")
        if not (HERE / "node_modules" / "aws-local-stepfunctions").is_dir():
            missing.append("tests/e2e/node_modules (npm ci in tests/e2e)")
        if not (ROOT / "infra" / "node_modules" / ".bin" / "cdk").exists():
            missing.append("infra/node_modules (npm ci in infra)")
        if missing:
            raise HarnessError("MISSING tools: " + ", ".join(missing) + " (run scripts/setup)")
        return Tools(venv, moto, cargo_lambda, node, ROOT / "target" / "debug" / "dmarc-tsv")


SYNTH = (
    "const { synthTemplate } = require('./lib/synth');"
    "process.stdout.write(JSON.stringify(synthTemplate({ recipients: 'dmarc@example.com' }), null, 1) + '\\n');"
)


def synth_template(out: Path) -> Path:
    """The stack's template, synthesized in-process by infra/lib/synth.ts (offline, Rust bundling
    skipped), like the infra tests do: recent cdk CLIs refuse `--context aws:cdk:bundling-stacks=[]`."""
    log("synthesizing the CDK app (in-process, no bundling)")
    tsx = ROOT / "infra" / "node_modules" / ".bin" / "tsx"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        run([str(tsx), "-e", SYNTH], cwd=ROOT / "infra", stdout=f)
    doc = json.loads(out.read_text())
    if not any(r.get("Type") == "AWS::StepFunctions::StateMachine" for r in doc.get("Resources", {}).values()):
        raise HarnessError(f"the synthesized template {out} has no state machine")
    return out


def extract_asl(template: Path, out: Path) -> Path:
    """The state machine definition with Lambda ARNs named after the binaries
    (infra/scripts/extract-asl.ts), validated with asl-validator."""
    script = ROOT / "infra" / "scripts" / "extract-asl.ts"
    if not script.exists():
        raise HarnessError(f"MISSING {script.relative_to(ROOT)}: cannot take the definition from the template")
    tsx = ROOT / "infra" / "node_modules" / ".bin" / "tsx"
    with open(out, "wb") as f:
        run([str(tsx), str(script), str(template)], cwd=ROOT, stdout=f)
    validator = HERE / "node_modules" / ".bin" / "asl-validator"
    result = subprocess.run([str(validator), "--json-path", str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"asl-validator rejected the definition: {result.stdout}{result.stderr}")
    return out


# ---------------------------------------------------------------------------------------------
# Mails and what they must give


@dataclass
class Mail:
    key: str
    body: bytes
    kind: str  # report | duplicate | bad | corpus


def corpus_mails(prefix: str) -> list[Mail]:
    """Every real sample listed in the corpus inventory, as an incoming object (bare report files
    go through the same parser as mails)."""
    corpus = ROOT / "tests" / "fixtures" / "corpus"
    mails = []
    lines = (corpus / "inventory.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        path = corpus / row["file"]
        # Keys with a space and a plus exercise the URL-decoding of S3 event keys.
        name = row["file"].replace("/", "__")
        if len(mails) % 17 == 3:
            name = f"with space+plus {name}"
        mails.append(Mail(f"{prefix}corpus/{name}", path.read_bytes(), "corpus"))
    return mails


@dataclass
class Expected:
    """What the output must hold, computed from `dmarc-tsv parse` of each mail."""

    columns: int
    # report identity -> candidate row lists (one per mail carrying that report, first first)
    reports: dict[tuple, list[list[tuple]]] = field(default_factory=dict)
    usable: set[str] = field(default_factory=set)
    unusable: set[str] = field(default_factory=set)
    duplicates: int = 0
    # Bytes of each usable mail, to find it again inside archive bundles (DMARC_ARCHIVEFORMAT=mbox).
    bodies: dict[str, bytes] = field(default_factory=dict)

    def rows(self) -> list[tuple]:
        return [row for variants in self.reports.values() for row in variants[0]]


class Columns:
    def __init__(self, names: list[str]):
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}

    def identity(self, row: tuple) -> tuple:
        g = lambda name: row[self.index[name]]  # noqa: E731
        return (
            g("org_name").strip().lower(),
            g("report_id").strip(),
            g("published_policy_domain_name").strip().rstrip(".").lower(),
            g("date_begin"),
            g("date_end"),
        )

    def comparable(self, row: tuple) -> tuple:
        """The row without `source_key`: which copy of a re-sent report wins is the pipeline's choice."""
        drop = self.index.get("source_key")
        return tuple(v for i, v in enumerate(row) if i != drop)


def _parse_one(cli: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), "parse", str(path)], capture_output=True)


def parse_expected(cli: Path, mails: list[Mail], cols: Columns, scratch: Path) -> Expected:
    """Runs `dmarc-tsv parse` on every mail (written to a scratch file), two at a time."""
    expected = Expected(columns=len(cols.names))
    scratch.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, mail in enumerate(mails):
        path = scratch / f"{i:06d}"
        path.write_bytes(mail.body)
        paths.append(path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: _parse_one(cli, p), paths))
    for mail, result in zip(mails, results):
        if result.returncode not in (0, 1):
            raise HarnessError(f"dmarc-tsv parse {mail.key} exited {result.returncode}: {result.stderr[-2000:]!r}")
        rows = [tuple(line.split("\t")) for line in result.stdout.decode("utf-8").splitlines() if line]
        for row in rows:
            if len(row) != expected.columns:
                raise HarnessError(f"parse of {mail.key}: row with {len(row)} fields, Glue table has {expected.columns}")
        # Exit 0: the mail yielded a report (possibly with no rows); 1: none, it goes to quarantine.
        if result.returncode == 1:
            if rows:
                raise HarnessError(f"parse of {mail.key} printed rows but says it yielded no report")
            expected.unusable.add(mail.key)
            continue
        expected.usable.add(mail.key)
        expected.bodies[mail.key] = mail.body
        by_report: dict[tuple, list[tuple]] = collections.defaultdict(list)
        for row in rows:
            by_report[cols.identity(row)].append(cols.comparable(row))
        for identity, report_rows in by_report.items():
            if identity in expected.reports:
                expected.duplicates += 1
            expected.reports.setdefault(identity, []).append(report_rows)
    shutil.rmtree(scratch, ignore_errors=True)
    return expected


# ---------------------------------------------------------------------------------------------
# Local AWS


class LocalAws:
    def __init__(self, tools: Tools, work: Path, port: int):
        self.endpoint = f"http://127.0.0.1:{port}"
        # moto's server through tests/e2e/moto_server.py: the same server, with SendMessage (and so
        # every S3 -> SQS event) no longer scanning the whole queue; see that file and doc/e2e.md.
        self.moto = Service(
            "moto",
            [str(tools.venv / "bin" / "python"), str(HERE / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
            work / "moto.log",
        )
        self.moto.wait_http(f"{self.endpoint}/moto-api/", timeout=30)
        session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=tpl.REGION)
        cfg = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3})
        self.s3 = session.client("s3", endpoint_url=self.endpoint, config=cfg)
        self.sqs = session.client("sqs", endpoint_url=self.endpoint, config=cfg)

    def reset(self) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def create_stack(self, spec: tpl.StackSpec) -> None:
        """Bucket, DLQ, queue with redrive, and the S3 -> SQS notification on the incoming prefix,
        as the CDK stack declares them."""
        self.s3.create_bucket(Bucket=spec.bucket)
        attributes = {}
        if spec.dlq is not None:
            self.sqs.create_queue(QueueName=spec.dlq.name)
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": spec.dlq.arn, "maxReceiveCount": str(spec.queue.max_receive_count or 5)}
            )
        if spec.queue.visibility_timeout:
            attributes["VisibilityTimeout"] = str(spec.queue.visibility_timeout)
        self.sqs.create_queue(QueueName=spec.queue.name, Attributes=attributes)
        rules = [{"Name": "prefix", "Value": spec.notification_prefix}] if spec.notification_prefix else []
        self.s3.put_bucket_notification_configuration(
            Bucket=spec.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": spec.queue.arn,
                        "Events": ["s3:ObjectCreated:*"],
                        **({"Filter": {"Key": {"FilterRules": rules}}} if rules else {}),
                    }
                ]
            },
        )

    def keys(self, bucket: str, prefix: str) -> list[str]:
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys

    def get(self, bucket: str, key: str) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def queue_depth(self, url: str) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def stop(self) -> None:
        self.moto.stop()


class Lambdas:
    """`cargo lambda watch` serving both binaries, environment = the template's + overrides.

    When a function process dies (an `abort` failpoint exits with 86), cargo lambda watch does not
    start a new one: the pending invoke hangs and later invokes too. Real Lambda answers the
    invoke with `Runtime.ExitError` and starts a fresh runtime. So a monitor thread watches the
    log and restarts the server on the same port: the pending request's connection drops (sfn.mjs
    reports that as `Runtime.ExitError`) and the next invoke gets a fresh process.
    """

    # cargo lambda's own line, and the core's line before an abort failpoint exits (cargo lambda
    # sometimes loses the process-exit event when its file watcher overflows).
    EXITED = re.compile(r"command exited code=(\d+)|failpoint \S+: aborting \(exit (\d+)\)")

    def __init__(self, tools: Tools, work: Path, name: str, env: dict[str, str], release: bool = False):
        self.release = release
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.tools = tools
        self.log_path = work / f"{name}.lambda.log"
        self.name = name
        self.env = dict(os.environ)
        self.env.update(env)
        # cargo lambda watch runs `cargo run`: keep the shared target dir.
        self.env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
        self.crashes: list[int] = []
        # pid -> (function, CPU clock ticks at its last sample) of the function processes.
        self._cpu: dict[int, tuple[str, int]] = {}
        self._stopping = threading.Event()
        self._start()
        self._monitor = threading.Thread(target=self._watch_for_crashes, daemon=True)
        self._monitor.start()

    def _start(self) -> None:
        # Environment goes through the process (the --env-file parser rejects values with commas).
        self.service = Service(
            f"cargo lambda watch ({self.name})",
            [str(self.tools.cargo_lambda), "lambda", "watch", "--ignore-changes", "--quiet",
             "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port), "--concurrency", "4",
             *(["--release"] if self.release else [])],
            self.log_path,
            env=self.env,
            cwd=ROOT,
        )
        # The Invoke API answers 404 for an unknown path once it listens.
        self.service.wait_http(f"{self.endpoint}/", timeout=120, accept_status=(200, 404, 405))

    def _sample_cpu(self) -> None:
        """Records the user+system CPU time of each function process that cargo lambda watch
        started (its children; it gives each its own session). The counters only grow, so the
        last sample of a process that has since exited (a crash) is at most one interval short."""
        watch = self.service.proc.pid
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[1]) != watch:  # field 4 of proc(5): parent pid
                    continue
                name = os.path.basename(os.readlink(Path(entry.path, "exe")))
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            if name in (INGEST, COMPACT):
                self._cpu[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime

    def _kill_leftovers(self) -> None:
        """cargo lambda watch does not always end its function processes when it stops: its log
        then says `blocking waitpid returned pid=0` and terminates only some instances. A leftover
        from before a crash restart goes on with its invocation unseen and can take messages that
        the next execution should get (a CI run once ended with 9 messages in flight and their
        mails never staged). Those processes are this harness's descendants, known by pid from
        `_sample_cpu` (called just before every stop) and running a binary of this target dir."""
        target = os.path.join(os.path.realpath(ROOT / self.env["CARGO_TARGET_DIR"]), "")
        for pid in self._cpu:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue  # ended
            if exe.startswith(target) and os.path.basename(exe) in (INGEST, COMPACT):
                log(f"[{self.name}] function process {pid} outlived cargo lambda watch: killing it")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used by each function's processes over the life of this server."""
        ticks = os.sysconf("SC_CLK_TCK")
        totals = collections.Counter()
        for name, used in self._cpu.values():
            totals[name] += used / ticks
        return dict(totals)

    def _watch_for_crashes(self) -> None:
        offset = 0
        samples = 0
        while not self._stopping.is_set():
            time.sleep(0.2)
            samples += 1
            if samples % 5 == 0:
                self._sample_cpu()
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            offset += len(chunk)
            found = self.EXITED.findall(chunk.decode("utf-8", "replace"))
            if not found or self._stopping.is_set():
                continue
            codes = sorted({int(a or b) for a, b in found})
            self.crashes.extend(codes)
            self._sample_cpu()
            log(f"[{self.name}] a function process exited ({codes}): restarting cargo lambda watch")
            time.sleep(0.5)  # let the dying process finish exiting
            self.service.stop()
            self._kill_leftovers()
            # Lines the old server wrote while stopping belong to the same crash.
            offset = self.log_path.stat().st_size
            self._start()

    def stop(self) -> None:
        self._stopping.set()
        self._monitor.join(timeout=5)
        self._sample_cpu()
        self.service.stop()
        self._kill_leftovers()


# ---------------------------------------------------------------------------------------------
# One scenario: fresh stack, mails in, execution(s), checks


@dataclass
class Scenario:
    name: str
    failpoint: str | None = None


@dataclass
class Outcome:
    executions: list[dict]
    invocations: list[dict]
    seconds: float
    # CPU seconds of each function's processes (see Lambdas.cpu_seconds).
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def execute(tools: Tools, asl: Path, lambdas: Lambdas, events: Path, timeout: int) -> tuple[bool, dict | str]:
    try:
        result = subprocess.run(
            [tools.node, str(HERE / "sfn.mjs"), "--asl", str(asl), "--lambda-endpoint", lambdas.endpoint,
             "--events", str(events)],
            capture_output=True, text=True, timeout=timeout, cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"the execution did not end within {timeout}s; see {events} and {lambdas.log_path}")
    if result.returncode == 0:
        return True, json.loads(result.stdout.strip().splitlines()[-1])
    if result.returncode == 1:
        return False, result.stderr.strip()
    raise HarnessError(f"sfn.mjs failed to run ({result.returncode}): {result.stderr.strip()}")


def wait_for_redelivery(aws: LocalAws, url: str, timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _, in_flight = aws.queue_depth(url)
        if in_flight == 0:
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"{in_flight} messages still in flight after {timeout}s")
        time.sleep(1)


def invocations(events: Path) -> list[dict]:
    found = []
    for line in events.read_text().splitlines():
        entry = json.loads(line)
        if "invoke" in entry:
            found.append(entry["invoke"])
    return found


def run_scenario(
    scenario: Scenario, tools: Tools, aws: LocalAws, spec: tpl.StackSpec, base_env: dict[str, dict[str, str]],
    asl: Path, mails: list[Mail], work: Path, timeout: int, release: bool = False,
) -> Outcome:
    log(f"[{scenario.name}] fresh stack, {len(mails)} mails")
    aws.reset()
    aws.create_stack(spec)
    env = dict(base_env[INGEST])
    # Both functions share the settings; a function-specific value would be a template bug worth seeing.
    for k, v in base_env[COMPACT].items():
        if env.get(k, v) != v:
            raise HarnessError(f"{k} differs between the two functions ({env[k]!r} vs {v!r})")
        env[k] = v
    once_file = work / f"{scenario.name}.failpoint-fired"
    if scenario.failpoint:
        env["DMARC_FAILPOINT"] = scenario.failpoint
        env["DMARC_FAILPOINT_ONCE_FILE"] = str(once_file)
        once_file.unlink(missing_ok=True)
    lambdas = Lambdas(tools, work, scenario.name, env, release)
    try:
        started = time.monotonic()
        for mail in mails:
            aws.s3.put_object(Bucket=spec.bucket, Key=mail.key, Body=mail.body)
        log(f"[{scenario.name}] uploaded in {time.monotonic() - started:.1f}s; executing the state machine")
        executions, calls = [], []
        for attempt in (1, 2):
            events = work / f"{scenario.name}.events{attempt}.jsonl"
            ok, output = execute(tools, asl, lambdas, events, timeout)
            calls.extend(invocations(events))
            executions.append({"ok": ok, "output": output})
            log(f"[{scenario.name}] execution {attempt}: {'succeeded' if ok else 'FAILED'}: {output}")
            if ok:
                break
            if not scenario.failpoint:
                raise HarnessError(f"[{scenario.name}] execution failed without any failpoint: {output}")
            # Like the next scheduled run: messages a crashed ingest held become visible again first.
            wait_for_redelivery(aws, spec.queue.url, timeout=int(env["DMARC_SQSPROCESSINGTIME"]) + 30)
        seconds = time.monotonic() - started
        crashes = list(lambdas.crashes)
    finally:
        lambdas.stop()
    cpu_seconds = lambdas.cpu_seconds()
    if scenario.failpoint and not once_file.exists():
        raise HarnessError(f"[{scenario.name}] failpoint {scenario.failpoint} never fired: the run tested nothing")
    if not executions[-1]["ok"]:
        raise HarnessError(f"[{scenario.name}] a second execution after the crash failed too")
    if scenario.failpoint and not scenario.failpoint.endswith(":error") and 86 not in crashes:
        raise HarnessError(f"[{scenario.name}] the abort failpoint fired but no function process exited")
    return Outcome(executions, calls, seconds, cpu_seconds)


# ---------------------------------------------------------------------------------------------
# Checks


class Checks:
    def __init__(self, scenario: str):
        self.scenario = scenario
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
            log(f"[{self.scenario}] FAIL: {what}")

    def raise_if_failed(self) -> None:
        if self.failures:
            raise HarnessError(f"[{self.scenario}] {len(self.failures)} check(s) failed")


def check_outputs(
    checks: Checks, aws: LocalAws, spec: tpl.StackSpec, env: dict[str, str], cols: Columns,
    expected: Expected, mails: list[Mail], download: Path,
) -> list[tuple]:
    bucket = spec.bucket
    output_prefix = env.get("DMARC_OUTPUTPREFIX", "dmarc/")
    rows_per_file = int(env.get("DMARC_MAXRECORDS", "32")) * 1024
    actual: list[tuple] = []
    download.mkdir(parents=True, exist_ok=True)
    keys = aws.keys(bucket, output_prefix)
    checks.check(bool(keys), f"output files under {output_prefix}")
    date_begin = cols.index["date_begin"]
    for key in keys:
        m = OUTPUT_KEY.match(key)
        checks.check(m is not None and m.group("prefix") == output_prefix, f"output key shape: {key}")
        if m is None:
            continue
        data = aws.get(bucket, key)
        target = download / key[len(output_prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        checks.check(data[4:8] == b"\0\0\0\0", f"{key}: gzip header has no mtime (deterministic bytes)")
        lines = gzip.decompress(data).decode("utf-8").split("\n")
        checks.check(lines[-1] == "", f"{key}: ends with a newline")
        rows = [tuple(line.split("\t")) for line in lines[:-1]]
        checks.check(0 < len(rows) <= rows_per_file, f"{key}: {len(rows)} rows, limit {rows_per_file}")
        for row in rows:
            if len(row) != expected.columns:
                checks.check(False, f"{key}: row with {len(row)} fields, expected {expected.columns}")
                break
            if not row[date_begin].startswith(m.group("dt")):
                checks.check(False, f"{key}: row dated {row[date_begin]} in partition {m.group('dt')}")
                break
        actual.extend(rows)

    # Multiset comparison, report by report: each report appears once, with the rows of one of the
    # mails that carried it.
    by_report: dict[tuple, list[tuple]] = collections.defaultdict(list)
    for row in actual:
        by_report[cols.identity(row)].append(cols.comparable(row))
    missing = [i for i in expected.reports if i not in by_report]
    extra = [i for i in by_report if i not in expected.reports]
    checks.check(not missing, f"{len(missing)} report(s) missing from the output, e.g. {missing[:3]}")
    checks.check(not extra, f"{len(extra)} unexpected report(s) in the output, e.g. {extra[:3]}")
    # A report re-sent with different content (some real reporters do) may be kept in any of its
    # copies: which one is the pipeline's choice (first staged), so the expected rows follow it.
    wrong = []
    chosen: list[tuple] = []
    for identity, variants in expected.reports.items():
        rows = collections.Counter(by_report.get(identity, []))
        match = next((v for v in variants if collections.Counter(v) == rows), None)
        if match is None and identity in by_report:
            wrong.append((identity, sum(rows.values()), [len(v) for v in variants]))
        chosen.extend(match if match is not None else variants[0])
    checks.check(not wrong, f"{len(wrong)} report(s) with rows that no source mail gives (duplicated rows?), e.g. {wrong[:3]}")
    checks.check(len(actual) == len(chosen), f"row count {len(actual)} == expected {len(chosen)}")

    source_key = cols.index.get("source_key")
    if source_key is not None:
        keys_seen = {row[source_key] for row in actual}
        known = {m.key for m in mails}
        checks.check(keys_seen <= known, f"source_key values are mail keys: {sorted(keys_seen - known)[:3]}")
    return chosen


def mbox_messages(data: bytes) -> list[bytes]:
    """The mails of an mboxrd stream, as `dmarc-tsv local` reads them: a `From ` line at the start
    or after an empty line separates; that empty line belongs to the separator; `>From ` quoting
    loses one `>`."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    if data.endswith(b"\n"):
        lines.pop()
    elif lines:
        lines[-1] = lines[-1][:-1]
    messages: list[list[bytes]] = []
    previous_blank, at_start = False, True
    for line in lines:
        if (at_start or previous_blank) and line.startswith(b"From "):
            messages.append([])
        elif messages:
            messages[-1].append(line)
        at_start = False
        previous_blank = line in (b"\n", b"\r\n")
    out = []
    for message in messages:
        if message and message[-1] in (b"\n", b"\r\n"):
            message.pop()
        out.append(b"".join(line[1:] if re.match(rb">+From ", line) else line for line in message))
    return out


def check_bundles(checks: Checks, aws: LocalAws, bucket: str, move: str, expected: Expected) -> None:
    """Archive bundles (`<move>/YYYYMMDD/<batch>.mbox.gz`) hold every usable mail exactly once and
    no unusable one (mbox adds a final newline where a mail had none)."""
    keys = aws.keys(bucket, move)
    shape = re.compile(rf"^{re.escape(move.rstrip('/'))}/\d{{8}}/[0-9a-f]+(-[0-9a-f]+)?(\.part\d+)?\.mbox\.gz$")
    odd = [k for k in keys if not shape.match(k)]
    checks.check(not odd, f"archive keys are bundles: {odd[:3]}")
    archived = collections.Counter()
    for key in keys:
        for message in mbox_messages(gzip.decompress(aws.get(bucket, key))):
            archived[message] += 1
    wanted = collections.Counter(b if b.endswith(b"\n") else b + b"\n" for b in expected.bodies.values())
    missing = sum((wanted - archived).values())
    extra = sum((archived - wanted).values())
    checks.check(missing == 0, f"{missing} usable mail(s) missing from the archive bundles")
    checks.check(extra == 0, f"{extra} archived mail(s) too many (twice, or not usable) in {len(keys)} bundles")


def check_mails_and_leftovers(checks: Checks, aws: LocalAws, spec: tpl.StackSpec, env: dict[str, str], expected: Expected) -> None:
    bucket = spec.bucket
    incoming = env.get("DMARC_INCOMINGPREFIX", "incoming/")
    move = env.get("DMARC_MOVE", "")
    quarantine = env.get("DMARC_QUARANTINEPREFIX", "quarantine/")
    left = aws.keys(bucket, incoming)
    if move and env.get("DMARC_ARCHIVEFORMAT", "mail") == "mbox":
        checks.check(not left, f"incoming/ empty after archiving; left: {left[:3]}")
        check_bundles(checks, aws, bucket, move, expected)
    elif move:
        checks.check(not left, f"incoming/ empty after archiving; left: {left[:3]}")
        archived = aws.keys(bucket, move)
        date_dir = re.compile(rf"^{re.escape(move.rstrip('/'))}/\d{{8}}/(?P<key>.+)$")
        archived_keys = {m.group("key") for k in archived if (m := date_dir.match(k))}
        not_archived = sorted(expected.usable - archived_keys)
        checks.check(not not_archived, f"{len(not_archived)} usable mails not archived, e.g. {not_archived[:3]}")
        wrongly = sorted(archived_keys & expected.unusable)
        checks.check(not wrongly, f"unusable mails archived instead of quarantined: {wrongly[:3]}")
    else:
        checks.check(set(left) == expected.usable, "usable mails stay in incoming/ when no -move is set")

    q_keys = aws.keys(bucket, quarantine)
    date_dir = re.compile(rf"^{re.escape(quarantine)}\d{{8}}/(?P<rel>.+)$")
    reasons = {}
    mails_in_q = set()
    for key in q_keys:
        m = date_dir.match(key)
        checks.check(m is not None, f"quarantine key shape: {key}")
        if not m:
            continue
        rel = m.group("rel")
        if rel.endswith(".reason.json"):
            reasons[rel[: -len(".reason.json")]] = json.loads(aws.get(bucket, key))
        else:
            mails_in_q.add(rel)
    expected_q = {k[len(incoming):] if k.startswith(incoming) else k for k in expected.unusable}
    checks.check(mails_in_q == expected_q, f"quarantined mails == unusable mails (missing {sorted(expected_q - mails_in_q)[:3]}, extra {sorted(mails_in_q - expected_q)[:3]})")
    checks.check(set(reasons) == mails_in_q, "every quarantined mail has its .reason.json")
    no_reason = [k for k, doc in reasons.items() if not json.dumps(doc).count("code") and not doc]
    checks.check(not no_reason, f"reason documents say why: {no_reason[:3]}")

    for prefix in (env.get("DMARC_STAGINGPREFIX", "staging/"), env.get("DMARC_STATEPREFIX", "state/") + "commits/"):
        left = aws.keys(bucket, prefix)
        checks.check(not left, f"{prefix} empty; left: {left[:3]}")
    visible, in_flight = aws.queue_depth(spec.queue.url)
    checks.check(visible == 0 and in_flight == 0, f"queue empty (visible {visible}, in flight {in_flight})")
    if spec.dlq is not None:
        visible, in_flight = aws.queue_depth(spec.dlq.url)
        checks.check(visible + in_flight == 0, f"DLQ empty ({visible + in_flight} messages)")


def duckdb_type(glue_type: str) -> str:
    # Everything is read as text, as Athena's LazySimpleSerDe sees it; int/timestamp validity is
    # checked separately (Athena would turn a malformed value into NULL without a word).
    return "VARCHAR"


def check_duckdb(checks: Checks, spec: tpl.StackSpec, download: Path, chosen: list[tuple], cols: Columns) -> None:
    columns = "{" + ", ".join(f"'{name}': '{duckdb_type(t)}'" for name, t in spec.glue_columns) + "}"
    files = str(download / "**" / "*.gz")
    con = duckdb.connect()
    con.execute(
        f"""CREATE VIEW dmarc AS SELECT * FROM read_csv('{files}', delim='\t', header=false, quote='',
            escape='', nullstr='\\N', auto_detect=false, columns={columns}, null_padding=true,
            strict_mode=false, hive_partitioning=true)"""
    )
    names = [n for n, _ in spec.glue_columns]
    checks.check(names == cols.names, "Glue columns == `dmarc-tsv schema` order")
    for name, glue_type in spec.glue_columns:
        if glue_type in ("int", "bigint"):
            bad = con.execute(f"SELECT count(*) FROM dmarc WHERE \"{name}\" <> '' AND NOT regexp_full_match(\"{name}\", '-?[0-9]+')").fetchone()[0]
            checks.check(bad == 0, f"{name} ({glue_type}): {bad} values Athena would read as NULL")
        if glue_type == "timestamp":
            bad = con.execute(f"SELECT count(*) FROM dmarc WHERE \"{name}\" <> '' AND try_strptime(\"{name}\", '%Y-%m-%d %H:%M:%S') IS NULL").fetchone()[0]
            checks.check(bad == 0, f"{name} (timestamp): {bad} values Athena would read as NULL")
    # The seed's README query: messages by disposition.
    got = dict(
        con.execute("SELECT disposition, sum(nullif(\"count\", '')::BIGINT) FROM dmarc GROUP BY disposition").fetchall()
    )
    want: dict[str, int] = collections.Counter()
    d, c = cols.index["disposition"], cols.index["count"]
    comparable_index = lambda i: i if "source_key" not in cols.index or i < cols.index["source_key"] else i - 1  # noqa: E731
    for row in chosen:
        value = row[comparable_index(c)]
        want[row[comparable_index(d)]] += int(value) if value else 0
    checks.check({k: int(v) for k, v in got.items()} == dict(want), f"sum(count) by disposition: DuckDB {got} vs parse {dict(want)}")
    partitions = con.execute("SELECT count(DISTINCT dt) FROM dmarc").fetchone()[0]
    checks.check(partitions >= 1, f"hive partition column dt readable ({partitions} partitions)")


def check_invocations(checks: Checks, outcome: Outcome, expected: Expected, clean: bool) -> None:
    ok = [c for c in outcome.invocations if c["status"] == 200 and isinstance(c["body"], dict)]
    errors = [c for c in outcome.invocations if c not in ok]
    if clean:
        checks.check(not errors, f"no failed invocation in a clean run: {errors[:2]}")
        ingest = [c["body"] for c in ok if c["name"] == INGEST]
        compact = [c["body"] for c in ok if c["name"] == COMPACT and c["payload"].get("action") == "compact"]
        quarantined = sum(b.get("quarantined", 0) for b in ingest)
        checks.check(quarantined == len(expected.unusable), f"ingest quarantined {quarantined} == unusable {len(expected.unusable)}")
        duplicates = sum(b.get("duplicates", 0) for b in compact)
        # SQS may deliver a message again (e.g. when staging a batch outlasts the visibility
        # timeout): the mail is staged twice and compaction drops the repeat. So every staged
        # report beyond the distinct ones must be counted as a duplicate, re-sent or redelivered.
        staged = sum(b.get("reports", 0) for b in ingest)
        checks.check(duplicates == staged - len(expected.reports),
                     f"compact duplicates {duplicates} == staged reports {staged} - distinct reports {len(expected.reports)}")
        checks.check(duplicates >= expected.duplicates, f"compact duplicates {duplicates} >= re-sent reports {expected.duplicates}")
        final = outcome.executions[-1]["output"]
        rows = sum(b.get("rows", 0) for b in compact)
        checks.check(final.get("outputRows") == rows, f"execution outputRows {final.get('outputRows')} == sum of compact rows {rows}")
    for call in ok:
        keys = set(call["body"])
        if call["name"] == INGEST:
            want = {"mails", "reports", "rows", "quarantined", "ignored", "more"}
        elif call["payload"].get("action") == "plan":
            want = {"partitions", "more"}
        elif call["payload"].get("action") == "compact":
            want = {"partition", "files", "rows", "duplicates", "more"}
        else:
            want = {"moved", "quarantined", "more"}
        if not want <= keys:
            checks.check(False, f"{call['name']} {call['payload']} answered {sorted(keys)}, contract {sorted(want)}")
            break


def measure_run(work: Path, scenario: Scenario, outcome: Outcome, spec: tpl.StackSpec, mails: int) -> dict:
    ok = [c for c in outcome.invocations if c["status"] == 200 and isinstance(c["body"], dict)]
    reports = sum(c["body"].get("reports", 0) for c in ok if c["name"] == INGEST)
    memory = {f.name: f.memory_mb for f in spec.functions.values()}
    events = sorted(work.glob(f"{scenario.name}.events*.jsonl"))
    return cost.measure(work / f"{scenario.name}.lambda.log", events, outcome.invocations, memory,
                        mails, reports, outcome.seconds, outcome.cpu_seconds)


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", type=Path, default=Path(os.environ.get("DMARC_E2E_VENV", ROOT / ".venv")))
    p.add_argument("--workdir", type=Path, help="keep logs, events and outputs here (default: a temp dir, removed on success)")
    p.add_argument("--template", type=Path, help="use this synthesized template instead of running cdk synth")
    p.add_argument("--mails", type=int, default=160, help="generated mails on top of the real corpus")
    p.add_argument("--no-corpus", action="store_true", help="generated mails only (volume runs)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--failpoints", default=",".join(DEFAULT_FAILPOINTS),
                   help="comma-separated DMARC_FAILPOINT values, one crash run each ('' = none)")
    p.add_argument("--maxrecords", default="1", help="DMARC_MAXRECORDS for the run (1 = 1024-row files, so big reports span files)")
    p.add_argument("--compactrows", default="3000", help="DMARC_COMPACTROWS (small: partitions take several compaction calls)")
    p.add_argument("--visibility", type=int, default=20,
                   help="DMARC_SQSPROCESSINGTIME: seconds before messages of a crashed ingest are redelivered "
                        "(0 = the template's value)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per execution")
    p.add_argument("--no-build", action="store_true", help="use the binaries already in target/ (cargo lambda watch still runs `cargo run`)")
    p.add_argument("--release", action="store_true", help="build and serve release binaries (volume runs)")
    p.add_argument("--cost-doc", type=Path, help="write the clean run's measured requests and cost into this markdown file")
    p.add_argument("--summary", type=Path, help="write a JSON summary (timings, invocations) here")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dmarc-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}")
    tools = Tools.find(args.venv)

    profile = ["--release"] if args.release else []
    if args.no_build:
        log("using the binaries already built in target/ (--no-build)")
    else:
        log(f"building the Lambdas and the CLI ({'release' if args.release else 'debug'})")
        run(["cargo", "build", "--quiet", *profile, "-p", INGEST, "-p", COMPACT, "-p", "dmarc-tsv"], cwd=ROOT)
    if args.release:
        tools.cli = ROOT / "target" / "release" / "dmarc-tsv"

    template_path = args.template or synth_template(work / "DmarcTsv.template.json")
    doc = tpl.load(template_path)
    asl = extract_asl(template_path, work / "state-machine.asl.json")
    spec, resolver = tpl.stack_spec(doc)

    aws = LocalAws(tools, work, free_port())
    try:
        tpl.set_queue_urls(spec, resolver, aws.endpoint)
        overrides = {
            "AWS_ENDPOINT_URL": aws.endpoint,
            "AWS_REGION": tpl.REGION,
            "AWS_DEFAULT_REGION": tpl.REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_EC2_METADATA_DISABLED": "true",
            "DMARC_MAXRECORDS": args.maxrecords,
            "DMARC_COMPACTROWS": args.compactrows,
            # moto's queue is consistent at once: one short empty poll means empty (AWS needs more).
            "DMARC_POLLTIMEOUT": "1",
            "DMARC_EMPTYPOLLS": "1",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        if args.visibility > 0:
            # Messages of a crashed ingest come back after this; the retry run waits for them.
            overrides["DMARC_SQSPROCESSINGTIME"] = str(args.visibility)
        base_env = {}
        for name in (INGEST, COMPACT):
            env = tpl.function_env(doc, spec, resolver, name)
            env.update(overrides)
            base_env[name] = env
        env = base_env[INGEST]

        cols = Columns([n for n, _ in spec.glue_columns])
        incoming = env.get("DMARC_INCOMINGPREFIX", "incoming/")
        if spec.notification_prefix != incoming:
            raise HarnessError(f"notification prefix {spec.notification_prefix!r} != DMARC_INCOMINGPREFIX {incoming!r}")
        mails = [] if args.no_corpus else corpus_mails(incoming)
        mails += [Mail(m.key, m.body, m.kind) for m in mailgen.volume(args.mails, args.seed, 1_717_200_000 // 86400 * 86400, 5, incoming)]
        random.Random(args.seed).shuffle(mails)
        log(f"{len(mails)} mails; expected rows from `dmarc-tsv parse`")
        expected = parse_expected(tools.cli, mails, cols, work / "parse-input")
        log(f"expected: {len(expected.reports)} reports, {len(expected.rows())} rows, {expected.duplicates} re-sent, "
            f"{len(expected.unusable)} unusable mails")

        scenarios = [Scenario("clean")]
        scenarios += [Scenario(f"crash-{fp.replace(':', '-')}", fp) for fp in args.failpoints.split(",") if fp.strip()]
        summary = {"mails": len(mails), "rows": len(expected.rows()), "scenarios": {}}
        total_failures = 0
        for scenario in scenarios:
            outcome = run_scenario(scenario, tools, aws, spec, base_env, asl, mails, work, args.timeout, args.release)
            checks = Checks(scenario.name)
            download = work / "output" / scenario.name
            chosen = check_outputs(checks, aws, spec, env, cols, expected, mails, download)
            check_mails_and_leftovers(checks, aws, spec, env, expected)
            check_duckdb(checks, spec, download, chosen, cols)
            check_invocations(checks, outcome, expected, clean=scenario.failpoint is None)
            log(f"[{scenario.name}] {checks.passed} checks passed, {len(checks.failures)} failed, "
                f"{len(outcome.executions)} execution(s), {outcome.seconds:.1f}s")
            summary["scenarios"][scenario.name] = {
                "seconds": round(outcome.seconds, 1),
                "executions": [e["ok"] for e in outcome.executions],
                "invocations": len(outcome.invocations),
                "failed_checks": checks.failures,
            }
            total_failures += len(checks.failures)
            if scenario.failpoint is None:
                measured = measure_run(work, scenario, outcome, spec, len(mails))
                summary["scenarios"][scenario.name]["measured"] = measured
                log(f"[{scenario.name}] requests: s3 {measured['s3']}, sqs {measured['sqs']}, "
                    f"{measured['transitions']} transitions; cost per million reports "
                    f"{measured['cost_per_million_reports']} = ${measured['total_per_million_reports']}")
                if measured["estimate"]:
                    log(f"[{scenario.name}] function CPU seconds {measured['cpu_seconds']}; Lambda ESTIMATE "
                        f"(CPU + assumed request latency, not measured) {measured['estimate']}")
                if args.cost_doc:
                    label = f"scripts/e2e-volume, {time.strftime('%Y-%m-%d', time.gmtime())}"
                    cost.write_doc(args.cost_doc, cost.markdown(measured, label))
                    log(f"wrote the measured figures into {args.cost_doc}")
        if args.summary:
            args.summary.write_text(json.dumps(summary, indent=2))
    finally:
        aws.stop()
    passed = len(scenarios) - sum(1 for s in summary["scenarios"].values() if s["failed_checks"])
    print(f"e2e: {passed} passed, {len(scenarios) - passed} failed")
    if total_failures:
        log(f"logs and outputs kept in {work}")
        return 1
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (HarnessError, tpl.TemplateError) as e:
        print(f"e2e: ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        print(f"e2e: ERROR: {' '.join(map(str, e.cmd))} exited {e.returncode}", file=sys.stderr)
        sys.exit(1)
