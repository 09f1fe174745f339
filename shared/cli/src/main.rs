//! `dmarc-tsv`: one binary, one subcommand per job. Each subcommand parses its own arguments
//! (`run` accepts the seed tool's Go-style flags), builds its clients once and calls the core.

use std::process::ExitCode;

mod cmd_local;
mod cmd_parse;
mod cmd_run;
mod cmd_schema;
mod cmd_start;
mod goflags;
mod logging;

/// mimalloc rather than the system allocator: parsing a small report mail makes a few hundred
/// short-lived allocations, and glibc's malloc and free were about a tenth of the parse time
/// (measured in doc/benchmarks.md). The same choice in every dmarc-tsv binary and benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
dmarc-tsv: DMARC aggregate reports (mail, zip, gzip, xml) to gzipped TSV for Athena

Usage: dmarc-tsv <COMMAND> [OPTIONS]

Commands:
  local    Process a folder of mails/report files into gzipped TSV (no AWS; the default to try first)
  parse    Print the rows of report files or mails to stdout
  schema   Print the output columns with their Athena types (--json, --athena)
  run      Drain the SQS queue into staging, compact into gzipped TSV in S3 (the classic cron job)
  start    Start an execution of the deployed state machine and follow it

Run `dmarc-tsv <COMMAND> --help` for a command's options.";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let program = args.first().cloned().unwrap_or_else(|| "dmarc-tsv".into());
    if args.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let command = args.remove(1);
    args[0] = format!("{program} {command}");
    let result = match command.as_str() {
        "local" => cmd_local::main(args),
        "parse" => cmd_parse::main(args),
        "schema" => cmd_schema::main(args),
        "run" => cmd_run::main(args),
        "start" => cmd_start::main(args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        "-V" | "--version" => {
            println!("dmarc-tsv {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!("dmarc-tsv: unknown command {other:?}\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("dmarc-tsv {command}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
