//! `dmarc-tsv local`.

use std::process::ExitCode;

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the local command is being built")
}
