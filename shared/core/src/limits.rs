//! Bounds on everything an input can make us allocate or decompress.

use serde::{Deserialize, Serialize};

/// Every decompression and every input-driven allocation is bounded by one of these.
/// A limit that is hit is a permanent error naming the limit (see [`crate::SkipReason::LimitExceeded`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Raw mail size accepted at all (bytes).
    pub max_mail_bytes: u64,
    /// Decompressed bytes produced from one attachment (all nested layers together).
    pub max_attachment_bytes: u64,
    /// Decompressed bytes produced from one whole mail (all attachments together).
    pub max_mail_decompressed_bytes: u64,
    /// Nesting depth of MIME parts, attached messages and containers (zip in gzip in message ...).
    pub max_nesting_depth: u32,
    /// Members read from one zip archive.
    pub max_zip_members: u32,
    /// Element nesting depth inside one XML document.
    pub max_xml_depth: u32,
    /// Bytes of text kept for one XML field value (longer values are truncated, and reported).
    pub max_field_bytes: usize,
    /// Records accepted in one report.
    pub max_records_per_report: u64,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        Limits {
            max_mail_bytes: 64 * MIB,
            max_attachment_bytes: 256 * MIB,
            max_mail_decompressed_bytes: 512 * MIB,
            max_nesting_depth: 8,
            max_zip_members: 64,
            max_xml_depth: 32,
            max_field_bytes: 4096,
            max_records_per_report: 5_000_000,
        }
    }
}
