//! `dmarc-tsv parse`: rows of report files or mails to stdout, reasons to stderr.
//!
//! Exit status: 0 when every input yielded a report, 1 when any did not (or could not be read),
//! 2 on usage errors.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dmarc_tsv_core::writer::{CsvWriter, Format, RowWriter, TsvWriter};
use dmarc_tsv_core::{MailOutcome, ParseOptions, ReportSink, RowView, parse_mail};

#[derive(Debug, Parser)]
#[command(
    about = "Print the rows of report files or mails to stdout",
    long_about = "Print the rows of DMARC aggregate report files or mails (raw RFC 5322, zip, \
                  gzip, zlib or XML) to stdout. Each input that yields no report is named on \
                  stderr with the reason; skipped parts of the others are listed too. Exit \
                  status 0 when every input yielded a report, 1 otherwise, 2 on usage errors."
)]
struct Args {
    /// Output format: tsv (Athena's, no header) or csv (RFC 4180 with a header row).
    #[arg(long, value_name = "FORMAT", default_value = "tsv")]
    format: Format,
    /// Leave out records whose disposition is `none` (the seed tool's -excludedispositionnone).
    #[arg(long)]
    excludedispositionnone: bool,
    /// Report files or mails; `source_key` is each path as given.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

enum Rows<W: Write> {
    Tsv(TsvWriter<W>),
    Csv(Box<CsvWriter<W>>),
}

impl<W: Write> ReportSink for Rows<W> {
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        match self {
            Rows::Tsv(w) => w.write_row(row),
            Rows::Csv(w) => w.write_row(row),
        }
    }
}

impl<W: Write> Rows<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Rows::Tsv(w) => Ok(w.into_inner()),
            Rows::Csv(w) => w.into_inner(),
        }
    }
}

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return Ok(ExitCode::from(if err.use_stderr() { 2 } else { 0 }));
        }
    };
    let opts = ParseOptions {
        exclude_disposition_none: args.excludedispositionnone,
        ..ParseOptions::default()
    };
    let stdout = io::BufWriter::new(io::stdout().lock());
    let mut rows = match args.format {
        Format::Tsv => Rows::Tsv(TsvWriter::new(stdout)),
        Format::Csv => Rows::Csv(Box::new(
            CsvWriter::new(stdout).context("writing the CSV header")?,
        )),
    };
    let mut stderr = io::stderr().lock();
    let mut all_usable = true;
    for path in &args.files {
        let name = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                writeln!(stderr, "{name}: cannot read: {err}")?;
                all_usable = false;
                continue;
            }
        };
        let outcome = parse_mail(&bytes, &name, &opts, &mut rows)
            .with_context(|| format!("{name}: writing rows"))?;
        all_usable &= outcome.is_usable();
        explain(&mut stderr, &name, &outcome)?;
    }
    rows.finish()?.flush().context("writing rows")?;
    Ok(if all_usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Says on stderr what an input did not give: never a silent drop.
fn explain(out: &mut impl Write, name: &str, outcome: &MailOutcome) -> io::Result<()> {
    if !outcome.is_usable() {
        if outcome.skipped.is_empty() {
            writeln!(out, "{name}: no report: nothing recognisable")?;
        }
        for skipped in &outcome.skipped {
            writeln!(out, "{name}: no report: {skipped}")?;
        }
        return Ok(());
    }
    if outcome.rows() == 0 {
        let records: u64 = outcome.reports.iter().map(|r| r.records).sum();
        let excluded: u64 = outcome.reports.iter().map(|r| r.excluded).sum();
        writeln!(
            out,
            "{name}: no rows: {} report(s), {records} record(s), {excluded} excluded by --excludedispositionnone",
            outcome.reports.len()
        )?;
    }
    for skipped in &outcome.skipped {
        writeln!(out, "{name}: skipped {skipped}")?;
    }
    for report in &outcome.reports {
        for problem in &report.problems {
            writeln!(out, "{name}: problem {problem}")?;
        }
    }
    Ok(())
}
