//! Where everything lives in the data bucket. One place builds and parses every key so the
//! stages, the docs and the CDK lifecycle rules agree.
//!
//! ```text
//! staging/dt=YYYY-MM-DD/<batch>.gz          staged rows of one ingest batch, one partition
//! staging/ledger/<batch>.json               the batch's mails and staged keys (for archiving)
//! state/commits/dt=YYYY-MM-DD/<commit>.json a compaction in progress (its exact plan)
//! state/manifests/dt=YYYY-MM-DD/<commit>.json report digests committed (the dedup memory)
//! dmarc/dt=YYYY-MM-DD/part-<16 hex>.tsv.gz  output
//! quarantine/YYYYMMDD/<key> (+ .reason.json) mails that gave no report
//! <move>/YYYYMMDD/<key>                     archived mails
//! ```

use sha2::{Digest, Sha256};

use super::settings::Settings;
use crate::writer::Format;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub incoming: String,
    pub staging: String,
    pub state: String,
    pub output: String,
    pub quarantine: String,
    pub format: Format,
}

impl Layout {
    pub fn new(s: &Settings) -> Layout {
        Layout {
            incoming: s.incomingprefix.clone(),
            staging: s.stagingprefix.clone(),
            state: s.stateprefix.clone(),
            output: s.outputprefix.clone(),
            quarantine: s.quarantineprefix.clone(),
            format: s.format,
        }
    }

    /// `staging/dt=` : every staged partition starts with this.
    pub fn staged_root(&self) -> String {
        format!("{}dt=", self.staging)
    }
    pub fn staged_prefix(&self, partition: &str) -> String {
        format!("{}dt={partition}/", self.staging)
    }
    pub fn staged_key(&self, partition: &str, batch: &str) -> String {
        format!("{}dt={partition}/{batch}.gz", self.staging)
    }
    pub fn ledger_prefix(&self) -> String {
        format!("{}ledger/", self.staging)
    }
    pub fn ledger_key(&self, batch: &str) -> String {
        format!("{}ledger/{batch}.json", self.staging)
    }
    pub fn commits_root(&self) -> String {
        format!("{}commits/dt=", self.state)
    }
    pub fn commit_prefix(&self, partition: &str) -> String {
        format!("{}commits/dt={partition}/", self.state)
    }
    pub fn commit_key(&self, partition: &str, commit: &str) -> String {
        format!("{}commits/dt={partition}/{commit}.json", self.state)
    }
    pub fn manifest_prefix(&self, partition: &str) -> String {
        format!("{}manifests/dt={partition}/", self.state)
    }
    pub fn manifest_key(&self, partition: &str, commit: &str) -> String {
        format!("{}manifests/dt={partition}/{commit}.json", self.state)
    }
    pub fn output_key(&self, partition: &str, name: &str) -> String {
        format!(
            "{}dt={partition}/part-{name}.{}.gz",
            self.output,
            self.format.extension()
        )
    }

    /// Where a quarantined mail goes: `quarantine/YYYYMMDD/<key without the incoming prefix>`.
    /// (Whole relative key rather than basename: local inputs in different folders may share names.)
    pub fn quarantine_key(&self, yyyymmdd: &str, mail_key: &str) -> String {
        let rel = mail_key.strip_prefix(&self.incoming).unwrap_or(mail_key);
        format!(
            "{}{yyyymmdd}/{}",
            self.quarantine,
            rel.trim_start_matches('/')
        )
    }
    pub fn quarantine_reason_key(&self, yyyymmdd: &str, mail_key: &str) -> String {
        format!("{}.reason.json", self.quarantine_key(yyyymmdd, mail_key))
    }
}

/// The seed's `-move` target: `<move>/<YYYYMMDD>/<key>`.
pub fn archive_key(move_prefix: &str, yyyymmdd: &str, mail_key: &str) -> String {
    let p = move_prefix.trim_end_matches('/');
    if p.is_empty() {
        format!("{yyyymmdd}/{mail_key}")
    } else {
        format!("{p}/{yyyymmdd}/{mail_key}")
    }
}

/// The partition named by a key under a `…dt=YYYY-MM-DD/` prefix (`root` = that prefix up to `dt=`).
pub fn partition_of(root: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(root)?;
    let (p, _) = rest.split_once('/')?;
    is_partition(p).then(|| p.to_string())
}

/// `YYYY-MM-DD` shape (digits and dashes), so a stray key never becomes a partition.
pub fn is_partition(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Hex of the first `bytes` bytes of SHA-256 over length-prefixed parts (so ("ab","c") != ("a","bc")).
pub fn hash_parts<I, S>(parts: I, bytes: usize) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut h = Sha256::new();
    for p in parts {
        let p = p.as_ref();
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    hex::encode(&digest[..bytes.min(digest.len())])
}

/// `YYYYMMDD` of a UTC time (the seed's archive folder).
pub fn yyyymmdd(secs: i64) -> String {
    crate::model::utc_date(secs).replace('-', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let l = Layout::new(&Settings::default());
        assert_eq!(
            l.staged_key("2024-01-02", "abc"),
            "staging/dt=2024-01-02/abc.gz"
        );
        assert_eq!(l.ledger_key("abc"), "staging/ledger/abc.json");
        assert_eq!(
            l.commit_key("2024-01-02", "c"),
            "state/commits/dt=2024-01-02/c.json"
        );
        assert_eq!(
            l.output_key("2024-01-02", "0123456789abcdef"),
            "dmarc/dt=2024-01-02/part-0123456789abcdef.tsv.gz"
        );
        assert_eq!(
            l.quarantine_reason_key("20240102", "incoming/x y"),
            "quarantine/20240102/x y.reason.json"
        );
        assert_eq!(
            archive_key("archive/", "20240102", "incoming/k"),
            "archive/20240102/incoming/k"
        );
        assert_eq!(
            partition_of(&l.staged_root(), "staging/dt=2024-01-02/abc.gz").as_deref(),
            Some("2024-01-02")
        );
        assert_eq!(partition_of(&l.staged_root(), "staging/dt=junk/a"), None);
        assert_eq!(yyyymmdd(86_400), "19700102");
        assert_ne!(hash_parts(["ab", "c"], 8), hash_parts(["a", "bc"], 8));
        assert_eq!(hash_parts(["x"], 8).len(), 16);
    }
}
