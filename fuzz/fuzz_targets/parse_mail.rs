//! Fuzz target: any bytes through `parse_mail` (mail or bare report file) must never panic,
//! and the limits must hold. Small limits keep each run fast and make bombs hit them.
#![no_main]

use std::io;

use dmarc_tsv_core::mail::parse_mail_with_stats;
use dmarc_tsv_core::{Limits, ParseOptions, ReportSink, RowView};
use libfuzzer_sys::fuzz_target;

mod common;

use common::let_mail_parser_panics_unwind;

struct Count(u64);

impl ReportSink for Count {
    fn row(&mut self, _row: &RowView<'_>) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

const MIB: u64 = 1024 * 1024;

fuzz_target!(init: let_mail_parser_panics_unwind(), |data: &[u8]| {
    let limits = Limits {
        max_mail_bytes: 8 * MIB,
        max_attachment_bytes: 4 * MIB,
        max_mail_decompressed_bytes: 8 * MIB,
        max_nesting_depth: 8,
        max_zip_members: 16,
        ..Limits::default()
    };
    let opts = ParseOptions {
        limits: limits.clone(),
        exclude_disposition_none: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut sink = Count(0);
    let Ok((outcome, stats)) = parse_mail_with_stats(data, "fuzz", &opts, &mut sink) else {
        panic!("the counting sink never fails, so parse_mail must not either");
    };
    assert!(stats.decompressed_bytes <= limits.max_mail_decompressed_bytes + 1);
    assert_eq!(sink.0, outcome.rows());
    assert!(
        outcome.is_usable() || !outcome.skipped.is_empty(),
        "silent drop"
    );
});
