//! mbox files (mboxrd): one file holding many mails, each after a `From ` separator line.
//!
//! Reading, in local mode: [`super::DirQueue`] indexes them (`inbox.mbox#3` is the third mail) and
//! [`InputStore`] serves those keys. Gzipped mbox files (archive bundles, `*.mbox.gz`) are read
//! the same way, through the decompressed stream. mbox files are read, never modified: deleting or
//! moving one message of an mbox is a no-op (a rerun finds its reports already committed and skips
//! them).
//!
//! Writing, for archive bundles (`-archiveformat mbox`): [`MboxWriter`] appends mails to a gzipped
//! mboxrd stream that the reader above gives back byte for byte (for mails ending in a newline).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::local_store::LocalStore;
use super::store::{ObjectInfo, ObjectStore, StoreError};

/// Byte range (start, end) of one message inside its mbox file.
pub type MessageRange = (u64, u64);

/// The message ranges of each mbox, by the mbox's key (for a gzipped mbox: ranges of the
/// decompressed stream).
#[derive(Debug, Clone, Default)]
pub struct MboxIndex {
    ranges: Arc<Mutex<BTreeMap<String, Vec<MessageRange>>>>,
    gzipped: Arc<Mutex<BTreeSet<String>>>,
}

impl MboxIndex {
    pub fn insert(&self, key: &str, ranges: Vec<MessageRange>) {
        if let Ok(mut m) = self.ranges.lock() {
            m.insert(key.to_string(), ranges);
        }
    }

    /// A gzipped mbox: its ranges are offsets in the decompressed stream.
    pub fn insert_gzipped(&self, key: &str, ranges: Vec<MessageRange>) {
        self.insert(key, ranges);
        if let Ok(mut g) = self.gzipped.lock() {
            g.insert(key.to_string());
        }
    }

    fn is_gzipped(&self, file: &str) -> bool {
        self.gzipped.lock().is_ok_and(|g| g.contains(file))
    }

    /// The byte range of `inbox.mbox#3`-style keys (1-based).
    pub fn range_of(&self, key: &str) -> Option<(String, MessageRange)> {
        let (file, n) = key.rsplit_once('#')?;
        let n: usize = n.parse().ok()?;
        let m = self.ranges.lock().ok()?;
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

/// A gzip file whose decompressed content starts like an mbox (an archive bundle).
pub fn is_gzipped_mbox(path: &Path) -> bool {
    let mut head = [0u8; 5];
    File::open(path)
        .and_then(|f| flate2::read::MultiGzDecoder::new(BufReader::new(f)).read_exact(&mut head))
        .is_ok()
        && &head == b"From "
}

/// [`scan`] of a gzipped mbox: ranges in the decompressed stream.
pub fn scan_gzipped(path: &Path) -> io::Result<Vec<MessageRange>> {
    let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(File::open(path)?));
    scan_reader(BufReader::new(decoder))
}

/// Byte ranges of the messages (separator lines excluded). A separator is a `From ` line at the
/// start of the file or after an empty line; that empty line belongs to the separator (mboxrd), so
/// it is not part of the message before it.
pub fn scan(path: &Path) -> io::Result<Vec<MessageRange>> {
    scan_reader(BufReader::new(File::open(path)?))
}

/// [`scan`] over any reader.
pub fn scan_reader(mut reader: impl BufRead) -> io::Result<Vec<MessageRange>> {
    let mut ranges = Vec::new();
    let mut line = Vec::new();
    let (mut pos, mut start) = (0u64, None::<u64>);
    // Length of the previous line when it was empty (`\n` or `\r\n`), else 0.
    let mut previous_blank = 0u64;
    let mut at_start = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        if (at_start || previous_blank > 0) && line.starts_with(b"From ") {
            if let Some(s) = start {
                ranges.push((s, pos.saturating_sub(previous_blank).max(s)));
            }
            start = Some(pos + n);
        }
        at_start = false;
        previous_blank = if line == b"\n" || line == b"\r\n" {
            n
        } else {
            0
        };
        pos += n;
    }
    if let Some(s) = start {
        ranges.push((s, pos.saturating_sub(previous_blank).max(s)));
    }
    Ok(ranges)
}

