//! The exactly-once pipeline: stage (ingest) → compact → archive, over any object store and queue.
//! See doc/architecture.md for the key layout and the exactly-once argument.
//!
//! Entry points: [`stage::drain`] / [`stage::ingest_batch`], [`compact::plan_partitions`] /
//! [`compact::compact_partition`], [`archive::archive`], and [`run::run_all`] which chains them
//! (used by `dmarc-tsv run`, `dmarc-tsv local` and, piecewise, the Lambdas). Every stage takes a
//! [`Pipeline`] (settings, data store, how to reach mail buckets, retry policy, hooks) and returns a
//! summary of counters ([`summary`]); errors say whether a retry may help
//! ([`PipelineError::error_type`]: `Transient`, `BadInput`, `Config`).
//!
//! ```
//! use std::sync::Arc;
//! use dmarc_tsv_core::pipeline::{DirQueue, LocalStore, Pipeline, Settings, run_all};
//!
//! let input = tempfile::tempdir()?;
//! let output = tempfile::tempdir()?;
//! std::fs::write(input.path().join("not-a-report.txt"), "hello")?;
//! let bucket = input.path().display().to_string();
//! let queue = DirQueue::new(input.path(), &bucket, &[])?;
//! let mails = Arc::new(LocalStore::new(input.path()));
//! let pipeline = Pipeline::new(
//!     Settings { emptypolls: 1, ..Settings::default() },
//!     Arc::new(LocalStore::new(output.path())),
//!     Arc::new(move |_bucket: &str| Ok(mails.clone() as _)),
//! )?;
//! // Lambdas pass "is the deadline near?" instead of `|| false`.
//! let summary = run_all(&pipeline, &queue, &|| false)?;
//! assert_eq!((summary.stage.mails, summary.stage.quarantined), (1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod archive;
pub mod compact;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod layout;
pub mod local_store;
pub mod mbox;
pub mod queue;
pub mod retry;
pub mod run;
pub mod settings;
pub mod stage;
pub mod staged;
pub mod store;
pub mod summary;

use std::sync::Arc;

pub use archive::archive;
pub use compact::{compact_partition, plan_partitions};
pub use error::PipelineError;
pub use events::MailRef;
pub use failpoint::FAILPOINTS;
pub use layout::Layout;
pub use local_store::{DirQueue, LocalStore};
pub use mbox::InputStore;
pub use retry::RetryPolicy;
pub use run::{run_all, run_all_workers};
pub use settings::{ArchiveFormat, Settings, SettingsError};
pub use stage::{drain, ingest_batch};
pub use summary::{ArchiveSummary, CompactSummary, PlanSummary, RunSummary, StageSummary};

use crate::error::Skipped;
use store::{ObjectStore, StoreError};

/// Finds the store of a mail's bucket (S3 events name it; locally it is the input folder).
pub type MailStoreResolver =
    Arc<dyn Fn(&str) -> Result<Arc<dyn ObjectStore>, StoreError> + Send + Sync>;

/// Observes the pipeline as it goes: progress bars, stderr notices, metrics. Every method has a
/// no-op default.
pub trait Hooks: Send + Sync {
    /// A mail gave no usable report and was quarantined.
    fn quarantined(&self, _mail: &MailRef, _reasons: &[Skipped]) {}
    /// A part of a usable mail was not used (it is also logged).
    fn skipped(&self, _mail: &MailRef, _skipped: &Skipped) {}
    /// An ingest batch finished; `total` is cumulative for the current drain.
    fn batch_done(&self, _total: &StageSummary) {}
    /// One compaction call finished.
    fn compacted(&self, _summary: &CompactSummary) {}
    /// One archive call finished.
    fn archived(&self, _summary: &ArchiveSummary) {}
}

struct NoHooks;
impl Hooks for NoHooks {}

/// Everything a stage needs: settings, the data store, how to reach mail stores, and policies.
#[derive(Clone)]
pub struct Pipeline {
    pub settings: Settings,
    pub layout: Layout,
    /// The data bucket: staging, state, output, quarantine.
    pub data: Arc<dyn ObjectStore>,
    pub mail_stores: MailStoreResolver,
    /// When set, archived mails are moved into this store (local `--move DIR`); otherwise they are
    /// copied server-side inside their own bucket under `settings.move_prefix`.
    pub move_store: Option<Arc<dyn ObjectStore>>,
    /// Quarantine deletes the original mail (true in AWS; locally only with `--move`).
    pub quarantine_removes_source: bool,
    pub retry: RetryPolicy,
    pub hooks: Arc<dyn Hooks>,
    /// Fixed time (seconds since the epoch) for dated folders (archive, quarantine); `None` = the
    /// current time at each use (a warm Lambda lives across days).
    pub fixed_time: Option<i64>,
    /// Gzip size at which an mbox archive bundle starts a new part (memory bound of archiving).
    pub bundle_part_bytes: u64,
}

impl Pipeline {
    /// Validates the settings. Mails are looked up with `mail_stores`.
    pub fn new(
        settings: Settings,
        data: Arc<dyn ObjectStore>,
        mail_stores: MailStoreResolver,
    ) -> Result<Pipeline, PipelineError> {
        settings.validate()?;
        Ok(Pipeline {
            layout: Layout::new(&settings),
            settings,
            data,
            mail_stores,
            move_store: None,
            quarantine_removes_source: true,
            retry: RetryPolicy::default(),
            hooks: Arc::new(NoHooks),
            fixed_time: None,
            bundle_part_bytes: archive::BUNDLE_PART_BYTES,
        })
    }

    /// Mails and data in the same store, whatever bucket an event names.
    pub fn single_store(
        settings: Settings,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Pipeline, PipelineError> {
        let s = store.clone();
        Pipeline::new(settings, store, Arc::new(move |_| Ok(s.clone())))
    }

    pub fn with_move_store(mut self, store: Arc<dyn ObjectStore>) -> Pipeline {
        self.move_store = Some(store);
        self
    }
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Pipeline {
        self.hooks = hooks;
        self
    }
    pub fn with_retry(mut self, retry: RetryPolicy) -> Pipeline {
        self.retry = retry;
        self
    }
    pub fn with_quarantine_removes_source(mut self, remove: bool) -> Pipeline {
        self.quarantine_removes_source = remove;
        self
    }

    /// Seconds since the epoch for dated folders.
    pub fn now(&self) -> i64 {
        self.fixed_time.unwrap_or_else(now_secs)
    }

    /// Whether archiving moves mails (a `-move` prefix or a move store is configured).
    pub fn moves_mails(&self) -> bool {
        self.move_store.is_some() || !self.settings.move_prefix.is_empty()
    }

    pub(crate) fn mail_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, PipelineError> {
        (self.mail_stores)(bucket).map_err(PipelineError::from)
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
