//! mbox files in local mode: one file holding many mails, each after a `From ` separator line.
//! [`super::DirQueue`] indexes them (`inbox.mbox#3` is the third mail) and [`InputStore`] serves
//! those keys. mbox files are read, never modified: deleting or moving one message of an mbox is
//! a no-op (a rerun finds its reports already committed and skips them).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::local_store::LocalStore;
use super::store::{ObjectInfo, ObjectStore, StoreError};

/// Byte range (start, end) of one message inside its mbox file.
pub type MessageRange = (u64, u64);

/// The message ranges of each mbox, by the mbox's key.
#[derive(Debug, Clone, Default)]
pub struct MboxIndex(Arc<Mutex<BTreeMap<String, Vec<MessageRange>>>>);

impl MboxIndex {
    pub fn insert(&self, key: &str, ranges: Vec<MessageRange>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), ranges);
        }
    }

    /// The byte range of `inbox.mbox#3`-style keys (1-based).
    pub fn range_of(&self, key: &str) -> Option<(String, MessageRange)> {
        let (file, n) = key.rsplit_once('#')?;
        let n: usize = n.parse().ok()?;
        let m = self.0.lock().ok()?;
        let range = *m.get(file)?.get(n.checked_sub(1)?)?;
        Some((file.to_string(), range))
    }
}

/// The key of the nth (1-based) message of an mbox.
pub fn message_key(mbox_key: &str, n: usize) -> String {
    format!("{mbox_key}#{n}")
}

/// An mbox starts with a `From ` separator line; an RFC 5322 mail's `From:` header has a colon.
pub fn is_mbox(path: &Path) -> bool {
    let mut head = [0u8; 5];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"From "
}

/// Byte ranges of the messages (separator lines excluded). A separator is a `From ` line at the
/// start of the file or after an empty line.
pub fn scan(path: &Path) -> io::Result<Vec<MessageRange>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut ranges = Vec::new();
    let mut line = Vec::new();
    let (mut pos, mut start) = (0u64, None::<u64>);
    let mut previous_blank = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        if previous_blank && line.starts_with(b"From ") {
            if let Some(s) = start {
                ranges.push((s, pos));
            }
            start = Some(pos + n);
        }
        previous_blank = line == b"\n" || line == b"\r\n";
        pos += n;
    }
    if let Some(s) = start {
        ranges.push((s, pos));
    }
    Ok(ranges)
}

/// mboxrd quoting: `>From ` (any number of `>`) lost one `>` when written.
fn unquote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let quotes = line.iter().take_while(|b| **b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The input folder of local mode: plain files, plus messages inside indexed mbox files.
pub struct InputStore {
    files: LocalStore,
    mbox: MboxIndex,
}

impl InputStore {
    pub fn new(files: LocalStore, mbox: MboxIndex) -> Self {
        InputStore { files, mbox }
    }

    fn read_message(&self, file: &str, (start, end): MessageRange) -> Result<Vec<u8>, StoreError> {
        let path = self.files.path_of(file)?;
        let err = |e: io::Error| StoreError::Permanent(format!("reading {file}: {e}"));
        let mut f = File::open(path).map_err(err)?;
        f.seek(SeekFrom::Start(start)).map_err(err)?;
        let mut bytes = Vec::new();
        f.take(end.saturating_sub(start))
            .read_to_end(&mut bytes)
            .map_err(err)?;
        Ok(unquote(&bytes))
    }
}

impl ObjectStore for InputStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.mbox.range_of(key) {
            Some((file, range)) if self.files.exists(&file)? => {
                self.read_message(&file, range).map(Some)
            }
            Some(_) => Ok(None),
            None => self.files.get(key),
        }
    }
    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.files.put(key, body)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.mbox.range_of(key).is_some() {
            tracing::debug!(key, "message inside an mbox: left in place");
            return Ok(());
        }
        self.files.delete(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.files.list(prefix)
    }
    fn copy(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        match self.get(from)? {
            Some(bytes) if self.mbox.range_of(from).is_some() => {
                self.files.put(to, &bytes)?;
                Ok(true)
            }
            _ => self.files.copy(from, to),
        }
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.mbox.range_of(key) {
            Some((file, _)) => self.files.exists(&file),
            None => self.files.exists(key),
        }
    }
    fn describe(&self) -> String {
        self.files.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_separator_lines_and_unquotes_from_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let mbox = "From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n>From here\n\n\
                    From c@d Mon Jan  1 00:00:00 2024\nSubject: two\n\nline\nFrom inside body\n";
        std::fs::write(&path, mbox).unwrap();
        assert!(is_mbox(&path));
        let ranges = scan(&path).unwrap();
        assert_eq!(
            ranges.len(),
            2,
            "a From line not after a blank line is body"
        );
        let index = MboxIndex::default();
        index.insert("inbox", ranges);
        let store = InputStore::new(LocalStore::new(dir.path()), index);
        let one = store.get("inbox#1").unwrap().unwrap();
        assert_eq!(one, b"Subject: one\n\nbody\nFrom here\n\n");
        let two = store.get("inbox#2").unwrap().unwrap();
        assert!(two.starts_with(b"Subject: two"));
        assert_eq!(store.get("inbox#3").unwrap(), None);
        assert!(store.exists("inbox#2").unwrap());
        store.delete("inbox#1").unwrap();
        assert!(path.exists(), "mbox files are never modified");
        assert!(store.copy("inbox#2", "moved/two").unwrap());
        assert!(store.exists("moved/two").unwrap());
        std::fs::write(dir.path().join("mail"), "From: x@y\n\nhi").unwrap();
        assert!(!is_mbox(&dir.path().join("mail")));
    }
}
