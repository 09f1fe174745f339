//! `dmarc-tsv run`: the seed tool's job, flag for flag. Drains the SQS queue into staging until
//! `-emptypolls` consecutive empty polls, compacts every touched partition into gzipped TSV under
//! the output prefix, archives (`-move`) or quarantines the mails, and prints a JSON summary with
//! the requests sent (for a cost estimate).
//!
//! Settings come from Go-style flags (see [`crate::goflags`]) or `DMARC_<FLAG>` environment
//! variables; a flag wins over its variable. The core is synchronous: the AWS adapters block on a
//! runtime built here, and the core runs on the main thread (never inside `block_on`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use dmarc_tsv_aws::{S3Requests, S3Store, SqsQueue, SqsRequests};
use dmarc_tsv_core::pipeline::store::ObjectStore;
use dmarc_tsv_core::pipeline::{MailStoreResolver, Pipeline, RunSummary, Settings};
use dmarc_tsv_core::pipeline::{SettingsError, run_all};
use serde::Serialize;

use crate::goflags::{self, Kind, Spec};

/// Exit status for a usage or settings error (like Go's `flag` package).
const EXIT_USAGE: u8 = 2;
/// Exit status when AWS kept failing transiently: running again later may succeed (EX_TEMPFAIL).
const EXIT_TRANSIENT: u8 = 75;

/// Every flag with its meaning, in documentation order. Defaults are read from
/// `Settings::default()` so they cannot drift from the code.
const FLAGS: &[(&str, Kind, &str)] = &[
    (
        "bucket",
        Kind::Value,
        "S3 bucket for staging, state, output (`-outputprefix`) and quarantine. Required.",
    ),
    (
        "bucketregion",
        Kind::Value,
        "Region of `-bucket`. Required.",
    ),
    (
        "sqs",
        Kind::Value,
        "SQS queue receiving the bucket's S3 event notifications: a queue name (as the seed tool) or URL. Required.",
    ),
    ("sqsregion", Kind::Value, "Region of the queue. Required."),
    (
        "deletesqs",
        Kind::Bool,
        "Delete a message once its mail is staged, quarantined or already gone. `false` leaves every message on the queue (testing).",
    ),
    (
        "emptypolls",
        Kind::Value,
        "Stop draining after this many consecutive empty polls (>= 1).",
    ),
    (
        "maxrecords",
        Kind::Value,
        "An output file holds at most maxrecords x 1024 rows (>= 1).",
    ),
    (
        "move",
        Kind::Value,
        "After compaction, move each processed mail to `<move>/<YYYYMMDD>/<key>` in its bucket (UTC run date). Empty: leave mails where they are.",
    ),
    (
        "archiveformat",
        Kind::Value,
        "How `-move` archives: `mail` (one copy per mail, as above; one S3 COPY each) or `mbox` (one gzipped mbox per staged batch, `<move>/<YYYYMMDD>/<batch>.mbox.gz`, UTC staging date; split past 64 MiB; GETs instead of COPYs).",
    ),
    (
        "pollmessages",
        Kind::Value,
        "Messages per SQS receive (1-10).",
    ),
    (
        "polltimeout",
        Kind::Value,
        "SQS long-poll wait in seconds (1-20).",
    ),
    (
        "sqsprocessingtime",
        Kind::Value,
        "Visibility timeout in seconds of received messages: how long a run may take to stage them before SQS redelivers.",
    ),
    (
        "excludedispositionnone",
        Kind::Bool,
        "Drop records whose policy-evaluated disposition is `none`.",
    ),
    (
        "verbose",
        Kind::Bool,
        "Debug logging; log the request counts per API at the end.",
    ),
    (
        "incomingprefix",
        Kind::Value,
        "Key prefix where SES writes raw mail (the S3 notification filter).",
    ),
    (
        "stagingprefix",
        Kind::Value,
        "Key prefix of staged rows and batch ledgers (pipeline-owned).",
    ),
    (
        "stateprefix",
        Kind::Value,
        "Key prefix of commit records and manifests (pipeline-owned).",
    ),
    (
        "outputprefix",
        Kind::Value,
        "Key prefix of the output table: `<outputprefix>dt=YYYY-MM-DD/part-<hash>.tsv.gz`.",
    ),
    (
        "quarantineprefix",
        Kind::Value,
        "Key prefix for mails with no usable report, each with a `.reason.json` sidecar.",
    ),
    (
        "format",
        Kind::Value,
        "Output format: `tsv` (Athena's default SerDe) or `csv`.",
    ),
    (
        "maxmailbytes",
        Kind::Value,
        "Largest raw mail accepted, in bytes; larger ones are quarantined.",
    ),
    (
        "maxattachmentbytes",
        Kind::Value,
        "Largest decompressed attachment, in bytes (zip/gzip bomb bound).",
    ),
    (
        "compactrows",
        Kind::Value,
        "Staged rows read by one compaction step (bounds memory).",
    ),
    (
        "stagebatch",
        Kind::Value,
        "Messages gathered over several polls and staged together (1-10000): fewer, larger staged objects, fewer PUTs, fuller output files.",
    ),
    (
        "stagecompression",
        Kind::Value,
        "gzip level of staged objects (0-9): staged rows live minutes; 1 keeps S3 transfers small, 0 saves CPU.",
    ),
];

