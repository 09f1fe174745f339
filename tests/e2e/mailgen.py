"""Generated DMARC report mails for the end-to-end harness: valid reports (gzip and zip
attachments), re-sent duplicates (same report identity, new mail, other container) and bad mails
that must end in quarantine. Deterministic for a given seed, so failures reproduce.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone

REPORTERS = [
    ("google.com", "noreply-dmarc-support@google.com"),
    ("Yahoo", "dmarchelp@yahooinc.com"),
    ("Enterprise Outlook", "dmarcreport@microsoft.com"),
    ("Mail.Ru", "dmarc_support@corp.mail.ru"),
    ("example reporter, Inc.", "dmarc@reporter.example"),
]
DOMAINS = ["example.com", "example.org", "sub.example.net"]
DISPOSITIONS = ["none", "none", "none", "quarantine", "reject"]
RESULTS = ["pass", "pass", "fail"]


@dataclass
class Mail:
    """One object to put under `incoming/`."""

    key: str
    body: bytes
    # "report": rows expected; "duplicate": re-sent report, deduplicated; "bad": quarantined.
    kind: str


def _record(rng: random.Random, domain: str) -> str:
    ip = f"192.0.2.{rng.randint(1, 254)}" if rng.random() < 0.8 else f"2001:db8::{rng.randint(1, 0xFFFF):x}"
    dkim, spf = rng.choice(RESULTS), rng.choice(RESULTS)
    return f"""  <record>
    <row>
      <source_ip>{ip}</source_ip>
      <count>{rng.randint(1, 40)}</count>
      <policy_evaluated>
        <disposition>{rng.choice(DISPOSITIONS)}</disposition>
        <dkim>{dkim}</dkim>
        <spf>{spf}</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>{domain}</domain>
        <selector>s{rng.randint(1, 3)}</selector>
        <result>{dkim}</result>
      </dkim>
      <spf>
        <domain>{domain}</domain>
        <result>{spf}</result>
      </spf>
    </auth_results>
  </record>
"""


def aggregate_xml(rng: random.Random, org: str, email: str, report_id: str, domain: str, begin: int, records: int) -> bytes:
    body = "".join(_record(rng, domain) for _ in range(records))
    org_xml = org.replace("&", "&amp;")
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>{org_xml}</org_name>
    <email>{email}</email>
    <report_id>{report_id}</report_id>
    <date_range>
      <begin>{begin}</begin>
      <end>{begin + 86399}</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>none</p>
    <sp>none</sp>
    <pct>100</pct>
  </policy_published>
{body}</feedback>
""".encode()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        # A fixed timestamp keeps the bytes deterministic.
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, data)
    return buf.getvalue()


def report_mail(
    reporter_email: str,
    to: str,
    subject: str,
    message_id: str,
    sent: int,
    attachment: tuple[str, str, bytes] | None,
    text: str = "This is an aggregate report from the reporter.",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = reporter_email
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(datetime.fromtimestamp(sent, tz=timezone.utc))
    msg.set_content(text)
    if attachment is not None:
        name, content_type, data = attachment
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def _container(rng: random.Random, stem: str, xml: bytes, prefer_zip: bool) -> tuple[str, str, bytes]:
    if prefer_zip:
        return (f"{stem}.zip", "application/zip", _zip(f"{stem}.xml", xml))
    return (f"{stem}.xml.gz", "application/gzip", gzip.compress(xml, mtime=0))


def _bad_mail(rng: random.Random, index: int, sent: int) -> bytes:
    to = "dmarc@example.com"
    variant = index % 3
    if variant == 0:
        return report_mail("someone@example.org", to, "Hello", f"<bad-{index}@e2e>", sent, None, "no report attached")
    if variant == 1:
        junk = bytes(rng.getrandbits(8) for _ in range(512))
        return report_mail(
            "noreply@reporter.example", to, "Report domain: example.com", f"<bad-{index}@e2e>", sent,
            ("example.com!broken.xml.gz", "application/gzip", junk),
        )
    not_dmarc = b"<?xml version='1.0'?><invoice><total>12</total></invoice>"
    return report_mail(
        "noreply@reporter.example", to, "Report domain: example.org", f"<bad-{index}@e2e>", sent,
        ("invoice.zip", "application/zip", _zip("invoice.xml", not_dmarc)),
    )


def volume(count: int, seed: int, first_day: int, days: int, prefix: str = "incoming/") -> list[Mail]:
    """`count` mails: ~90% reports (1-30 records; a few large ones), ~6% re-sent duplicates of an
    earlier report, ~4% bad mails. Report begin dates spread over `days` UTC days from `first_day`
    (seconds since the epoch, midnight), so several output partitions are written."""
    rng = random.Random(seed)
    mails: list[Mail] = []
    sent_reports: list[tuple[str, str, str, bytes]] = []  # (reporter email, to, stem, xml)
    for i in range(count):
        sent = first_day + rng.randint(0, days * 86400)
        roll = rng.random()
        key = f"{prefix}e2e-{seed}-{i:06d}"
        if roll < 0.04:
            mails.append(Mail(key, _bad_mail(rng, i, sent), "bad"))
            continue
        if roll < 0.10 and sent_reports:
            email, to, stem, xml = rng.choice(sent_reports)
            attachment = _container(rng, stem, xml, prefer_zip=rng.random() < 0.5)
            body = report_mail(email, to, f"Report domain: resend {stem}", f"<dup-{i}@e2e>", sent, attachment)
            mails.append(Mail(key, body, "duplicate"))
            continue
        org, email = rng.choice(REPORTERS)
        domain = rng.choice(DOMAINS)
        begin = first_day + rng.randrange(days) * 86400
        records = rng.randint(1, 30) if rng.random() > 0.01 else rng.randint(800, 1500)
        report_id = f"{seed}.{i}.{rng.getrandbits(32):08x}"
        xml = aggregate_xml(rng, org, email, report_id, domain, begin, records)
        stem = f"{org.split()[0].lower()}!{domain}!{begin}!{begin + 86399}"
        to = rng.choice(["dmarc@example.com", "DMARC Reports <dmarc-reports@example.org>"])
        attachment = _container(rng, stem, xml, prefer_zip=rng.random() < 0.3)
        body = report_mail(email, to, f"Report domain: {domain} Submitter: {org}", f"<r-{i}@e2e>", sent, attachment)
        mails.append(Mail(key, body, "report"))
        sent_reports.append((email, to, stem, xml))
    return mails
