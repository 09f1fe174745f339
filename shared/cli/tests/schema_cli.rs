//! `dmarc-tsv schema`, run as a binary. Also keeps the checked-in schema files equal to the
//! column table: the CDK app reads infra/schema/columns.json, users paste
//! doc/column-definition-for-aws-athena.txt into Athena.
//! `UPDATE_SCHEMA_FILES=1 cargo test -p dmarc-tsv --test schema_cli` rewrites them.

use std::path::PathBuf;
use std::process::{Command, Output};

use dmarc_tsv_core::columns::{
    COLUMNS, LEGACY_COLUMN_COUNT, athena_column_definition, columns_json,
};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmarc-tsv"))
        .arg("schema")
        .args(args)
        .output()
        .expect("run dmarc-tsv")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn check_file(relative: &str, expected: &str) {
    let path = repo_file(relative);
    if std::env::var_os("UPDATE_SCHEMA_FILES").is_some() {
        std::fs::write(&path, expected).expect("write schema file");
        return;
    }
    let actual =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        actual == expected,
        "{relative} is out of date with dmarc_tsv_core::columns; rerun with UPDATE_SCHEMA_FILES=1\n\
         --- checked in\n{actual}\n--- generated\n{expected}"
    );
}

#[test]
fn infra_columns_json_is_exactly_schema_json_output() {
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), columns_json());
    check_file("infra/schema/columns.json", &stdout(&out));
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(COLUMNS.len()));
}

#[test]
fn athena_column_definition_doc_is_the_generated_line() {
    let expected = format!("{}\n", athena_column_definition());
    check_file("doc/column-definition-for-aws-athena.txt", &expected);
}

#[test]
fn default_output_is_name_tab_type_lines() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), COLUMNS.len());
    assert_eq!(lines[0], "dmarc_report_to\tstring");
    assert_eq!(lines[2], "date_begin\ttimestamp");
    assert_eq!(lines[27], "count\tint");
    assert_eq!(lines[LEGACY_COLUMN_COUNT], "report_schema\tstring");
    assert_eq!(lines.last(), Some(&"source_key\tstring"));
}

#[test]
fn athena_ddl_has_serde_partition_projection_and_all_columns() {
    let out = run(&["--athena", "--bucket", "my-dmarc-data"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddl = stdout(&out);
    assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `dmarc`.`dmarc_reports` ("));
    assert!(ddl.contains("ROW FORMAT DELIMITED\n  FIELDS TERMINATED BY '\\t'"));
    assert!(ddl.contains("LazySimpleSerDe"));
    assert!(ddl.contains("PARTITIONED BY (`dt` string)"));
    assert!(ddl.contains("LOCATION 's3://my-dmarc-data/dmarc/'"));
    assert!(ddl.contains("'projection.enabled' = 'true'"));
    assert!(ddl.contains("'projection.dt.type' = 'date'"));
    assert!(ddl.contains("'projection.dt.format' = 'yyyy-MM-dd'"));
    assert!(ddl.contains("'projection.dt.range' = '2012-01-01,NOW'"));
    assert!(ddl.contains("'storage.location.template' = 's3://my-dmarc-data/dmarc/dt=${dt}/'"));
    for column in COLUMNS {
        assert!(
            ddl.contains(&format!(
                "  `{}` {} COMMENT '",
                column.name, column.athena_type
            )),
            "{}",
            column.name
        );
    }
    assert!(ddl.trim_end().ends_with(");"));
}

#[test]
fn athena_options_change_names_and_location() {
    let out = run(&[
        "--athena",
        "--bucket",
        "b.example",
        "--prefix",
        "/reports/dmarc",
        "--table",
        "rows",
        "--database",
        "mail",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let ddl = stdout(&out);
    assert!(ddl.contains("`mail`.`rows`"));
    assert!(ddl.contains("LOCATION 's3://b.example/reports/dmarc/'"));
    assert!(ddl.contains("'s3://b.example/reports/dmarc/dt=${dt}/'"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--athena"][..],
        &["--bogus"],
        &["--json", "--athena", "--bucket", "b"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn unsafe_names_are_refused() {
    for args in [
        &["--athena", "--bucket", "b", "--table", "x`; DROP TABLE y"][..],
        &["--athena", "--bucket", "b'; --"],
        &["--athena", "--bucket", "b", "--prefix", "x' --"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("dmarc-tsv schema: "));
    }
}
