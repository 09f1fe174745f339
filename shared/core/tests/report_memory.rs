//! parse_report memory stays small and constant whatever the input size: a 100,000-record report
//! (~64 MB, generated on the fly so the input itself is never in memory) and a giant text node.
//! A counting global allocator measures the peak of live heap bytes during the parse.
//! Throughput is printed; measure it in release:
//! `cargo test --release -p dmarc-tsv-core --test report_memory -- --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufReader, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dmarc_tsv_core::report::{ReportError, parse_report};
use dmarc_tsv_core::{Limits, SkipReason};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests in this file measure the whole process heap: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap bytes added at the peak of `work`, above what was live before it.
fn peak_growth<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = work();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

/// A DMARC report with `records` records, produced piece by piece.
struct GeneratedReport {
    records: u64,
    next: u64,
    pending: Vec<u8>,
    pos: usize,
    finished: bool,
}

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <report_metadata>\n    \
    <org_name>big.example</org_name>\n    <email>noreply@big.example</email>\n    \
    <report_id>big-1</report_id>\n    <date_range>\n      <begin>1700000000</begin>\n      \
    <end>1700086399</end>\n    </date_range>\n  </report_metadata>\n  <policy_published>\n    \
    <domain>example.com</domain>\n    <adkim>r</adkim>\n    <aspf>r</aspf>\n    <p>reject</p>\n    \
    <sp>reject</sp>\n    <pct>100</pct>\n  </policy_published>\n";

impl GeneratedReport {
    fn new(records: u64) -> Self {
        GeneratedReport {
            records,
            next: 0,
            pending: HEAD.as_bytes().to_vec(),
            pos: 0,
            finished: false,
        }
    }

    fn refill(&mut self) {
        self.pending.clear();
        self.pos = 0;
        if self.next < self.records {
            let i = self.next;
            self.next += 1;
            let record = format!(
                "  <record>\n    <row>\n      <source_ip>10.{}.{}.{}</source_ip>\n      \
                 <count>{}</count>\n      <policy_evaluated>\n        <disposition>none</disposition>\n        \
                 <dkim>pass</dkim>\n        <spf>fail</spf>\n      </policy_evaluated>\n    </row>\n    \
                 <identifiers>\n      <header_from>example.com</header_from>\n      \
                 <envelope_from>bounce.example.net</envelope_from>\n    </identifiers>\n    \
                 <auth_results>\n      <dkim>\n        <domain>example.com</domain>\n        \
                 <selector>s{}</selector>\n        <result>pass</result>\n      </dkim>\n      \
                 <dkim>\n        <domain>esp.example.net</domain>\n        <selector>k1</selector>\n        \
                 <result>pass</result>\n      </dkim>\n      <spf>\n        \
                 <domain>bounce.example.net</domain>\n        <scope>mfrom</scope>\n        \
                 <result>pass</result>\n      </spf>\n    </auth_results>\n  </record>\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255,
                i % 97 + 1,
                i % 7
            );
            self.pending.extend_from_slice(record.as_bytes());
        } else if !self.finished {
            self.finished = true;
            self.pending.extend_from_slice(b"</feedback>\n");
        }
    }
}

impl Read for GeneratedReport {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            self.refill();
        }
        let n = (self.pending.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Counts bytes passing through, to report throughput.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[test]
fn hundred_thousand_records_parse_in_small_constant_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const RECORDS: u64 = 100_000;
    let mut input = Counted {
        inner: GeneratedReport::new(RECORDS),
        bytes: 0,
    };
    let mut seen = 0u64;
    let mut dkim_total = 0usize;
    let started = Instant::now();
    let (result, growth) = peak_growth(|| {
        parse_report(
            BufReader::with_capacity(64 * 1024, &mut input),
            &Limits::default(),
            &mut |meta, record| {
                assert_eq!(meta.report_id, "big-1");
                seen += 1;
                dkim_total += record.dkim.len();
                Ok(())
            },
        )
    });
    let elapsed = started.elapsed();
    let parse = result.expect("the generated report parses");
    assert_eq!(parse.records, RECORDS);
    assert_eq!(seen, RECORDS);
    assert_eq!(dkim_total, 2 * RECORDS as usize);
    assert!(parse.problems.is_empty(), "{:?}", parse.problems);
    let megabytes = input.bytes as f64 / 1e6;
    assert!(megabytes > 60.0, "the report is large: {megabytes:.1} MB");
    println!(
        "parsed {RECORDS} records, {megabytes:.1} MB in {:.3} s = {:.0} MB/s; peak heap growth {} KiB",
        elapsed.as_secs_f64(),
        megabytes / elapsed.as_secs_f64(),
        growth / 1024
    );
    assert!(
        growth < 512 * 1024,
        "memory must not grow with the record count: peak growth {growth} bytes"
    );
}

#[test]
fn a_giant_text_node_is_refused_without_buffering_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 50 MB of text inside <org_name>, never materialised as a whole.
    let head = io::Cursor::new(b"<feedback><report_metadata><org_name>".to_vec());
    let body = io::repeat(b'a').take(50 * 1024 * 1024);
    let tail = io::Cursor::new(b"</org_name></report_metadata></feedback>".to_vec());
    let input = BufReader::new(head.chain(body).chain(tail));
    let (result, growth) =
        peak_growth(|| parse_report(input, &Limits::default(), &mut |_, _| Ok(())));
    assert!(
        matches!(
            result,
            Err(ReportError::Skip(SkipReason::LimitExceeded { ref limit, .. })) if limit == "max_field_bytes"
        ),
        "{result:?}"
    );
    assert!(growth < 4 * 1024 * 1024, "peak growth {growth} bytes");
}
