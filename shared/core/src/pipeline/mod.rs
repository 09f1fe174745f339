//! The exactly-once pipeline: stage (ingest) → compact → archive, over any object store and queue.
//! See doc/architecture.md for the key layout and the exactly-once argument.

pub mod queue;
pub mod store;
