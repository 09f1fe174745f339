//! `dmarc-tsv run` settings handling through the real binary: the documented table, and every
//! bad setting stopping the run (exit 2, a message naming the flag) before any AWS call.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dmarc-tsv");

/// Runs `dmarc-tsv run` with only the given environment (no stray `DMARC_*` or AWS settings).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("run").args(args).env_clear();
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("spawn dmarc-tsv")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const REQUIRED: [(&str, &str); 4] = [
    ("bucket", "data-bucket"),
    ("bucketregion", "eu-west-1"),
    ("sqs", "dmarc-queue"),
    ("sqsregion", "eu-west-1"),
];

fn required_flags_except(missing: &str) -> Vec<String> {
    REQUIRED
        .iter()
        .filter(|(name, _)| *name != missing)
        .map(|(name, value)| format!("-{name}={value}"))
        .collect()
}

#[test]
fn doc_settings_md_holds_the_help_table_and_every_flag() {
    let output = run(&["--help"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let table: Vec<&str> = help.lines().filter(|line| line.starts_with('|')).collect();
    assert!(table.len() > 20, "help has no settings table:\n{help}");

    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../doc/settings.md");
    let doc = std::fs::read_to_string(&doc_path).expect("doc/settings.md exists");
    let block = table.join("\n");
    assert!(
        doc.contains(&block),
        "doc/settings.md is out of date: paste the table from `dmarc-tsv run --help`:\n{block}"
    );
    for flag in dmarc_tsv_core::pipeline::Settings::FLAGS {
        let env = format!("DMARC_{}", flag.to_uppercase());
        let row = format!("| `-{flag}` | `{env}` |");
        assert!(doc.contains(&row), "doc/settings.md lacks {row}");
        assert!(help.contains(&row), "--help lacks {row}");
    }
}

#[test]
fn each_missing_required_flag_is_named_with_exit_2() {
    for (missing, _) in REQUIRED {
        let args = required_flags_except(missing);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "missing -{missing}: {}",
            stderr(&output)
        );
        let expected = format!("-{missing} is required [DMARC_{}]", missing.to_uppercase());
        assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    }
}

#[test]
fn required_settings_may_come_from_the_environment() {
    // All four from the environment, one bad value from a flag: the range error proves the
    // required check passed.
    let env: Vec<(String, String)> = REQUIRED
        .iter()
        .map(|(name, value)| (format!("DMARC_{}", name.to_uppercase()), value.to_string()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = run(&["-maxrecords=0"], &env);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("-maxrecords must be"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn each_range_violation_is_named_with_exit_2() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "polltimeout",
            "30",
            "-polltimeout must be between 1 and 20 (got \"30\") [DMARC_POLLTIMEOUT]",
        ),
        (
            "polltimeout",
            "0",
            "-polltimeout must be between 1 and 20 (got \"0\") [DMARC_POLLTIMEOUT]",
        ),
        (
            "pollmessages",
            "11",
            "-pollmessages must be between 1 and 10 (got \"11\") [DMARC_POLLMESSAGES]",
        ),
        (
            "pollmessages",
            "0",
            "-pollmessages must be between 1 and 10",
        ),
        ("emptypolls", "0", "-emptypolls must be between 1 and"),
        (
            "stagecompression",
            "10",
            "-stagecompression must be between 0 and 9 (got \"10\") [DMARC_STAGECOMPRESSION]",
        ),
        ("maxrecords", "0", "-maxrecords must be between 1 and"),
        (
            "sqsprocessingtime",
            "0",
            "-sqsprocessingtime must be between 1 and",
        ),
        (
            "maxrecords",
            "many",
            "-maxrecords must be a non-negative integer (got \"many\")",
        ),
        (
            "deletesqs",
            "maybe",
            "-deletesqs must be true or false (got \"maybe\") [DMARC_DELETESQS]",
        ),
        ("format", "parquet", "-format must be tsv or csv"),
        ("outputprefix", "out", "-outputprefix must be"),
    ];
    for (flag, value, expected) in cases {
        let mut args = required_flags_except("");
        args.push(format!("-{flag}={value}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "-{flag}={value}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "-{flag}={value}: {}",
            stderr(&output)
        );

        // The same value from the environment fails the same way.
        let env_name = format!("DMARC_{}", flag.to_uppercase());
        let args = required_flags_except("");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, &[(env_name.as_str(), value)]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{env_name}={value}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{env_name}={value}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn flag_wins_over_a_bad_environment_value() {
    let args = required_flags_except("");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["-polltimeout", "5"]);
    // Settings are accepted, so the run goes on to reach AWS: point it at a closed loopback port
    // so it fails fast, transiently (exit 75), and never leaves the machine.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let env = [
        ("DMARC_POLLTIMEOUT", "30"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_MAX_ATTEMPTS", "1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let output = run(&args, &env);
    assert!(
        !stderr(&output).contains("polltimeout"),
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
}

#[test]
fn unknown_flags_and_stray_arguments_exit_2() {
    let output = run(&["-nosuchflag=1"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("flag provided but not defined: -nosuchflag=1"));
    let output = run(&["-bucket"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("flag needs an argument: -bucket"));
    let output = run(&["extra"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unexpected argument \"extra\""));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let args = required_flags_except("");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let env = [
        ("DMARC_LOG_FORMAT", "json"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_MAX_ATTEMPTS", "1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let output = run(&args, &env);
    let log = stderr(&output);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log at all");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(
        log.contains("\"ERROR\""),
        "the failure is logged as an error: {log}"
    );
}
