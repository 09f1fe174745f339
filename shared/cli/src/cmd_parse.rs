//! `dmarc-tsv parse`.

use std::process::ExitCode;

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the parse command is being built")
}
