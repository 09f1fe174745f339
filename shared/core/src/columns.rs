//! The one and only column list: name, Athena type and how each value is read from a row.
//! Columns 1-33 are the seed tool's Athena columns, unchanged; the rest are appended.
//! `dmarc-tsv schema` prints this table; the CDK app reads its JSON form; docs are generated from it.

use std::borrow::Cow;

use crate::model::RowView;

/// One output column.
pub struct Column {
    pub name: &'static str,
    /// Athena / Hive type (`string`, `timestamp`, `int`).
    pub athena_type: &'static str,
    /// What the column holds, for docs and the Glue table comment.
    pub description: &'static str,
    pub value: for<'a> fn(&RowView<'a>) -> Cow<'a, str>,
}

fn b(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

/// Values of several results joined with `|`, positions aligned, empty values kept.
fn joined<'a, T>(items: &'a [T], field: fn(&'a T) -> &'a str) -> Cow<'a, str> {
    match items {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(field(one)),
        [first, rest @ ..] => {
            let mut out = String::with_capacity(items.len() * 16);
            out.push_str(field(first));
            for item in rest {
                out.push('|');
                out.push_str(field(item));
            }
            Cow::Owned(out)
        }
    }
}

/// Non-empty values joined with `|` (the seed's `DelimitedAppend`).
fn joined_nonempty<'a, T>(items: &'a [T], field: fn(&'a T) -> &'a str) -> Cow<'a, str> {
    let parts: Vec<&str> = items.iter().map(field).filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(parts.join("|")),
    }
}

macro_rules! col {
    ($name:literal, $ty:literal, $desc:literal, |$r:ident| $e:expr) => {
        Column {
            name: $name,
            athena_type: $ty,
            description: $desc,
            value: |$r| $e,
        }
    };
}

