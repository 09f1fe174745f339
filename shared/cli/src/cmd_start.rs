//! `dmarc-tsv start`: start an execution of the deployed state machine (the same thing the
//! schedule does), follow it, print its summary, and fail with its cause when it fails.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use dmarc_tsv_aws::{ExecutionReport, ExecutionState, SfnClient};
use indicatif::{ProgressBar, ProgressStyle};

/// Exit status when the execution failed, timed out or was aborted.
const EXIT_EXECUTION_FAILED: u8 = 1;
/// Exit status when following gave up (`--timeout`) while the execution still runs.
const EXIT_STILL_RUNNING: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    about = "Start an execution of the deployed dmarc-tsv state machine and follow it",
    after_help = "Exit status: 0 succeeded, 1 failed/timed out/aborted (the cause is printed), \
                  2 bad arguments, 3 still running after --timeout."
)]
struct Args {
    /// State machine ARN; found from the stack outputs (`StateMachineArn`) when not given.
    #[arg(long, env = "DMARC_STATEMACHINE")]
    statemachine: Option<String>,
    /// CloudFormation stack that deployed the pipeline.
    #[arg(long, env = "DMARC_STACK", default_value = "DmarcTsv")]
    stack: String,
    /// Region of the stack and state machine (default: the AWS configuration's).
    #[arg(long, env = "DMARC_REGION")]
    region: Option<String>,
    /// Execution input JSON.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Execution name (default: `cli-<unix seconds>-<8 hex>`).
    #[arg(long)]
    name: Option<String>,
    /// Start and print the execution ARN without following it.
    #[arg(long)]
    no_wait: bool,
    /// Seconds between status checks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    interval: u64,
    /// Stop following after this many seconds (0 = until it ends).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
}

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = match Args::try_parse_from(&args) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return Ok(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)));
        }
    };
    if serde_json::from_str::<serde_json::Value>(&args.input).is_err() {
        eprintln!("dmarc-tsv start: --input is not valid JSON: {}", args.input);
        return Ok(ExitCode::from(2));
    }
    crate::logging::init(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(start(args))
}

async fn start(args: Args) -> anyhow::Result<ExitCode> {
    let client = SfnClient::connect(args.region.as_deref()).await;
    let machine = match &args.statemachine {
        Some(arn) if !arn.trim().is_empty() => arn.trim().to_owned(),
        _ => client
            .state_machine_from_stack(&args.stack)
            .await
            .with_context(|| format!("finding the state machine of stack {}", args.stack))?,
    };
    let name = args.name.clone().unwrap_or_else(default_execution_name);
    let execution = client
        .start(&machine, Some(&name), &args.input)
        .await
        .context("starting the execution")?;
    eprintln!("started {execution}");
    if args.no_wait {
        println!("{execution}");
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let report = follow(
        &client,
        &execution,
        Duration::from_secs(args.interval),
        timeout,
    )
    .await?;
    Ok(finish(&report))
}

/// Polls DescribeExecution until the execution ends or `timeout` passes; a spinner shows the
/// elapsed time when stderr is a terminal. Transient errors while polling are retried.
async fn follow(
    client: &SfnClient,
    execution: &str,
    interval: Duration,
    timeout: Option<Duration>,
) -> anyhow::Result<ExecutionReport> {
    let spinner = spinner();
    let started = Instant::now();
    loop {
        match client.describe(execution).await {
            Ok(report) if report.state.is_finished() => {
                spinner.finish_and_clear();
                return Ok(report);
            }
            Ok(report) => {
                if timeout.is_some_and(|t| started.elapsed() >= t) {
                    spinner.finish_and_clear();
                    return Ok(report);
                }
                spinner.set_message(format!(
                    "{} ({}s)",
                    report.status,
                    started.elapsed().as_secs()
                ));
            }
            Err(err) if err.is_transient() => {
                tracing::warn!("status check failed, retrying: {err}")
            }
            Err(err) => return Err(err).context("following the execution"),
        }
        spinner.tick();
        tokio::time::sleep(interval).await;
    }
}

/// `cli-<unix seconds>-<8 hex>`: tells executions started by hand from scheduled ones in the
/// console, and stays unique (Step Functions refuses a reused name for 90 days).
fn default_execution_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mix = now.subsec_nanos() ^ std::process::id().rotate_left(16);
    format!("cli-{}-{mix:08x}", now.as_secs())
}

fn spinner() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Prints the outcome: the output JSON on stdout and a one-line summary on stderr when it
/// succeeded, the error and cause otherwise.
fn finish(report: &ExecutionReport) -> ExitCode {
    match report.state {
        ExecutionState::Succeeded => {
            let output = report.output.as_deref().unwrap_or("{}");
            println!("{}", pretty_json(output));
            eprintln!("SUCCEEDED {}{}", report.arn, summary_line(output));
            ExitCode::SUCCESS
        }
        ExecutionState::Running | ExecutionState::Other => {
            eprintln!(
                "still {} after the --timeout: {}",
                report.status, report.arn
            );
            ExitCode::from(EXIT_STILL_RUNNING)
        }
        ExecutionState::Failed | ExecutionState::TimedOut | ExecutionState::Aborted => {
            eprintln!(
                "{} {}\n  error: {}\n  cause: {}",
                report.status,
                report.arn,
                report.error.as_deref().unwrap_or("(none)"),
                report.cause.as_deref().unwrap_or("(none)")
            );
            ExitCode::from(EXIT_EXECUTION_FAILED)
        }
    }
}

fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| text.to_owned())
}

/// `: mails=3 reports=4 rows=10 outputRows=9 files=1 …` from the counters the output has (the
/// stack's `Result` state: see `TOTAL_FIELDS` in infra/lib/workflow.ts).
fn summary_line(output: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(output)
    else {
        return String::new();
    };
    let parts: Vec<String> = [
        "mails",
        "reports",
        "rows",
        "outputRows",
        "files",
        "duplicates",
        "quarantined",
        "moved",
        "ignored",
    ]
    .iter()
    .filter_map(|key| {
        map.get(*key)
            .filter(|v| v.is_number())
            .map(|v| format!("{key}={v}"))
    })
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_lists_known_counters_in_order() {
        let line = summary_line(r#"{"rows":10,"mails":3,"files":1,"quarantined":0,"x":5}"#);
        assert_eq!(line, ": mails=3 rows=10 files=1 quarantined=0");
        assert_eq!(summary_line("not json"), "");
        assert_eq!(summary_line("[1,2]"), "");
    }

    #[test]
    fn arguments_have_the_documented_defaults() {
        let args = Args::try_parse_from(["start"]).unwrap();
        assert_eq!(args.stack, "DmarcTsv");
        assert_eq!(args.input, "{}");
        assert_eq!(args.interval, 5);
        assert!(Args::try_parse_from(["start", "--interval", "0"]).is_err());
    }

    #[test]
    fn default_execution_names_are_valid_step_functions_names() {
        let name = default_execution_name();
        assert!(name.starts_with("cli-") && name.len() <= 80, "{name}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{name}"
        );
    }
}
