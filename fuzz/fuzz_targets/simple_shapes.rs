//! Fuzz target: a mail of a simple shape is read without mail-parser's body pass
//! (`extract::simple_mail`); wherever that reading applies, it must give exactly what reading the
//! mail with mail-parser gives: the same rows, reports, skipped parts and counters. Inputs are
//! mutated mails; the seeds in `../tests/fixtures` are mostly of the simple shapes.
#![no_main]

use std::io;

use dmarc_tsv_core::extract::{MimeReading, reads_as_simple_mail};
use dmarc_tsv_core::mail::parse_mail_reading;
use dmarc_tsv_core::writer::{RowWriter, TsvWriter};
use dmarc_tsv_core::{Limits, ParseOptions, ReportSink, RowView};
use libfuzzer_sys::fuzz_target;

mod common;

use common::let_mail_parser_panics_unwind;

struct Rows(TsvWriter<Vec<u8>>);

impl ReportSink for Rows {
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        self.0.write_row(row)
    }
}

const MIB: u64 = 1024 * 1024;

fn read(data: &[u8], opts: &ParseOptions, reading: MimeReading) -> String {
    let mut rows = Rows(TsvWriter::new(Vec::new()));
    let Ok((outcome, stats)) = parse_mail_reading(data, "fuzz", opts, &mut rows, reading) else {
        panic!("an in-memory sink never fails, so parse_mail must not either");
    };
    let rows = String::from_utf8_lossy(&rows.0.into_inner()).into_owned();
    format!("{outcome:?}\n{stats:?}\n{rows}")
}

fuzz_target!(init: let_mail_parser_panics_unwind(), |data: &[u8]| {
    if !reads_as_simple_mail(data) {
        return;
    }
    let opts = ParseOptions {
        limits: Limits {
            max_mail_bytes: 8 * MIB,
            max_attachment_bytes: 4 * MIB,
            max_mail_decompressed_bytes: 8 * MIB,
            max_zip_members: 16,
            ..Limits::default()
        },
        exclude_disposition_none: false,
    };
    let direct = read(data, &opts, MimeReading::SimpleShapesFirst);
    let general = read(data, &opts, MimeReading::MailParserOnly);
    assert_eq!(direct, general, "the two readings of a simple mail differ");
});
