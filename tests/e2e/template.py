"""Reads what the harness needs out of the synthesized CloudFormation template, so the local
setup follows the CDK stack instead of a copy of it: the data bucket, the queue and its DLQ
(redrive), the S3 notification prefix, each Lambda's environment, and the Glue table columns.

CloudFormation references are resolved against the local resources (moto names/URLs, fake ARNs).
Anything the harness cannot resolve is an error: a silently wrong setting would test nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REGION = "us-east-1"
# Tag the CDK app puts on each pipeline function, naming its binary (= the name cargo lambda watch
# serves it under, and the name infra/scripts/extract-asl.ts puts in the Task ARNs).
FUNCTION_TAG = "dmarc-tsv:function"
ACCOUNT = "123456789012"


class TemplateError(Exception):
    pass


@dataclass
class QueueSpec:
    logical_id: str
    name: str
    visibility_timeout: int | None = None
    dlq_logical_id: str | None = None
    max_receive_count: int | None = None
    url: str = ""  # set once created locally

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}"


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None
    memory_mb: int = 128


@dataclass
class StackSpec:
    bucket_logical_id: str
    bucket: str
    queue: QueueSpec
    dlq: QueueSpec | None
    notification_prefix: str
    functions: dict[str, FunctionSpec]
    glue_columns: list[tuple[str, str]]
    glue_partition_keys: list[tuple[str, str]]
    glue_location: str | None


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def _resources(doc: dict, kind: str) -> dict[str, dict]:
    return {lid: r for lid, r in doc.get("Resources", {}).items() if r.get("Type") == kind}


def _local_name(logical_id: str, props: dict, name_prop: str) -> str:
    name = props.get(name_prop)
    if isinstance(name, str):
        return name
    # CDK generates physical names; locally a lower-cased logical id is as good and stable.
    return re.sub(r"[^a-z0-9-]", "-", logical_id.lower())[:63]


class Resolver:
    """Resolves Ref / Fn::GetAtt / Fn::Join / Fn::Sub / Fn::Select for the resources we create."""

    def __init__(self, doc: dict, values: dict[tuple[str, str], str]):
        self.doc = doc
        # (logical id, attribute or "Ref") -> value
        self.values = dict(values)
        self.values.update(
            {
                ("AWS::Region", "Ref"): REGION,
                ("AWS::AccountId", "Ref"): ACCOUNT,
                ("AWS::Partition", "Ref"): "aws",
                ("AWS::URLSuffix", "Ref"): "amazonaws.com",
                ("AWS::StackName", "Ref"): "DmarcTsv",
            }
        )

    def lookup(self, logical_id: str, attribute: str) -> str:
        if (logical_id, attribute) in self.values:
            return self.values[(logical_id, attribute)]
        params = self.doc.get("Parameters", {})
        if attribute == "Ref" and logical_id in params and "Default" in params[logical_id]:
            return str(params[logical_id]["Default"])
        raise TemplateError(f"cannot resolve {logical_id}.{attribute} locally")

    def resolve(self, value):
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            raise TemplateError(f"unexpected template value {value!r}")
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self.lookup(arg, "Ref")
            if fn == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.lookup(logical_id, attribute)
            if fn == "Fn::Join":
                sep, parts = arg
                return sep.join(str(self.resolve(p)) for p in parts)
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(index)]
            if fn == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                extra = {k: self.resolve(v) for k, v in extra.items()}

                def sub(m: re.Match) -> str:
                    ref = m.group(1)
                    if ref in extra:
                        return str(extra[ref])
                    if "." in ref:
                        lid, attr = ref.split(".", 1)
                        return self.lookup(lid, attr)
                    return self.lookup(ref, "Ref")

                return re.sub(r"\$\{([^}!][^}]*)\}", sub, text)
        return {k: self.resolve(v) for k, v in value.items()}


def _queues(doc: dict) -> dict[str, QueueSpec]:
    queues = {}
    for lid, r in _resources(doc, "AWS::SQS::Queue").items():
        props = r.get("Properties", {})
        spec = QueueSpec(lid, _local_name(lid, props, "QueueName"), props.get("VisibilityTimeout"))
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive.get("deadLetterTargetArn", {})
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                spec.dlq_logical_id = target["Fn::GetAtt"][0]
            spec.max_receive_count = int(redrive.get("maxReceiveCount", 0)) or None
        queues[lid] = spec
    return queues


def _notification(doc: dict) -> tuple[str, str, str]:
    """(bucket logical id, queue logical id, key prefix) of the S3 -> SQS notification."""
    for r in _resources(doc, "Custom::S3BucketNotifications").values():
        props = r.get("Properties", {})
        bucket_ref = props.get("BucketName", {})
        bucket_lid = bucket_ref.get("Ref") if isinstance(bucket_ref, dict) else None
        for qc in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
            arn = qc.get("QueueArn", {})
            queue_lid = arn.get("Fn::GetAtt", [None])[0] if isinstance(arn, dict) else None
            prefix = ""
            for rule in qc.get("Filter", {}).get("Key", {}).get("FilterRules", []):
                if rule.get("Name", "").lower() == "prefix":
                    prefix = rule.get("Value", "")
            if bucket_lid and queue_lid:
                return bucket_lid, queue_lid, prefix
    raise TemplateError("no S3 -> SQS bucket notification (Custom::S3BucketNotifications) in the template")


def stack_spec(doc: dict) -> tuple[StackSpec, Resolver]:
    queues = _queues(doc)
    bucket_lid, queue_lid, prefix = _notification(doc)
    if queue_lid not in queues:
        raise TemplateError(f"notification targets {queue_lid}, which is not an SQS queue")
    queue = queues[queue_lid]
    dlq = queues.get(queue.dlq_logical_id) if queue.dlq_logical_id else None
    buckets = _resources(doc, "AWS::S3::Bucket")
    bucket = _local_name(bucket_lid, buckets.get(bucket_lid, {}).get("Properties", {}), "BucketName")

    values: dict[tuple[str, str], str] = {
        (bucket_lid, "Ref"): bucket,
        (bucket_lid, "Arn"): f"arn:aws:s3:::{bucket}",
        (bucket_lid, "DomainName"): f"{bucket}.s3.amazonaws.com",
        (bucket_lid, "RegionalDomainName"): f"{bucket}.s3.{REGION}.amazonaws.com",
    }
    functions = {}
    for lid, r in _resources(doc, "AWS::Lambda::Function").items():
        props = r.get("Properties", {})
        tags = {t.get("Key"): t.get("Value") for t in props.get("Tags", []) if isinstance(t, dict)}
        name = tags.get(FUNCTION_TAG) or _local_name(lid, props, "FunctionName")
        values[(lid, "Ref")] = name
        values[(lid, "Arn")] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        functions[lid] = FunctionSpec(lid, name, {}, props.get("Timeout"), int(props.get("MemorySize", 128)))
    resolver = Resolver(doc, values)
    for q in queues.values():
        # The URL is filled in by the harness once moto created the queue (its port is known then).
        resolver.values[(q.logical_id, "QueueName")] = q.name
        resolver.values[(q.logical_id, "Arn")] = q.arn

    glue_columns: list[tuple[str, str]] = []
    partition_keys: list[tuple[str, str]] = []
    location = None
    for r in _resources(doc, "AWS::Glue::Table").values():
        table = r.get("Properties", {}).get("TableInput", {})
        sd = table.get("StorageDescriptor", {})
        glue_columns = [(c["Name"], c["Type"]) for c in sd.get("Columns", [])]
        partition_keys = [(c["Name"], c["Type"]) for c in table.get("PartitionKeys", [])]
        location = json.dumps(sd.get("Location"))
        if glue_columns:
            break
    if not glue_columns:
        raise TemplateError("no AWS::Glue::Table with columns in the template")

    spec = StackSpec(bucket_lid, bucket, queue, dlq, prefix, functions, glue_columns, partition_keys, location)
    return spec, resolver


def set_queue_urls(spec: StackSpec, resolver: Resolver, endpoint: str) -> None:
    for q in [spec.queue, spec.dlq]:
        if q is None:
            continue
        q.url = f"{endpoint}/{ACCOUNT}/{q.name}"
        resolver.values[(q.logical_id, "Ref")] = q.url
        resolver.values[(q.logical_id, "QueueUrl")] = q.url


def function_env(doc: dict, spec: StackSpec, resolver: Resolver, function_name: str) -> dict[str, str]:
    """The Lambda's environment from the template, references resolved to local resources."""
    for lid, fn in spec.functions.items():
        if fn.name != function_name:
            continue
        props = doc["Resources"][lid].get("Properties", {})
        raw = props.get("Environment", {}).get("Variables", {})
        return {k: str(resolver.resolve(v)) for k, v in raw.items()}
    known = ", ".join(sorted(f.name for f in spec.functions.values()))
    raise TemplateError(f"no Lambda function named {function_name} in the template (have: {known})")
