//! Local mode: a folder as the object store ([`LocalStore`]) and a folder of input files as the
//! queue ([`DirQueue`]), so the very same pipeline runs with no AWS at all.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::events::synthetic_s3_event;
use super::mbox::{self, MboxIndex};
use super::queue::{Message, Queue, QueueError, ReceiveOptions};
use super::store::{ObjectInfo, ObjectStore, StoreError};

/// Temporary files of an unfinished `put` end with this; listings never show them.
const TMP_SUFFIX: &str = ".dmarc-tsv-tmp";

/// A folder holding objects: key `a/b/c` is file `<root>/a/b/c`. `put` writes a temporary file and
/// renames it over the target, so readers see the old or the new bytes, never a mix.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key. Keys that could escape the root (`..`, absolute, empty parts) are refused.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = key.is_empty()
            || key.contains('\\')
            || key.contains('\0')
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || key.ends_with(TMP_SUFFIX);
        if bad {
            return Err(StoreError::Permanent(format!("invalid key {key:?}")));
        }
        let rel = Path::new(key);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(StoreError::Permanent(format!("invalid key {key:?}")));
        }
        Ok(self.root.join(rel))
    }

    fn write_atomically(
        &self,
        path: &Path,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(
            ".{name}.{}.{}{TMP_SUFFIX}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write(&tmp).and_then(|()| fs::rename(&tmp, path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Deletes temporary files left by writers that died mid-`put`. Only call it while no other
    /// process writes to this folder (local mode holds a lock on the output folder).
    pub fn remove_temp_files(&self) -> io::Result<u64> {
        fn sweep(dir: &Path) -> io::Result<u64> {
            let mut removed = 0;
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    removed += sweep(&entry.path())?;
                } else if entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
            Ok(removed)
        }
        sweep(&self.root)
    }

    /// Removes now-empty folders between a deleted file and the root (tidy output trees).
    fn prune_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        prefix: &str,
        out: &mut Vec<ObjectInfo>,
    ) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                continue;
            }
            let key = format!("{rel}{name}");
            let meta = entry.metadata()?;
            if meta.is_dir() {
                let sub = format!("{key}/");
                // Only descend where keys can still match the prefix.
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    self.walk(&entry.path(), &sub, prefix, out)?;
                }
            } else if meta.is_file() && key.starts_with(prefix) {
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                });
            } else if meta.file_type().is_symlink() && key.starts_with(prefix) {
                // A symlink to a file is an object; to a folder it is skipped (no cycles).
                if let Ok(target) = fs::metadata(entry.path())
                    && target.is_file()
                {
                    out.push(ObjectInfo {
                        key,
                        size: target.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Local disk errors: a full disk or a permission problem will not go away by retrying; an
/// interrupted or timed-out call may.
fn store_error(what: &str, key: &str, e: io::Error) -> StoreError {
    let msg = format!("{what} {key}: {e}");
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            StoreError::Transient(msg)
        }
        _ => StoreError::Permanent(msg),
    }
}

impl ObjectStore for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(key)?;
        match read_file(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if path.is_dir() => Err(StoreError::Permanent(format!(
                "get {key}: is a folder ({e})"
            ))),
            Err(e) => Err(store_error("get", key, e)),
        }
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        self.write_atomically(&path, |tmp| fs::write(tmp, body))
            .map_err(|e| store_error("put", key, e))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune_empty_parents(&path);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error("delete", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Start at the deepest folder the prefix names, not at the root.
        let (dir_rel, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start_rel = if dir_rel.is_empty() {
            String::new()
        } else {
            format!("{dir_rel}/")
        };
        let start = if dir_rel.is_empty() {
            self.root.clone()
        } else {
            match self.path_of(dir_rel) {
                Ok(p) => p,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        self.walk(&start, &start_rel, prefix, &mut out)
            .map_err(|e| store_error("list", prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn copy(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let src = self.path_of(from)?;
        let dst = self.path_of(to)?;
        if !src.is_file() {
            return Ok(false);
        }
        match self.write_atomically(&dst, |tmp| fs::copy(&src, tmp).map(|_| ())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !src.exists() => Ok(false),
            Err(e) => Err(store_error("copy", from, e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.path_of(key)?.is_file())
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// Every file under an input folder, as queue messages: each body is a synthetic S3 event naming
/// bucket = the folder's name as given, key = the file's relative path. Hidden files, temporary
/// files, Markdown notes and a Maildir's `tmp/` are skipped; so are `exclude`d folders (e.g. the output inside the
/// input). An mbox file gives one message per mail it holds (`inbox#2`; read them through
/// [`mbox::InputStore`]); so does a gzipped mbox named `*.mbox.gz` (an archive bundle).
/// `delete` only marks messages done: local runs list the folder afresh.
pub struct DirQueue {
    bucket: String,
    mbox: MboxIndex,
    pending: Mutex<VecDeque<Message>>,
    done: Mutex<HashSet<String>>,
    total: usize,
}

impl DirQueue {
    /// Every file under `input`, except under the `exclude` folders (the output and move
    /// folders when they sit inside the input).
    pub fn new(input: &Path, bucket: &str, exclude: &[PathBuf]) -> io::Result<DirQueue> {
        // Resolved once here, compared against sub-folders only: resolving every listed path
        // cost two `realpath` calls per input file.
        let exclude: Vec<PathBuf> = exclude
            .iter()
            .filter_map(|path| fs::canonicalize(path).ok())
            .collect();
        let mut found = Vec::new();
        collect_inputs(input, "", &exclude, &mut found)?;
        found.sort();
        Self::from_found(input, bucket, found)
    }

    /// One file of `input` (its name relative to the folder), e.g. `dmarc-tsv local --input x.eml`.
    pub fn single(input: &Path, bucket: &str, name: &str) -> io::Result<DirQueue> {
        let size = fs::metadata(input.join(name))?.len();
        Self::from_found(input, bucket, vec![(name.to_string(), size)])
    }

    fn from_found(input: &Path, bucket: &str, found: Vec<(String, u64)>) -> io::Result<DirQueue> {
        let mbox = MboxIndex::default();
        let mut files = Vec::with_capacity(found.len());
        for (key, size) in found {
            let path = input.join(&key);
            // Archive bundles are named `*.mbox.gz`; other `.gz` files are never opened to look.
            let gzipped = is_mbox_gz(&key) && mbox::is_gzipped_mbox(&path);
            if !gzipped && (!may_be_mbox(&key) || !mbox::is_mbox(&path)) {
                files.push((key, size));
                continue;
            }
            let ranges = if gzipped {
                mbox::scan_gzipped(&path)?
            } else {
                mbox::scan(&path)?
            };
            files.extend(
                ranges
                    .iter()
                    .enumerate()
                    .map(|(i, (start, end))| (mbox::message_key(&key, i + 1), end - start)),
            );
            if gzipped {
                mbox.insert_gzipped(&key, ranges);
            } else {
                mbox.insert(&key, ranges);
            }
        }
        let pending: VecDeque<Message> = files
            .into_iter()
            .map(|(key, size)| Message {
                id: key.clone(),
                receipt: key.clone(),
                body: synthetic_s3_event(bucket, &key, Some(size)),
                receive_count: 1,
            })
            .collect();
        Ok(DirQueue {
            bucket: bucket.into(),
            mbox,
            total: pending.len(),
            pending: Mutex::new(pending),
            done: Mutex::new(HashSet::new()),
        })
    }

    /// Splits the inputs into `n` queues of consecutive inputs (in listing order), one per
    /// worker. The split depends only on the listing and `n`, so each worker stages the same
    /// batches run after run, and the output stays the same for the same input.
    pub fn split(self, n: usize) -> Vec<DirQueue> {
        let mut pending = self.pending.into_inner().unwrap_or_else(|e| e.into_inner());
        let n = n.clamp(1, pending.len().max(1));
        let mut queues = Vec::with_capacity(n);
        for i in 0..n {
            let size = pending.len() / (n - i);
            let rest = pending.split_off(size);
            queues.push(DirQueue {
                bucket: self.bucket.clone(),
                mbox: self.mbox.clone(),
                total: pending.len(),
                pending: Mutex::new(std::mem::replace(&mut pending, rest)),
                done: Mutex::new(HashSet::new()),
            });
        }
        queues
    }

    /// The mbox files found and their messages: give it to [`mbox::InputStore`] so the
    /// messages can be read.
    pub fn mbox_index(&self) -> MboxIndex {
        self.mbox.clone()
    }

    /// Inputs found (files, and messages inside mbox files).
    pub fn total(&self) -> usize {
        self.total
    }

    /// Messages deleted (handled) so far.
    pub fn done(&self) -> usize {
        self.done.lock().map(|d| d.len()).unwrap_or(0)
    }
}

fn collect_inputs(
    dir: &Path,
    rel: &str,
    exclude: &[PathBuf],
    out: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let is_maildir = entries.iter().any(|e| e.file_name() == "cur")
        && entries.iter().any(|e| e.file_name() == "new");
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // Markdown (a README or NOTICE next to sample reports) is never a mail.
        if name.starts_with('.') || name.ends_with(TMP_SUFFIX) || name.ends_with(".md") {
            continue;
        }
        let file_type = entry.file_type()?;
        // The entry's own metadata (no path walk) unless it is a symlink, which is followed.
        let meta = if file_type.is_symlink() {
            fs::metadata(&path)
        } else {
            entry.metadata()
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                // A dangling symlink or a file that vanished: say so, do not fail the listing.
                tracing::warn!(path = %path.display(), "input skipped: {e}");
                continue;
            }
        };
        let key = format!("{rel}{name}");
        // Symlinked folders are not followed (no loops); symlinked files are read.
        if file_type.is_dir() {
            if is_excluded(&path, exclude) {
                continue;
            }
            if !(is_maildir && name == "tmp") {
                collect_inputs(&path, &format!("{key}/"), exclude, out)?;
            }
        } else if meta.is_file() {
            out.push((key, meta.len()));
        }
    }
    Ok(())
}

/// A whole file, like `fs::read` without asking the file's size first: one system call less
/// per input (most mails fit the first read; the buffer is trimmed to the bytes read).
fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    const FIRST_READ: usize = 32 * 1024;
    let mut bytes = Vec::with_capacity(FIRST_READ);
    // Through `take`: `File::read_to_end` itself would ask for the size (and the position).
    fs::File::open(path)?
        .take(u64::MAX)
        .read_to_end(&mut bytes)?;
    bytes.shrink_to_fit();
    Ok(bytes)
}

/// File names that always hold one mail or one report file: not opened at listing time to look
/// for an mbox (which cost one extra open per input). Everything else (Maildir names, `.mbox`,
/// no extension) is sniffed for the mbox `From ` line.
fn may_be_mbox(key: &str) -> bool {
    const SINGLE: &[&str] = &[".eml", ".xml", ".gz", ".zip", ".json", ".msg"];
    let lower = key.to_ascii_lowercase();
    !SINGLE.iter().any(|ext| lower.ends_with(ext))
}

/// The name of an archive bundle (`-archiveformat mbox`): a gzipped mbox.
fn is_mbox_gz(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(".mbox.gz")
}

/// `dir` is one of the (already resolved) excluded folders.
fn is_excluded(dir: &Path, exclude: &[PathBuf]) -> bool {
    !exclude.is_empty() && fs::canonicalize(dir).is_ok_and(|dir| exclude.contains(&dir))
}

impl Queue for DirQueue {
    fn receive(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| QueueError::Permanent("queue lock poisoned".into()))?;
        let n = (opts.max_messages.max(1) as usize).min(pending.len());
        Ok(pending.drain(..n).collect())
    }

    fn delete(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut done = self
            .done
            .lock()
            .map_err(|_| QueueError::Permanent("queue lock poisoned".into()))?;
        done.extend(receipts.iter().cloned());
        Ok(())
    }

    fn describe(&self) -> String {
        format!("files under {}", self.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_copy_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        s.put("a/b/c.txt", b"one").unwrap();
        s.put("a/b/c.txt", b"two").unwrap();
        s.put("a/d", b"x").unwrap();
        s.put("z", b"y").unwrap();
        assert_eq!(s.get("a/b/c.txt").unwrap().unwrap(), b"two");
        assert_eq!(s.get("nope").unwrap(), None);
        let keys: Vec<String> = s.list("a/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["a/b/c.txt", "a/d"]);
        let keys: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["a/b/c.txt", "a/d", "z"]);
        assert_eq!(s.list("a/b/c").unwrap().len(), 1);
        assert!(s.list("q/").unwrap().is_empty());
        assert!(s.copy("a/d", "e/f").unwrap());
        assert!(!s.copy("missing", "e/g").unwrap());
        assert!(s.exists("e/f").unwrap());
        s.delete("a/b/c.txt").unwrap();
        s.delete("a/b/c.txt").unwrap();
        assert!(!dir.path().join("a/b").exists(), "empty folders are pruned");
        fs::write(dir.path().join("a/.d.1.2.dmarc-tsv-tmp"), "half").unwrap();
        assert_eq!(
            s.list("a/").unwrap().len(),
            1,
            "temporary files are never listed"
        );
        assert_eq!(s.remove_temp_files().unwrap(), 1);
        assert!(matches!(s.get("../x"), Err(StoreError::Permanent(_))));
        assert!(matches!(s.put("/abs", b""), Err(StoreError::Permanent(_))));
        assert!(matches!(s.put("a//b", b""), Err(StoreError::Permanent(_))));
    }

    #[test]
    fn split_queues_hold_consecutive_inputs_once_each() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..7 {
            fs::write(dir.path().join(format!("m{i}.eml")), "x").unwrap();
        }
        let opts = ReceiveOptions {
            max_messages: 10,
            wait_seconds: 0,
            visibility_timeout_seconds: 1,
        };
        let ids = |q: &DirQueue| -> Vec<String> {
            q.receive(&opts)
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        let queues = DirQueue::new(dir.path(), "in", &[]).unwrap().split(3);
        let sizes: Vec<usize> = queues.iter().map(DirQueue::total).collect();
        assert_eq!(sizes, [2, 2, 3]);
        let all: Vec<String> = queues.iter().flat_map(ids).collect();
        let expected: Vec<String> = (0..7).map(|i| format!("m{i}.eml")).collect();
        assert_eq!(all, expected);
        // More workers than inputs: one queue per input; an empty folder: one empty queue.
        assert_eq!(
            DirQueue::new(dir.path(), "in", &[])
                .unwrap()
                .split(50)
                .len(),
            7
        );
        let empty = tempfile::tempdir().unwrap();
        let queues = DirQueue::new(empty.path(), "in", &[]).unwrap().split(4);
        assert_eq!(queues.len(), 1);
        assert_eq!(queues[0].total(), 0);
    }

    #[test]
    fn only_files_not_named_as_one_mail_or_report_are_sniffed_for_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = "From a@example.com Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n\n\
                    From b@example.com Mon Jan  1 00:00:00 2024\nSubject: two\n\nbody\n";
        for name in [
            "archive.mbox",
            "Inbox",
            "looks-like-mbox.eml",
            "report.XML.GZ",
        ] {
            fs::write(dir.path().join(name), mbox).unwrap();
        }
        let q = DirQueue::new(dir.path(), "in", &[]).unwrap();
        // Two messages from each of the first two, one input from each of the last two.
        assert_eq!(q.total(), 6);
        assert!(may_be_mbox("maildir/cur/1700000000.M1P2.host:2,S"));
        assert!(!may_be_mbox("a/b/mail.EML"));
    }

    #[test]
    fn dir_queue_lists_files_as_s3_events() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("maildir/cur")).unwrap();
        fs::create_dir_all(root.join("maildir/new")).unwrap();
        fs::create_dir_all(root.join("maildir/tmp")).unwrap();
        fs::create_dir_all(root.join("out")).unwrap();
        fs::write(root.join("maildir/cur/1"), "a").unwrap();
        fs::write(root.join("maildir/new/2"), "b").unwrap();
        fs::write(root.join("maildir/tmp/3"), "c").unwrap();
        fs::write(root.join(".hidden"), "d").unwrap();
        fs::write(root.join("README.md"), "notes").unwrap();
        fs::write(root.join("out/x"), "e").unwrap();
        fs::write(root.join("r 1.xml"), "f").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        // Spelled another way than the listing's paths: excluded folders are compared resolved.
        let out = root.join("maildir").join("..").join("out");
        let q = DirQueue::new(root, "in", &[out]).unwrap();
        assert_eq!(q.total(), 3);
        let opts = ReceiveOptions {
            max_messages: 2,
            wait_seconds: 1,
            visibility_timeout_seconds: 1,
        };
        let first = q.receive(&opts).unwrap();
        assert_eq!(first.len(), 2);
        let rest = q.receive(&opts).unwrap();
        assert_eq!(rest.len(), 1);
        assert!(q.receive(&opts).unwrap().is_empty());
        let keys: Vec<String> = first
            .iter()
            .chain(&rest)
            .map(|m| match super::super::events::parse_body(&m.body) {
                super::super::events::Body::Mails(v) => v[0].key.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["maildir/cur/1", "maildir/new/2", "r 1.xml"]);
        q.delete(&[first[0].receipt.clone()]).unwrap();
        assert_eq!(q.done(), 1);
    }
}
