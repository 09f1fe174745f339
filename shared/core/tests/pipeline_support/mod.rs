//! Helpers for the pipeline tests: an in-memory queue, a store that fails on demand, crafted
//! staged objects, a small report generator, and readers of the output rows.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use dmarc_tsv_core::columns::COLUMNS;
use dmarc_tsv_core::model::ReportIdentity;
use dmarc_tsv_core::pipeline::events::synthetic_s3_event;
use dmarc_tsv_core::pipeline::queue::{Message, Queue, QueueError, ReceiveOptions};
use dmarc_tsv_core::pipeline::staged::StagedBuilder;
use dmarc_tsv_core::pipeline::store::{ObjectInfo, ObjectStore, StoreError};
use dmarc_tsv_core::pipeline::{LocalStore, MailRef, Pipeline, RetryPolicy, Settings};

pub const BUCKET: &str = "data-bucket";

pub fn corpus_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/corpus")
        .join(rel)
}

pub fn corpus(rel: &str) -> Vec<u8> {
    let p = corpus_path(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A queue in memory. Messages not deleted are redelivered by [`MemQueue::redeliver`], like SQS
/// after the visibility timeout.
#[derive(Default)]
pub struct MemQueue {
    pending: Mutex<VecDeque<Message>>,
    in_flight: Mutex<Vec<Message>>,
    next_id: AtomicU32,
}

impl MemQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn send(&self, body: &str) {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.pending.lock().unwrap().push_back(Message {
            id: format!("m{n}"),
            receipt: format!("r{n}"),
            body: body.into(),
            receive_count: 0,
        });
    }

    /// An S3 event for each key, one message each.
    pub fn send_keys(&self, keys: &[&str]) {
        for k in keys {
            self.send(&synthetic_s3_event(BUCKET, k, None));
        }
    }

    /// Puts undeleted received messages back (the visibility timeout expired).
    pub fn redeliver(&self) {
        let mut back: Vec<Message> = self.in_flight.lock().unwrap().drain(..).collect();
        let mut pending = self.pending.lock().unwrap();
        back.extend(pending.drain(..));
        pending.extend(back);
    }

    /// Messages neither deleted nor waiting: received and not deleted.
    pub fn undeleted(&self) -> usize {
        self.in_flight.lock().unwrap().len() + self.pending.lock().unwrap().len()
    }
}

impl Queue for MemQueue {
    fn receive(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError> {
        let mut pending = self.pending.lock().unwrap();
        let n = (opts.max_messages as usize).min(pending.len());
        let got: Vec<Message> = pending
            .drain(..n)
            .map(|mut m| {
                m.receive_count += 1;
                m
            })
            .collect();
        self.in_flight.lock().unwrap().extend(got.iter().cloned());
        Ok(got)
    }

    fn delete(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.in_flight
            .lock()
            .unwrap()
            .retain(|m| !receipts.contains(&m.receipt));
        Ok(())
    }

    fn describe(&self) -> String {
        "memory queue".into()
    }
}

/// Wraps a store; `fail_next(op, n)` makes the next `n` calls of `op` fail transiently.
pub struct FlakyStore {
    pub inner: LocalStore,
    failures: Mutex<Vec<(&'static str, u32)>>,
    pub calls: AtomicU32,
    /// `get_many` calls and the keys they asked for, in order.
    pub get_many_calls: Mutex<Vec<Vec<String>>>,
}

impl FlakyStore {
    pub fn new(inner: LocalStore) -> Self {
        FlakyStore {
            inner,
            failures: Mutex::new(Vec::new()),
            calls: AtomicU32::new(0),
            get_many_calls: Mutex::new(Vec::new()),
        }
    }

    pub fn fail_next(&self, op: &'static str, n: u32) {
        self.failures.lock().unwrap().push((op, n));
    }

    fn check(&self, op: &'static str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().unwrap();
        if let Some(entry) = f.iter_mut().find(|(o, n)| *o == op && *n > 0) {
            entry.1 -= 1;
            return Err(StoreError::Transient(format!("injected {op} failure")));
        }
        Ok(())
    }
}

impl ObjectStore for FlakyStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check("get")?;
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>, StoreError>> {
        self.get_many_calls
            .lock()
            .unwrap()
            .push(keys.iter().map(|k| k.to_string()).collect());
        keys.iter().map(|k| self.get(k)).collect()
    }
    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.check("put")?;
        self.inner.put(key, body)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check("delete")?;
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.check("list")?;
        self.inner.list(prefix)
    }
    fn copy(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        self.check("copy")?;
        self.inner.copy(from, to)
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.check("exists")?;
        self.inner.exists(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A pipeline on one local store (mails and data together), no retry waits, and a clock fixed
/// at creation (dated folders cannot change under a test at midnight).
pub fn local_pipeline(root: &Path, settings: Settings) -> Pipeline {
    let mut p = Pipeline::single_store(settings, Arc::new(LocalStore::new(root)))
        .unwrap()
        .with_retry(RetryPolicy::none());
    p.fixed_time = Some(p.now());
    p
}

pub fn identity(report_id: &str, begin: i64) -> ReportIdentity {
    ReportIdentity {
        org_name: "crafted.example".into(),
        report_id: report_id.into(),
        policy_domain: "example.com".into(),
        begin,
        end: begin + 86_399,
    }
}

pub fn mail(key: &str) -> MailRef {
    MailRef {
        bucket: BUCKET.into(),
        key: key.into(),
        etag: None,
        size: None,
    }
}

/// A row whose fields name its report and index, so output rows can be traced back. Other fields
/// stay short: debug builds compress slowly.
pub fn crafted_row(report_id: &str, i: u64) -> Vec<String> {
    (0..COLUMNS.len())
        .map(|c| match c {
            0 => "to@example.com".to_string(),
            1 => report_id.to_string(),
            2 => i.to_string(),
            c => (c % 10).to_string(),
        })
        .collect()
}

/// Puts a crafted staged object holding `reports` = (report id, rows) of the partition of `begin`.
pub fn stage_crafted(p: &Pipeline, begin: i64, batch: &str, reports: &[(&str, u64)]) -> String {
    let mut b = StagedBuilder::new();
    for (id, rows) in reports {
        b.begin_report(identity(id, begin), mail(&format!("incoming/{batch}")));
        for i in 0..*rows {
            let row = crafted_row(id, i);
            b.push_row(row.iter().map(String::as_str)).unwrap();
        }
    }
    let partition = identity("x", begin).partition();
    let key = p.layout.staged_key(&partition, batch);
    p.data
        .put(&key, &b.finish(batch, &partition).unwrap())
        .unwrap();
    key
}

/// Keys of every file under `root/prefix`, relative to root, sorted.
pub fn files(root: &Path, prefix: &str) -> Vec<String> {
    LocalStore::new(root)
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Every output line (decompressed), sorted: the run's rows as a multiset.
pub fn output_rows(root: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for key in files(root, "dmarc/") {
        rows.extend(file_lines(&root.join(&key)));
    }
    rows.sort();
    rows
}

pub fn file_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_string).collect()
}

/// A valid DMARC aggregate report with `records` records.
pub fn report_xml(org: &str, report_id: &str, begin: i64, records: u32) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n<report_metadata>\
         <org_name>{org}</org_name><email>noreply@{org}</email>\
         <report_id>{report_id}</report_id><date_range><begin>{begin}</begin>\
         <end>{}</end></date_range></report_metadata>\n<policy_published>\
         <domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp>\
         <pct>100</pct></policy_published>\n",
        begin + 86_399
    );
    for i in 0..records {
        xml.push_str(&format!(
            "<record><row><source_ip>10.{}.{}.{}</source_ip><count>{}</count><policy_evaluated>\
             <disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>\
             </row><identifiers><header_from>example.com</header_from></identifiers>\
             <auth_results><spf><domain>example.com</domain><result>pass</result></spf>\
             </auth_results></record>\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            i + 1
        ));
    }
    xml.push_str("</feedback>\n");
    xml
}

/// Nothing left behind by finished work: no staged rows, ledgers or commit records.
/// Every archived mail under `prefix` (single files as they are, bundles split into their mails),
/// as short digests, sorted: the archive as a multiset of mails.
pub fn archived_mails(root: &Path, prefix: &str) -> Vec<String> {
    let mut mails = Vec::new();
    for key in files(root, prefix) {
        let bytes = std::fs::read(root.join(&key)).unwrap();
        if key.ends_with(".mbox.gz") {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .unwrap();
            mails.extend(dmarc_tsv_core::pipeline::mbox::split_messages(&plain));
        } else {
            mails.push(bytes);
        }
    }
    let mut digests: Vec<String> = mails.iter().map(|m| digest(m)).collect();
    digests.sort();
    digests
}

/// Short digest of a mail, for comparing archives without printing mails.
pub fn digest(bytes: &[u8]) -> String {
    dmarc_tsv_core::pipeline::layout::hash_parts([bytes], 8)
}

pub fn assert_no_leftovers(root: &Path) {
    let staging = files(root, "staging/");
    assert!(staging.is_empty(), "left in staging: {staging:?}");
    let commits = files(root, "state/commits/");
    assert!(commits.is_empty(), "left in state/commits: {commits:?}");
}