/// The messages of an mbox held in memory, unquoted (what [`InputStore`] would serve).
pub fn split_messages(mbox: &[u8]) -> Vec<Vec<u8>> {
    // Reading from a slice cannot fail.
    let ranges = scan_reader(mbox).unwrap_or_default();
    ranges
        .into_iter()
        .filter_map(|(start, end)| {
            let bytes = mbox.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
            Some(unquote(bytes))
        })
        .collect()
}

/// The separator line of every bundled mail. Fixed (not the time of writing) so that a redo
/// writes identical bytes; the archive's folder and name carry the date.
const SEPARATOR: &[u8] = b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n";

/// Writes mails as a gzipped mboxrd stream: a `From ` line before each mail, `>`-quoting of
/// every line that starts with `>*From `, and an empty line after each mail. Deterministic: the
/// same mails in the same order give the same bytes (gzip without name or mtime).
pub struct MboxWriter {
    gz: flate2::write::GzEncoder<Vec<u8>>,
    mails: usize,
    raw_bytes: u64,
}

impl Default for MboxWriter {
    fn default() -> Self {
        MboxWriter {
            gz: super::staged::deterministic_gzip(),
            mails: 0,
            raw_bytes: 0,
        }
    }
}

impl MboxWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one mail. A mail not ending in a newline gets one (mbox cannot keep that).
    pub fn append(&mut self, mail: &[u8]) -> io::Result<()> {
        self.gz.write_all(SEPARATOR)?;
        for line in mail.split_inclusive(|b| *b == b'\n') {
            let quotes = line.iter().take_while(|b| **b == b'>').count();
            if line[quotes..].starts_with(b"From ") {
                self.gz.write_all(b">")?;
            }
            self.gz.write_all(line)?;
        }
        if !mail.ends_with(b"\n") {
            self.gz.write_all(b"\n")?;
        }
        self.gz.write_all(b"\n")?;
        self.mails += 1;
        self.raw_bytes += mail.len() as u64;
        Ok(())
    }

    /// Mails appended so far.
    pub fn mails(&self) -> usize {
        self.mails
    }

    pub fn is_empty(&self) -> bool {
        self.mails == 0
    }

    /// Compressed bytes produced so far (the compressor may hold a little more): what a caller
    /// bounds to start a new part.
    pub fn compressed_len(&self) -> u64 {
        self.gz.get_ref().len() as u64
    }

    /// Raw mail bytes appended so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The gzipped mbox.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.gz.finish()
    }
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
    /// Where the last read of a gzipped mbox stopped: messages are read in order, so the next one
    /// usually continues the same stream instead of decompressing from the start again.
    gz_cursor: Mutex<Option<GzCursor>>,
}

struct GzCursor {
    file: String,
    pos: u64,
    reader: flate2::read::MultiGzDecoder<BufReader<File>>,
}

impl InputStore {
    pub fn new(files: LocalStore, mbox: MboxIndex) -> Self {
        InputStore {
            files,
            mbox,
            gz_cursor: Mutex::new(None),
        }
    }

