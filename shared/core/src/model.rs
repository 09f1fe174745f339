//! The data a report yields: metadata shared by all its rows, one [`Record`] per `<record>`, and
//! the [`RowView`] the column table ([`crate::columns`]) reads values from.

use serde::{Deserialize, Serialize};

/// Which schema a report follows. RFC 9990 (DMARCbis) is recognised by its namespace
/// `urn:ietf:params:xml:ns:dmarc-2.0` or by `<version>2.0</version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    #[default]
    Rfc7489,
    Rfc9990,
}

impl Schema {
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::Rfc7489 => "rfc7489",
            Schema::Rfc9990 => "rfc9990",
        }
    }
}

/// `<policy_published>`. Enum-like values are trimmed and lower-cased by the parser.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPublished {
    pub domain: String,
    pub adkim: String,
    pub aspf: String,
    pub p: String,
    pub sp: String,
    /// `None` when the report has no `<pct>` (column stays empty, not 0).
    pub pct: Option<String>,
    pub fo: String,
    pub np: String,
    pub testing: String,
    pub discovery_method: String,
}

/// `<report_metadata>` + `<policy_published>` + schema facts: everything shared by a report's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    pub schema: Schema,
    pub org_name: String,
    pub email: String,
    pub extra_contact_info: String,
    pub report_id: String,
    /// Seconds since the epoch, UTC.
    pub begin: i64,
    pub end: i64,
    /// `<error>` elements, in order.
    pub errors: Vec<String>,
    /// RFC 9990 `<generator>`.
    pub generator: String,
    pub policy: PolicyPublished,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimResult {
    pub domain: String,
    pub selector: String,
    pub result: String,
    pub human_result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfResult {
    pub domain: String,
    pub scope: String,
    pub result: String,
    pub human_result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideReason {
    pub kind: String,
    pub comment: String,
}

/// One `<record>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub source_ip: String,
    /// Kept as text so an odd value is visible; the column is an Athena int.
    pub count: String,
    pub disposition: String,
    pub policy_dkim: String,
    pub policy_spf: String,
    pub reasons: Vec<OverrideReason>,
    pub header_from: String,
    pub envelope_from: String,
    pub envelope_to: String,
    pub dkim: Vec<DkimResult>,
    pub spf: Vec<SpfResult>,
}

/// Facts about the mail a report came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailInfo {
    /// The mail's first To address (`unknown` when there is none, as the seed tool wrote).
    pub report_to: String,
    /// The mail's storage key or file name.
    pub source_key: String,
}

/// What one row is built from. Column values are read through [`crate::columns::COLUMNS`].
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    pub mail: &'a MailInfo,
    pub meta: &'a ReportMeta,
    pub record: &'a Record,
    /// `meta.begin` and `meta.end` as [`utc_datetime`]: formatted once per report, not per row.
    pub date_begin: &'a str,
    pub date_end: &'a str,
}

/// What identifies a report: the same report delivered twice has the same identity.
/// Domain-like parts compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportIdentity {
    pub org_name: String,
    pub report_id: String,
    pub policy_domain: String,
    pub begin: i64,
    pub end: i64,
}

/// How one report went: its identity, how many records and rows, and what was skipped inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Where in the mail the report was found (`part 2 "x.zip" > member "a.xml"`).
    pub location: String,
    pub identity: ReportIdentity,
    pub schema: Schema,
    /// `<record>` elements seen.
    pub records: u64,
    /// Rows emitted (records minus unreadable minus excluded by `exclude_disposition_none`).
    pub rows: u64,
    /// Records left out on purpose by `-excludedispositionnone`.
    pub excluded: u64,
    /// Unreadable records, or a truncated tail, with reasons.
    pub problems: Vec<crate::Skipped>,
}

impl ReportIdentity {
    /// The identity a report's metadata gives.
    pub fn of(meta: &ReportMeta) -> Self {
        ReportIdentity {
            org_name: meta.org_name.clone(),
            report_id: meta.report_id.clone(),
            policy_domain: meta.policy.domain.clone(),
            begin: meta.begin,
            end: meta.end,
        }
    }

    /// Stable hex digest of the identity, normalised (trimmed; org and domain lower-cased),
    /// used for deduplication across mails, deliveries and runs.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.org_name.trim().to_lowercase(),
            self.report_id.trim().to_string(),
            self.policy_domain
                .trim()
                .trim_end_matches('.')
                .to_lowercase(),
            self.begin.to_string(),
            self.end.to_string(),
        ] {
            // Length-prefix each part so ("ab","c") and ("a","bc") differ.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The output partition of the report: its begin date, UTC, `YYYY-MM-DD`.
    pub fn partition(&self) -> String {
        utc_date(self.begin)
    }
}

impl std::fmt::Display for ReportIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}-{}",
            self.org_name, self.report_id, self.policy_domain, self.begin, self.end
        )
    }
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian), after Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS`, UTC, as the seed tool wrote timestamps.
pub fn utc_datetime(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    // Two of these per row: written digit by digit, not through the formatting machinery.
    if let Ok(year @ 0..=9999) = u32::try_from(y) {
        let (hh, mm, ss) = ((s / 3600) as u32, ((s % 3600) / 60) as u32, (s % 60) as u32);
        let mut out = String::with_capacity(19);
        for (value, width, sep) in [
            (year, 4, '-'),
            (m, 2, '-'),
            (d, 2, ' '),
            (hh, 2, ':'),
            (mm, 2, ':'),
            (ss, 2, '\0'),
        ] {
            push_digits(&mut out, value, width);
            if sep != '\0' {
                out.push(sep);
            }
        }
        return out;
    }
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

/// `value` as exactly `width` decimal digits (zero-padded; `value` < 10^width).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for position in (0..width).rev() {
        let digit = (value / 10u32.pow(position)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// `YYYY-MM-DD`, UTC.
pub fn utc_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(utc_datetime(1_442_707_200), "2015-09-20 00:00:00");
        assert_eq!(utc_datetime(1_700_086_399), "2023-11-15 22:13:19");
        assert_eq!(utc_datetime(-1), "1969-12-31 23:59:59");
        assert_eq!(utc_datetime(253_402_300_799), "9999-12-31 23:59:59");
        assert_eq!(utc_datetime(253_402_300_800), "10000-01-01 00:00:00");
        assert_eq!(utc_datetime(951_825_600), "2000-02-29 12:00:00");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn identity_digest_ignores_case_of_names_but_not_of_report_id() {
        let a = ReportIdentity {
            org_name: "Google.com".into(),
            report_id: "AbC".into(),
            policy_domain: "Example.COM".into(),
            begin: 1,
            end: 2,
        };
        let mut b = a.clone();
        b.org_name = "google.com ".into();
        b.policy_domain = "example.com".into();
        assert_eq!(a.digest(), b.digest());
        b.report_id = "abc".into();
        assert_ne!(a.digest(), b.digest());
        b.report_id = "AbC".into();
        b.end = 3;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.partition(), "1970-01-01");
    }
}
