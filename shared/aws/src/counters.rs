//! Request counters per API, for the cost estimate printed by `run --verbose` and put into the
//! summary JSON. Relaxed atomics: they are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// S3 requests sent (each attempt the SDK makes counts once here: we count calls, the SDK's own
/// retries are invisible to us and rare).
#[derive(Debug, Default)]
pub struct S3Counters {
    get: AtomicU64,
    put: AtomicU64,
    copy: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
}

/// A copy of [`S3Counters`] at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct S3Requests {
    pub get: u64,
    pub put: u64,
    pub copy: u64,
    pub delete: u64,
    pub list: u64,
    pub head: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum S3Api {
    Get,
    Put,
    Copy,
    Delete,
    List,
    Head,
}

impl S3Counters {
    pub(crate) fn count(&self, api: S3Api) {
        let counter = match api {
            S3Api::Get => &self.get,
            S3Api::Put => &self.put,
            S3Api::Copy => &self.copy,
            S3Api::Delete => &self.delete,
            S3Api::List => &self.list,
            S3Api::Head => &self.head,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> S3Requests {
        S3Requests {
            get: self.get.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            copy: self.copy.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
        }
    }
}

impl S3Requests {
    /// PUT, COPY and LIST are billed in the "tier 1" class, GET and HEAD in "tier 2";
    /// DELETE is free.
    pub fn tier1(&self) -> u64 {
        self.put + self.copy + self.list
    }

    pub fn tier2(&self) -> u64 {
        self.get + self.head
    }
}

/// SQS requests sent: ReceiveMessage and DeleteMessageBatch calls, plus messages deleted.
#[derive(Debug, Default)]
pub struct SqsCounters {
    receive: AtomicU64,
    empty_receive: AtomicU64,
    delete_batch: AtomicU64,
    deleted: AtomicU64,
    get_queue_url: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SqsRequests {
    pub receive: u64,
    pub empty_receive: u64,
    pub delete_batch: u64,
    pub deleted: u64,
    pub get_queue_url: u64,
}

impl SqsCounters {
    pub(crate) fn count_receive(&self, messages: usize) {
        self.receive.fetch_add(1, Ordering::Relaxed);
        if messages == 0 {
            self.empty_receive.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_delete_batch(&self, deleted: usize) {
        self.delete_batch.fetch_add(1, Ordering::Relaxed);
        self.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_get_queue_url(&self) {
        self.get_queue_url.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SqsRequests {
        SqsRequests {
            receive: self.receive.load(Ordering::Relaxed),
            empty_receive: self.empty_receive.load(Ordering::Relaxed),
            delete_batch: self.delete_batch.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            get_queue_url: self.get_queue_url.load(Ordering::Relaxed),
        }
    }
}

impl SqsRequests {
    /// Billed SQS requests (each ReceiveMessage, empty or not, and each batch delete).
    pub fn billed(&self) -> u64 {
        self.receive + self.delete_batch + self.get_queue_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_counters_count_each_api_separately() {
        let counters = S3Counters::default();
        counters.count(S3Api::Get);
        counters.count(S3Api::Get);
        counters.count(S3Api::Put);
        counters.count(S3Api::List);
        counters.count(S3Api::Delete);
        let snap = counters.snapshot();
        assert_eq!(
            snap,
            S3Requests {
                get: 2,
                put: 1,
                copy: 0,
                delete: 1,
                list: 1,
                head: 0
            }
        );
        assert_eq!(snap.tier1(), 2);
        assert_eq!(snap.tier2(), 2);
    }

    #[test]
    fn sqs_counters_track_empty_polls_and_deleted_messages() {
        let counters = SqsCounters::default();
        counters.count_receive(0);
        counters.count_receive(3);
        counters.count_delete_batch(3);
        let snap = counters.snapshot();
        assert_eq!((snap.receive, snap.empty_receive), (2, 1));
        assert_eq!((snap.delete_batch, snap.deleted), (1, 3));
        assert_eq!(snap.billed(), 3);
    }
}