    fn read_gzipped_message(
        &self,
        file: &str,
        (start, end): MessageRange,
    ) -> Result<Vec<u8>, StoreError> {
        let err = |e: io::Error| StoreError::Permanent(format!("reading {file}: {e}"));
        let mut cursor = self
            .gz_cursor
            .lock()
            .map_err(|_| StoreError::Transient(format!("reading {file}: lock poisoned")))?;
        let reusable = cursor
            .as_ref()
            .is_some_and(|c| c.file == file && c.pos <= start);
        if !reusable {
            let f = File::open(self.files.path_of(file)?).map_err(err)?;
            *cursor = Some(GzCursor {
                file: file.to_string(),
                pos: 0,
                reader: flate2::read::MultiGzDecoder::new(BufReader::new(f)),
            });
        }
        let Some(c) = cursor.as_mut() else {
            return Err(StoreError::Transient(format!("reading {file}: no reader")));
        };
        io::copy(&mut (&mut c.reader).take(start - c.pos), &mut io::sink()).map_err(err)?;
        let mut bytes = Vec::new();
        (&mut c.reader)
            .take(end.saturating_sub(start))
            .read_to_end(&mut bytes)
            .map_err(err)?;
        c.pos = start + bytes.len() as u64;
        Ok(unquote(&bytes))
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
                if self.mbox.is_gzipped(&file) {
                    self.read_gzipped_message(&file, range).map(Some)
                } else {
                    self.read_message(&file, range).map(Some)
                }
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
        assert_eq!(one, b"Subject: one\n\nbody\nFrom here\n");
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

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn written_bundles_read_back_byte_for_byte() {
        let mails: Vec<&[u8]> = vec![
            b"From: a@example.com\nSubject: plain\n\nbody\n",
            // Body lines that look like separators, quoted or not, after a blank line or not.
            b"From: b@example.com\n\nFrom the start\n\nFrom after a blank\n>From quoted\n>>From twice\n",
            // CRLF, with a From line and a blank CRLF line before it.
            b"From: c@example.com\r\nSubject: crlf\r\n\r\nline\r\n\r\nFrom crlf\r\n",
            // Ends with empty lines.
            b"From: d@example.com\n\nlast\n\n\n",
            // A mail that itself starts with an mbox separator line.
            b"From someone Mon Jan  1 00:00:00 2024\nFrom: e@example.com\n\nx\n",
        ];
        let mut w = MboxWriter::new();
        for m in &mails {
            w.append(m).unwrap();
        }
        assert_eq!(w.mails(), mails.len());
        let gz = w.finish().unwrap();
        let plain = gunzip(&gz);
        let back = split_messages(&plain);
        assert_eq!(
            back.len(),
            mails.len(),
            "{}",
            String::from_utf8_lossy(&plain)
        );
        for (got, want) in back.iter().zip(&mails) {
            assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(want));
        }

        // The same bytes through the file reader `dmarc-tsv local --input` uses.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.mbox");
        std::fs::write(&path, &plain).unwrap();
        assert!(is_mbox(&path));
        let index = MboxIndex::default();
        index.insert("bundle.mbox", scan(&path).unwrap());
        let store = InputStore::new(LocalStore::new(dir.path()), index);
        for (i, want) in mails.iter().enumerate() {
            let got = store
                .get(&message_key("bundle.mbox", i + 1))
                .unwrap()
                .unwrap();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn writing_is_deterministic_and_adds_a_missing_final_newline() {
        let write = |mails: &[&[u8]]| {
            let mut w = MboxWriter::new();
            for m in mails {
                w.append(m).unwrap();
            }
            (w.compressed_len(), w.raw_bytes(), w.finish().unwrap())
        };
        let (_, raw, a) = write(&[b"From: x\n\nno newline", b"From: y\n\n"]);
        assert_eq!(raw, 28);
        let (_, _, b) = write(&[b"From: x\n\nno newline", b"From: y\n\n"]);
        assert_eq!(a, b, "same mails, same bytes");
        let back = split_messages(&gunzip(&a));
        assert_eq!(
            back,
            vec![b"From: x\n\nno newline\n".to_vec(), b"From: y\n\n".to_vec()]
        );
        assert!(MboxWriter::new().is_empty());
    }

    #[test]
    fn gzipped_bundles_are_read_like_plain_mbox_files_in_any_order() {
        let mails: Vec<&[u8]> = vec![
            b"From: a@example.com\n\nFrom the top\n",
            b"From: b@example.com\r\n\r\nbody\r\n",
            b"From: c@example.com\n\nlast\n",
        ];
        let mut w = MboxWriter::new();
        for m in &mails {
            w.append(m).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.mbox.gz");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        assert!(is_gzipped_mbox(&path) && !is_mbox(&path));
        let index = MboxIndex::default();
        index.insert_gzipped("b.mbox.gz", scan_gzipped(&path).unwrap());
        let store = InputStore::new(LocalStore::new(dir.path()), index);
        for n in [1, 2, 3, 2, 1, 3] {
            let got = store.get(&message_key("b.mbox.gz", n)).unwrap().unwrap();
            assert_eq!(got, mails[n - 1], "message {n}");
        }
        std::fs::write(dir.path().join("plain.gz"), b"\x1f\x8b not gzip").unwrap();
        assert!(!is_gzipped_mbox(&dir.path().join("plain.gz")));
    }
}
