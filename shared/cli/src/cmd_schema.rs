//! `dmarc-tsv schema`: the output columns, as `name<TAB>type` lines, as the JSON the CDK app
//! reads (`--json`), or as an Athena `CREATE EXTERNAL TABLE` statement (`--athena`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use dmarc_tsv_core::columns::{COLUMNS, columns_json};

#[derive(Debug, Parser)]
#[command(
    about = "Print the output columns with their Athena types",
    long_about = "Print the output columns with their Athena types: `name<TAB>type` lines by \
                  default, the JSON the CDK app reads with --json, or an Athena CREATE EXTERNAL \
                  TABLE statement over s3://BUCKET/PREFIX/dt=YYYY-MM-DD/part-*.tsv.gz with --athena."
)]
struct Args {
    /// Print the columns as JSON (`[{name, type, comment}]`), as infra/schema/columns.json holds.
    #[arg(long, conflicts_with = "athena")]
    json: bool,
    /// Print an Athena CREATE EXTERNAL TABLE statement (gzip TSV, partition projection on `dt`).
    #[arg(long, requires = "bucket")]
    athena: bool,
    /// Data bucket holding the output table (with --athena).
    #[arg(long, value_name = "BUCKET")]
    bucket: Option<String>,
    /// Key prefix of the output table inside the bucket (with --athena).
    #[arg(long, value_name = "PREFIX", default_value = "dmarc/")]
    prefix: String,
    /// Table name (with --athena).
    #[arg(long, value_name = "NAME", default_value = "dmarc_reports")]
    table: String,
    /// Database name (with --athena).
    #[arg(long, value_name = "NAME", default_value = "dmarc")]
    database: String,
}

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return Ok(ExitCode::from(if err.use_stderr() { 2 } else { 0 }));
        }
    };
    let text = if args.json {
        columns_json()
    } else if args.athena {
        let Some(bucket) = args.bucket.as_deref() else {
            anyhow::bail!("--athena needs --bucket");
        };
        match athena_ddl(&args.database, &args.table, bucket, &args.prefix) {
            Ok(ddl) => ddl,
            Err(err) => {
                // A name that cannot go into DDL is a usage error.
                eprintln!("dmarc-tsv schema: {err:#}");
                return Ok(ExitCode::from(2));
            }
        }
    } else {
        column_lines()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `name<TAB>type`, one line per column.
fn column_lines() -> String {
    COLUMNS
        .iter()
        .map(|c| format!("{}\t{}\n", c.name, c.athena_type))
        .collect()
}

/// An identifier Athena accepts unquoted in DDL: lower-case letters, digits and `_`.
fn check_identifier(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    anyhow::ensure!(
        ok,
        "{what} {name:?}: use lower-case letters, digits and _ only"
    );
    Ok(())
}

/// `dmarc/` from `dmarc`, `/dmarc/`, `dmarc//`; empty stays empty (table at the bucket root).
fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

fn sql_string(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Hive DDL for the gzipped TSV output (LazySimpleSerDe reads `.gz` text files as is), with
/// partition projection so new days need no `MSCK REPAIR` / `ADD PARTITION`.
fn athena_ddl(database: &str, table: &str, bucket: &str, prefix: &str) -> anyhow::Result<String> {
    check_identifier("database", database)?;
    check_identifier("table", table)?;
    anyhow::ensure!(
        !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "bucket {bucket:?} is not a valid S3 bucket name"
    );
    anyhow::ensure!(
        prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=".contains(&b)),
        "prefix {prefix:?}: use letters, digits and - _ . / = only"
    );
    let prefix = normalise_prefix(prefix);
    let location = format!("s3://{bucket}/{prefix}");
    let columns = COLUMNS
        .iter()
        .map(|c| {
            format!(
                "  `{}` {} COMMENT '{}'",
                c.name,
                c.athena_type,
                sql_string(c.description)
            )
        })
        .collect::<Vec<_>>()
        .join(",\n");
    Ok(format!(
        "-- Output layout: {location}dt=YYYY-MM-DD/part-*.tsv.gz (gzip TSV, no header).\n\
         -- ROW FORMAT DELIMITED = Hive's LazySimpleSerDe: tab-separated, empty int = NULL.\n\
         CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{table}` (\n\
         {columns}\n\
         )\n\
         PARTITIONED BY (`dt` string)\n\
         ROW FORMAT DELIMITED\n  FIELDS TERMINATED BY '\\t'\n  LINES TERMINATED BY '\\n'\n\
         STORED AS TEXTFILE\n\
         LOCATION '{location}'\n\
         TBLPROPERTIES (\n\
         \x20 'projection.enabled' = 'true',\n\
         \x20 'projection.dt.type' = 'date',\n\
         \x20 'projection.dt.format' = 'yyyy-MM-dd',\n\
         \x20 'projection.dt.range' = '2012-01-01,NOW',\n\
         \x20 'projection.dt.interval' = '1',\n\
         \x20 'projection.dt.interval.unit' = 'DAYS',\n\
         \x20 'storage.location.template' = '{location}dt=${{dt}}/'\n\
         );\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix("dmarc"), "dmarc/");
        assert_eq!(normalise_prefix("/a/b//"), "a/b/");
        assert_eq!(normalise_prefix(""), "");
    }

    #[test]
    fn ddl_rejects_unsafe_names() {
        assert!(athena_ddl("dmarc", "x; drop", "b", "dmarc/").is_err());
        assert!(athena_ddl("dmarc", "t", "b'x", "dmarc/").is_err());
        let ddl = athena_ddl("db", "t", "my-bucket", "out").unwrap();
        assert!(ddl.contains("'storage.location.template' = 's3://my-bucket/out/dt=${dt}/'"));
    }
}
