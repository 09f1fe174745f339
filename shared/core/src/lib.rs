//! dmarc-tsv core: pure, synchronous code that turns the raw bytes of a received mail (or a bare
//! report file) into rows, and the exactly-once staging/compaction pipeline that runs over any
//! [`pipeline::store::ObjectStore`] and [`pipeline::queue::Queue`].
//!
//! No AWS, no async here: adapters live in `dmarc-tsv-aws` and are chosen at runtime.

pub mod columns;
pub mod error;
pub mod extract;
pub mod limits;
pub mod mail;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod writer;

pub use error::{Severity, SkipReason, Skipped};
pub use limits::Limits;
pub use mail::{MailOutcome, ParseOptions, ReportSink, parse_mail};
pub use model::{MailInfo, Record, ReportIdentity, ReportMeta, ReportSummary, RowView};