/// Settings with no default: the run cannot start without them.
const REQUIRED: &[&str] = &["bucket", "bucketregion", "sqs", "sqsregion"];

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let specs = flag_specs();
    let parsed = match goflags::parse(&specs, args.get(1..).unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(err) => return Ok(usage_error(&err.to_string())),
    };
    if parsed.help {
        println!("{}", help_text());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(extra) = parsed.positional.first() {
        return Ok(usage_error(&format!("unexpected argument {extra:?}")));
    }
    let env = |name: &str| std::env::var(name).ok();
    let settings = match build_settings(&parsed.values, &env) {
        Ok(settings) => settings,
        Err(message) => return Ok(usage_error(&message)),
    };
    crate::logging::init(settings.verbose);
    run(settings)
}

fn flag_specs() -> Vec<Spec> {
    FLAGS
        .iter()
        .map(|&(name, kind, _)| Spec { name, kind })
        .collect()
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("dmarc-tsv run: {message}\nRun `dmarc-tsv run --help` for every flag.");
    ExitCode::from(EXIT_USAGE)
}

/// Defaults, then `DMARC_*` variables, then flags in command-line order; then the checks.
/// An empty variable counts as unset (a blank `DMARC_VERBOSE=` must not mean true).
fn build_settings(
    flags: &[(&'static str, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, String> {
    let mut settings = Settings::default();
    for flag in Settings::FLAGS {
        if let Some(value) = env(&Settings::env_name(flag)).filter(|v| !v.trim().is_empty()) {
            settings
                .set(flag, &value)
                .map_err(|e| describe_invalid(&e))?;
        }
    }
    for (flag, value) in flags {
        settings
            .set(flag, value)
            .map_err(|e| describe_invalid(&e))?;
    }
    check_required(&settings)?;
    settings.validate().map_err(|e| describe_invalid(&e))?;
    Ok(settings)
}

fn check_required(settings: &Settings) -> Result<(), String> {
    for flag in REQUIRED {
        if setting_text(settings, flag).trim().is_empty() {
            return Err(format!(
                "-{flag} is required [{}]",
                Settings::env_name(flag)
            ));
        }
    }
    Ok(())
}

/// `-polltimeout must be between 1 and 20 (got 30) [DMARC_POLLTIMEOUT]`.
fn describe_invalid(err: &SettingsError) -> String {
    let allowed = match err
        .allowed
        .strip_prefix("an integer from ")
        .and_then(|r| r.split_once(" to "))
    {
        Some((min, max)) => format!("between {min} and {max}"),
        None => err.allowed.clone(),
    };
    format!(
        "-{} must be {allowed} (got {:?}) [{}]",
        err.setting,
        err.value,
        Settings::env_name(err.setting)
    )
}

/// The text form of a setting, as `Settings::set` accepts it back.
fn setting_text(s: &Settings, flag: &str) -> String {
    match flag {
        "bucket" => s.bucket.clone(),
        "bucketregion" => s.bucketregion.clone(),
        "sqs" => s.sqs.clone(),
        "sqsregion" => s.sqsregion.clone(),
        "deletesqs" => s.deletesqs.to_string(),
        "emptypolls" => s.emptypolls.to_string(),
        "maxrecords" => s.maxrecords.to_string(),
        "move" => s.move_prefix.clone(),
        "archiveformat" => s.archiveformat.as_str().to_owned(),
        "pollmessages" => s.pollmessages.to_string(),
        "polltimeout" => s.polltimeout.to_string(),
        "sqsprocessingtime" => s.sqsprocessingtime.to_string(),
        "excludedispositionnone" => s.excludedispositionnone.to_string(),
        "verbose" => s.verbose.to_string(),
        "incomingprefix" => s.incomingprefix.clone(),
        "stagingprefix" => s.stagingprefix.clone(),
        "stateprefix" => s.stateprefix.clone(),
        "outputprefix" => s.outputprefix.clone(),
        "quarantineprefix" => s.quarantineprefix.clone(),
        "format" => s.format.extension().to_owned(),
        "maxmailbytes" => s.maxmailbytes.to_string(),
        "maxattachmentbytes" => s.maxattachmentbytes.to_string(),
        "compactrows" => s.compactrows.to_string(),
        "stagebatch" => s.stagebatch.to_string(),
        "stagecompression" => s.stagecompression.to_string(),
        _ => String::new(),
    }
}

/// The settings table, identical in `--help` and `doc/settings.md` (a test compares them).
pub fn settings_table() -> String {
    let defaults = Settings::default();
    let mut table =
        String::from("| Flag | Environment variable | Default | Meaning |\n|---|---|---|---|\n");
    for (name, _, meaning) in FLAGS {
        let default = if REQUIRED.contains(name) {
            "(required)".to_owned()
        } else {
            match setting_text(&defaults, name) {
                text if text.is_empty() => "\"\"".to_owned(),
                text => format!("`{text}`"),
            }
        };
        table.push_str(&format!(
            "| `-{name}` | `{}` | {default} | {meaning} |\n",
            Settings::env_name(name)
        ));
    }
    table
}

fn help_text() -> String {
    format!(
        "dmarc-tsv run: drain the SQS queue of new DMARC report mails into staging, compact them \
         into gzipped TSV in S3, archive or quarantine the mails (the seed tool's cron job).

Usage: dmarc-tsv run -bucket NAME -bucketregion REGION -sqs QUEUE -sqsregion REGION [FLAGS]

Flags are written -name=value, -name value, --name value or --name=value; booleans as -name or
-name=false (true/false/1/0). Each flag may instead come from its environment variable; the flag
wins.

{table}
Other environment: DMARC_LOG_FORMAT=json for JSON log lines; RUST_LOG overrides log levels;
AWS_ENDPOINT_URL (S3 then uses path-style addressing), AWS_PROFILE and the usual AWS variables.

Prints a JSON summary on stdout. Exit status: 0 done, 1 failed (permanent error), 2 bad flags or
settings, {EXIT_TRANSIENT} AWS kept failing transiently or some mails could not be read (their
messages stay on the queue: run again later; nothing is lost).",
        table = settings_table()
    )
}

/// What `run` prints on stdout.
#[derive(Serialize)]
struct RunReport<'a> {
    summary: &'a RunSummary,
    requests: Requests,
}

#[derive(Serialize)]
struct Requests {
    s3: S3Requests,
    sqs: SqsRequests,
    /// At us-east-1 list prices (S3 $0.005 per 1000 PUT/COPY/LIST, $0.0004 per 1000 GET/HEAD,
    /// SQS $0.40 per million): requests only, not storage or transfer.
    estimated_request_cost_usd: f64,
}

impl Requests {
    fn new(s3: S3Requests, sqs: SqsRequests) -> Self {
        let cost = s3.tier1() as f64 * 0.005 / 1000.0
            + s3.tier2() as f64 * 0.0004 / 1000.0
            + sqs.billed() as f64 * 0.40 / 1_000_000.0;
        Requests {
            s3,
            sqs,
            estimated_request_cost_usd: cost,
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Mails above -maxmailbytes must still be fetched to be quarantined with their reason.
    let max_get = settings
        .maxmailbytes
        .max(dmarc_tsv_aws::s3::DEFAULT_MAX_GET_BYTES);
    let data = runtime
        .block_on(S3Store::connect(
            &settings.bucket,
            Some(&settings.bucketregion),
        ))
        .with_max_get_bytes(max_get);
    let queue = match runtime.block_on(SqsQueue::connect(&settings.sqs, Some(&settings.sqsregion)))
    {
        Ok(queue) => queue,
        Err(err) => {
            tracing::error!(queue = %settings.sqs, "cannot reach the queue: {err}");
            return Ok(failure_code(
                err.severity() == dmarc_tsv_core::Severity::Transient,
            ));
        }
    };
    tracing::info!(bucket = %data.describe(), queue = %queue.url(), "run starting");
    let pipeline = Pipeline::new(settings, Arc::new(data.clone()), mail_store_resolver(&data))?;

    // The core blocks on the adapters' runtime: call it here, on the main thread.
    // No deadline: the cron job runs until the queue is drained and everything is compacted,
    // or until SIGTERM/SIGINT (Kubernetes' activeDeadlineSeconds, a Ctrl-C) asks it to stop.
    let stop = stop_on_signal(&runtime);
    let result = run_all(&pipeline, &queue, &|| stop.load(Ordering::Relaxed));
    let requests = Requests::new(data.requests(), queue.requests());
    log_requests(&requests);
    match result {
        Ok(summary) => {
            let report = RunReport {
                summary: &summary,
                requests,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            log_summary(&summary);
            Ok(exit_code_of(&summary))
        }
        Err(err) => {
            tracing::error!(error_type = err.error_type(), "run failed: {err}");
            Ok(failure_code(err.is_transient()))
        }
    }
}

/// A flag raised by the first SIGTERM or SIGINT. The pipeline checks it between steps and stops
/// at the next safe point (messages in hand are staged first); whatever is left is picked up by
/// the next run, so the exit status is the "try again" one. A second signal still kills.
fn stop_on_signal(runtime: &tokio::runtime::Runtime) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    runtime.spawn(async move {
        if wait_for_stop_signal().await {
            tracing::warn!("stop requested: finishing the current step, then exiting");
            flag.store(true, Ordering::Relaxed);
            // The handler stays installed: a second signal ends the process here, at once.
            let _ = wait_for_stop_signal().await;
            std::process::exit(130);
        }
    });
    stop
}

/// Waits for SIGTERM or SIGINT; `false` when signals cannot be watched.
async fn wait_for_stop_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return false;
    };
    tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => true,
    }
}