pub static COLUMNS: &[Column] = &[
    col!(
        "dmarc_report_to",
        "string",
        "first To address of the mail that carried the report",
        |r| b(&r.mail.report_to)
    ),
    col!("report_id", "string", "report_metadata/report_id", |r| b(
        &r.meta.report_id
    )),
    col!(
        "date_begin",
        "timestamp",
        "report_metadata/date_range/begin, UTC",
        |r| b(r.date_begin)
    ),
    col!(
        "date_end",
        "timestamp",
        "report_metadata/date_range/end, UTC",
        |r| b(r.date_end)
    ),
    col!(
        "org_name",
        "string",
        "report_metadata/org_name: the reporter",
        |r| b(&r.meta.org_name)
    ),
    col!("org_email", "string", "report_metadata/email", |r| b(&r
        .meta
        .email)),
    col!(
        "org_extra_contact_info",
        "string",
        "report_metadata/extra_contact_info",
        |r| b(&r.meta.extra_contact_info)
    ),
    col!(
        "error_string",
        "string",
        "report_metadata/error values joined with |",
        |r| Cow::Owned(
            r.meta
                .errors
                .iter()
                .filter(|e| !e.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("|")
        )
    ),
    col!(
        "published_policy_domain_name",
        "string",
        "policy_published/domain",
        |r| b(&r.meta.policy.domain)
    ),
    col!(
        "published_policy_aspf",
        "string",
        "policy_published/aspf",
        |r| b(&r.meta.policy.aspf)
    ),
    col!(
        "published_policy_adkim",
        "string",
        "policy_published/adkim",
        |r| b(&r.meta.policy.adkim)
    ),
    col!(
        "published_policy_domain",
        "string",
        "policy_published/p (name kept from the seed tool)",
        |r| b(&r.meta.policy.p)
    ),
    col!(
        "published_policy_subdomains",
        "string",
        "policy_published/sp",
        |r| b(&r.meta.policy.sp)
    ),
    col!(
        "published_policy_percentage",
        "int",
        "policy_published/pct; empty when absent (RFC 9990 has none)",
        |r| b(r.meta.policy.pct.as_deref().unwrap_or(""))
    ),
    col!(
        "published_policy_fo",
        "string",
        "policy_published/fo",
        |r| b(&r.meta.policy.fo)
    ),
    col!("header_from", "string", "identifiers/header_from", |r| b(
        &r.record.header_from
    )),
    col!(
        "envelope_from",
        "string",
        "identifiers/envelope_from",
        |r| b(&r.record.envelope_from)
    ),
    col!("envelope_to", "string", "identifiers/envelope_to", |r| b(
        &r.record.envelope_to
    )),
    col!(
        "auth_results_spf_domain",
        "string",
        "first auth_results/spf/domain",
        |r| b(r.record.spf.first().map_or("", |s| &s.domain))
    ),
    col!(
        "auth_results_spf_selector",
        "string",
        "always empty: SPF has no selector (kept for the seed's layout; scopes are in spf_scopes)",
        |_r| b("")
    ),
    col!(
        "auth_results_spf_result",
        "string",
        "first auth_results/spf/result",
        |r| b(r.record.spf.first().map_or("", |s| &s.result))
    ),
    col!(
        "auth_results_spf_humanresult",
        "string",
        "first auth_results/spf/human_result",
        |r| b(r.record.spf.first().map_or("", |s| &s.human_result))
    ),
    col!(
        "auth_results_dkim_domain",
        "string",
        "first auth_results/dkim/domain",
        |r| b(r.record.dkim.first().map_or("", |d| &d.domain))
    ),
    col!(
        "auth_results_dkim_selector",
        "string",
        "first auth_results/dkim/selector",
        |r| b(r.record.dkim.first().map_or("", |d| &d.selector))
    ),
    col!(
        "auth_results_dkim_result",
        "string",
        "first auth_results/dkim/result",
        |r| b(r.record.dkim.first().map_or("", |d| &d.result))
    ),
    col!(
        "auth_results_dkim_humanresult",
        "string",
        "first auth_results/dkim/human_result",
        |r| b(r.record.dkim.first().map_or("", |d| &d.human_result))
    ),
    col!("source_ip", "string", "row/source_ip", |r| b(&r
        .record
        .source_ip)),
    col!(
        "count",
        "int",
        "row/count: messages this row stands for",
        |r| b(&r.record.count)
    ),
    col!(
        "disposition",
        "string",
        "row/policy_evaluated/disposition",
        |r| b(&r.record.disposition)
    ),
    col!("policy_dkim", "string", "row/policy_evaluated/dkim", |r| b(
        &r.record.policy_dkim
    )),
    col!("policy_spf", "string", "row/policy_evaluated/spf", |r| b(
        &r.record.policy_spf
    )),
    col!(
        "policy_override_reasons",
        "string",
        "row/policy_evaluated/reason/type values joined with |",
        |r| joined_nonempty(&r.record.reasons, |x| &x.kind)
    ),
    col!(
        "policy_override_comments",
        "string",
        "row/policy_evaluated/reason/comment values joined with |",
        |r| joined_nonempty(&r.record.reasons, |x| &x.comment)
    ),
    col!("report_schema", "string", "rfc7489 or rfc9990", |r| b(r
        .meta
        .schema
        .as_str())),
    col!(
        "report_generator",
        "string",
        "report_metadata/generator (RFC 9990)",
        |r| b(&r.meta.generator)
    ),
    col!(
        "policy_np",
        "string",
        "policy_published/np (RFC 9990)",
        |r| b(&r.meta.policy.np)
    ),
    col!(
        "policy_testing",
        "string",
        "policy_published/testing (RFC 9990)",
        |r| b(&r.meta.policy.testing)
    ),
    col!(
        "policy_discovery_method",
        "string",
        "policy_published/discovery_method (RFC 9990)",
        |r| b(&r.meta.policy.discovery_method)
    ),
    col!(
        "dkim_domains",
        "string",
        "every auth_results/dkim/domain, | joined, aligned",
        |r| joined(&r.record.dkim, |d| &d.domain)
    ),
    col!(
        "dkim_selectors",
        "string",
        "every auth_results/dkim/selector, | joined, aligned",
        |r| joined(&r.record.dkim, |d| &d.selector)
    ),
    col!(
        "dkim_results",
        "string",
        "every auth_results/dkim/result, | joined, aligned",
        |r| joined(&r.record.dkim, |d| &d.result)
    ),
    col!(
        "spf_domains",
        "string",
        "every auth_results/spf/domain, | joined, aligned",
        |r| joined(&r.record.spf, |s| &s.domain)
    ),
    col!(
        "spf_scopes",
        "string",
        "every auth_results/spf/scope, | joined, aligned",
        |r| joined(&r.record.spf, |s| &s.scope)
    ),
    col!(
        "spf_results",
        "string",
        "every auth_results/spf/result, | joined, aligned",
        |r| joined(&r.record.spf, |s| &s.result)
    ),
    col!(
        "source_key",
        "string",
        "storage key or file name of the mail the report came from",
        |r| b(&r.mail.source_key)
    ),
];

/// Index of a column by name.
pub fn index_of(name: &str) -> Option<usize> {
    COLUMNS.iter().position(|c| c.name == name)
}

/// The seed tool's 33 legacy columns come first, unchanged.
pub const LEGACY_COLUMN_COUNT: usize = 33;

/// `name type, name type, …` on one line: the seed's `column-definition-for-aws-athena.txt` format.
pub fn athena_column_definition() -> String {
    COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.athena_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON array of `{name, type, comment}`: what the CDK app reads for the Glue table.
pub fn columns_json() -> String {
    let cols: Vec<serde_json::Value> = COLUMNS
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "type": c.athena_type, "comment": c.description}))
        .collect();
    let mut s = serde_json::to_string_pretty(&cols).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_COLUMNS: &str = "dmarc_report_to string, report_id string, date_begin timestamp, date_end timestamp, org_name string, org_email string, org_extra_contact_info string, error_string string, published_policy_domain_name string, published_policy_aspf string, published_policy_adkim string, published_policy_domain string, published_policy_subdomains string, published_policy_percentage int, published_policy_fo string, header_from string, envelope_from string, envelope_to string, auth_results_spf_domain string, auth_results_spf_selector string, auth_results_spf_result string, auth_results_spf_humanresult string, auth_results_dkim_domain string, auth_results_dkim_selector string, auth_results_dkim_result string, auth_results_dkim_humanresult string, source_ip string, count int, disposition string, policy_dkim string, policy_spf string, policy_override_reasons string, policy_override_comments string";

    #[test]
    fn first_33_columns_are_the_seed_columns_in_order() {
        let def = athena_column_definition();
        assert!(def.starts_with(SEED_COLUMNS), "{def}");
        assert_eq!(SEED_COLUMNS.split(", ").count(), LEGACY_COLUMN_COUNT);
    }

    #[test]
    fn appended_columns_follow_in_the_documented_order() {
        let names: Vec<&str> = COLUMNS[LEGACY_COLUMN_COUNT..]
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "report_schema",
                "report_generator",
                "policy_np",
                "policy_testing",
                "policy_discovery_method",
                "dkim_domains",
                "dkim_selectors",
                "dkim_results",
                "spf_domains",
                "spf_scopes",
                "spf_results",
                "source_key"
            ]
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            COLUMNS.iter().all(|c| seen.insert(c.name)),
            "column names are unique"
        );
    }
}
