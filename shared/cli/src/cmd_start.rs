//! `dmarc-tsv start`.

use std::process::ExitCode;

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the start command is being built")
}
