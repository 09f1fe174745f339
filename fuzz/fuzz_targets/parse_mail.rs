//! Fuzz target: any bytes through `parse_mail` (mail or bare report file) must never panic,
//! and the limits must hold. Small limits keep each run fast and make bombs hit them.
#![no_main]

use std::io;

use dmarc_tsv_core::mail::parse_mail_with_stats;
use dmarc_tsv_core::{Limits, ParseOptions, ReportSink, RowView};
use libfuzzer_sys::fuzz_target;

struct Count(u64);

impl ReportSink for Count {
    fn row(&mut self, _row: &RowView<'_>) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

const MIB: u64 = 1024 * 1024;

/// libfuzzer-sys aborts on every panic, even one that would be caught. `parse_mail` catches
/// panics raised inside mail-parser (its `debug_assert!`s fire on some malformed multiparts when
/// debug assertions are on, as they are by default under cargo-fuzz) and turns them into
/// "not a mail", so those must unwind to that guard here as they do in production. Any other
/// panic still aborts and is reported as a crash.
fn let_mail_parser_panics_unwind() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_mail_parser = info
            .location()
            .is_some_and(|l| l.file().contains("/mail-parser-"));
        if !in_mail_parser {
            abort_hook(info);
        }
    }));
}

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