fn failure_code(transient: bool) -> ExitCode {
    if transient {
        ExitCode::from(EXIT_TRANSIENT)
    } else {
        ExitCode::FAILURE
    }
}

/// Mails may live in another bucket than the data bucket (the S3 event names it): same client.
fn mail_store_resolver(data: &S3Store) -> MailStoreResolver {
    let data = data.clone();
    Arc::new(move |bucket: &str| {
        let store: Arc<dyn ObjectStore> = if bucket.is_empty() || bucket == data.bucket() {
            Arc::new(data.clone())
        } else {
            Arc::new(data.with_bucket(bucket))
        };
        Ok(store)
    })
}

fn log_requests(requests: &Requests) {
    let (s3, sqs) = (&requests.s3, &requests.sqs);
    tracing::debug!(
        s3_get = s3.get,
        s3_put = s3.put,
        s3_copy = s3.copy,
        s3_delete = s3.delete,
        s3_list = s3.list,
        s3_head = s3.head,
        sqs_receive = sqs.receive,
        sqs_empty_receive = sqs.empty_receive,
        sqs_delete_batch = sqs.delete_batch,
        estimated_usd = requests.estimated_request_cost_usd,
        "requests sent"
    );
}

/// A run that had to leave mails it could not read (after retries) is not a success, so cron
/// alerts; a later run (or the dead-letter queue) takes them over. Messages that name no mail
/// we understand (`foreign`) are not the run's failure: they are only logged.
fn exit_code_of(summary: &RunSummary) -> ExitCode {
    if summary.more {
        tracing::warn!("stopped before the queue was drained and compacted: run again to finish");
        ExitCode::from(EXIT_TRANSIENT)
    } else if summary.stage.left_for_retry > 0 {
        tracing::error!(
            left_for_retry = summary.stage.left_for_retry,
            "some mails could not be read; their messages stay on the queue"
        );
        ExitCode::from(EXIT_TRANSIENT)
    } else {
        ExitCode::SUCCESS
    }
}

