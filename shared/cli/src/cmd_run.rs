//! `dmarc-tsv run`.

use std::process::ExitCode;

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the run command is being built")
}
