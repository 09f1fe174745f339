//! `dmarc-tsv schema`.

use std::process::ExitCode;

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the schema command is being built")
}