fn log_summary(summary: &RunSummary) {
    tracing::info!(
        mails = summary.stage.mails,
        reports = summary.stage.reports,
        rows = summary.rows_written,
        files = summary.files,
        duplicates = summary.duplicates,
        quarantined = summary.stage.quarantined,
        "run done"
    );
    if summary.stage.left_for_retry > 0 || summary.stage.foreign > 0 {
        tracing::warn!(
            left_for_retry = summary.stage.left_for_retry,
            foreign = summary.stage.foreign,
            "some messages stay on the queue for redelivery (or the dead-letter queue)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    const REQUIRED_FLAGS: &[(&str, &str)] = &[
        ("bucket", "b"),
        ("bucketregion", "eu-west-1"),
        ("sqs", "q"),
        ("sqsregion", "eu-west-1"),
    ];

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_settings_flag_is_documented_once_and_only_those() {
        let documented: Vec<&str> = FLAGS.iter().map(|f| f.0).collect();
        assert_eq!(documented, Settings::FLAGS);
    }

    #[test]
    fn setting_text_round_trips_through_set_for_every_flag() {
        let defaults = Settings::default();
        let mut copy = Settings::default();
        for flag in Settings::FLAGS {
            copy.set(flag, &setting_text(&defaults, flag)).unwrap();
        }
        assert_eq!(copy, defaults);
        let mut changed = Settings::default();
        changed.set("maxrecords", "7").unwrap();
        assert_eq!(setting_text(&changed, "maxrecords"), "7");
    }

    #[test]
    fn flags_win_over_environment() {
        let env = |name: &str| match name {
            "DMARC_BUCKET" => Some("from-env".to_owned()),
            "DMARC_MAXRECORDS" => Some("5".to_owned()),
            "DMARC_VERBOSE" => Some(String::new()),
            _ => None,
        };
        let mut given = flags(&REQUIRED_FLAGS[1..]);
        given.push(("maxrecords", "9".into()));
        let s = build_settings(&given, &env).unwrap();
        assert_eq!(s.bucket, "from-env");
        assert_eq!(s.maxrecords, 9);
        assert!(!s.verbose, "an empty variable is unset");
    }

    #[test]
    fn each_missing_required_setting_is_named() {
        for missing in REQUIRED {
            let given: Vec<_> = flags(REQUIRED_FLAGS)
                .into_iter()
                .filter(|(k, _)| k != missing)
                .collect();
            let err = build_settings(&given, &no_env).unwrap_err();
            let env = format!("DMARC_{}", missing.to_uppercase());
            assert_eq!(err, format!("-{missing} is required [{env}]"));
        }
    }

    #[test]
    fn range_errors_read_like_the_documentation() {
        let mut given = flags(REQUIRED_FLAGS);
        given.push(("polltimeout", "30".into()));
        assert_eq!(
            build_settings(&given, &no_env).unwrap_err(),
            "-polltimeout must be between 1 and 20 (got \"30\") [DMARC_POLLTIMEOUT]"
        );
    }

    #[test]
    fn archiveformat_comes_from_the_flag_or_the_environment() {
        use dmarc_tsv_core::pipeline::ArchiveFormat;
        let defaults = build_settings(&flags(REQUIRED_FLAGS), &no_env).unwrap();
        assert_eq!(
            defaults.archiveformat,
            ArchiveFormat::Mail,
            "the seed's moves"
        );
        let env = |k: &str| (k == "DMARC_ARCHIVEFORMAT").then(|| "mbox".to_owned());
        let s = build_settings(&flags(REQUIRED_FLAGS), &env).unwrap();
        assert_eq!(s.archiveformat, ArchiveFormat::Mbox);
        let mut given = flags(REQUIRED_FLAGS);
        given.push(("archiveformat", "mail".into()));
        assert_eq!(
            build_settings(&given, &env).unwrap().archiveformat,
            ArchiveFormat::Mail
        );
        given.push(("archiveformat", "tar".into()));
        assert_eq!(
            build_settings(&given, &no_env).unwrap_err(),
            "-archiveformat must be mail or mbox (got \"tar\") [DMARC_ARCHIVEFORMAT]"
        );
    }

    #[test]
    fn the_table_has_a_row_per_flag_with_its_default() {
        let table = settings_table();
        assert!(
            table.contains("| `-polltimeout` | `DMARC_POLLTIMEOUT` | `10` |"),
            "{table}"
        );
        assert!(
            table.contains("| `-bucket` | `DMARC_BUCKET` | (required) |"),
            "{table}"
        );
        assert!(
            table.contains("| `-move` | `DMARC_MOVE` | \"\" |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + Settings::FLAGS.len());
    }
}
