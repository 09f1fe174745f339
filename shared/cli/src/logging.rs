//! Log output of the CLI: human-readable lines on stderr, or one JSON object per line with
//! `DMARC_LOG_FORMAT=json` (for log shippers). `-verbose` means debug level; `RUST_LOG`, when set,
//! overrides the level entirely (e.g. `RUST_LOG=dmarc_tsv_core=trace,aws_config=warn`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Our crates log at the chosen level; the AWS SDK stays at warn unless asked, as its debug
/// output is per-request noise.
fn default_filter(verbose: bool) -> EnvFilter {
    let level = if verbose { "debug" } else { "info" };
    EnvFilter::new(format!(
        "warn,dmarc_tsv={level},dmarc_tsv_core={level},dmarc_tsv_aws={level}"
    ))
}

/// Installs the global subscriber once; a second call is a no-op.
pub fn init(verbose: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| default_filter(verbose));
    let json = std::env::var("DMARC_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .with_target(false)
            // Colours only for a person watching; cron mail and log files get plain text.
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
