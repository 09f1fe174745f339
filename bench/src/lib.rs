//! dmarc-tsv benchmarks: a volume generator built from the real reports of
//! `tests/fixtures/corpus`, and throughput / peak-memory measurement of `parse_mail`.
//! Figures are printed by the `dmarc-tsv-bench` binary (never asserted in tests).

pub mod corpus;
pub mod generate;
pub mod measure;
pub mod mime;
pub mod xml_edit;
