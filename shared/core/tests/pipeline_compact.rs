//! Compaction on crafted staged objects: file sizing, determinism, dedup, bounded pieces, resume.

mod pipeline_support;

use dmarc_tsv_core::pipeline::failpoint::{FAILPOINTS, FailpointSpec, with_failpoint};
use dmarc_tsv_core::pipeline::{
    PipelineError, Settings, compact::manifests, compact_partition, plan_partitions,
};
use dmarc_tsv_core::writer::Format;
use pipeline_support::*;

const DAY1: i64 = 1_704_067_200; // 2024-01-01
const DAY2: i64 = DAY1 + 86_400;

fn settings(maxrecords: u32) -> Settings {
    Settings {
        maxrecords,
        ..Settings::default()
    }
}

fn rows_per_file(root: &std::path::Path, partition: &str) -> Vec<usize> {
    files(root, &format!("dmarc/dt={partition}/"))
        .iter()
        .map(|k| file_lines(&root.join(k)).len())
        .collect()
}

#[test]
fn maxrecords_1_gives_exact_1024_row_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(1));
    // 2,500 rows over reports of odd sizes, in two staged objects: files are filled across
    // report and object boundaries.
    stage_crafted(&p, DAY1, "a", &[("r1", 700), ("r2", 900)]);
    stage_crafted(&p, DAY1, "b", &[("r3", 1), ("r4", 899)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.files, s.rows, s.reports, s.more), (3, 2500, 4, false));
    let mut sizes = rows_per_file(dir.path(), "2024-01-01");
    sizes.sort();
    assert_eq!(sizes, [452, 1024, 1024]);
    // The plan's file order is the row order: the last planned file is the partial one.
    let planned: Vec<usize> = s
        .outputs
        .iter()
        .map(|k| file_lines(&dir.path().join(k)).len())
        .collect();
    assert_eq!(planned, [1024, 1024, 452]);
    assert_no_leftovers(dir.path());
}

#[test]
fn a_big_report_spans_files_and_every_row_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(1));
    stage_crafted(&p, DAY1, "a", &[("big", 3000), ("small", 5)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.files, s.rows), (3, 3005));
    let rows = output_rows(dir.path());
    let mut expected: Vec<String> = (0..3000)
        .map(|i| crafted_row("big", i).join("\t"))
        .chain((0..5).map(|i| crafted_row("small", i).join("\t")))
        .collect();
    expected.sort();
    assert_eq!(rows, expected);
}

#[test]
fn partitions_are_compacted_separately() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(32));
    stage_crafted(&p, DAY1, "a", &[("d1", 3)]);
    stage_crafted(&p, DAY2, "a", &[("d2", 4)]);
    let plan = plan_partitions(&p).unwrap();
    assert_eq!(plan.partitions, ["2024-01-01", "2024-01-02"]);
    assert!(!plan.more);
    let s1 = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!(s1.rows, 3);
    assert_eq!(plan_partitions(&p).unwrap().partitions, ["2024-01-02"]);
    compact_partition(&p, "2024-01-02").unwrap();
    assert_eq!(rows_per_file(dir.path(), "2024-01-02"), [4]);
    assert!(plan_partitions(&p).unwrap().partitions.is_empty());
}

#[test]
fn same_staged_input_gives_the_same_keys_and_bytes() {
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let p = local_pipeline(dir.path(), settings(1));
        stage_crafted(&p, DAY1, "a", &[("r1", 1500)]);
        stage_crafted(&p, DAY1, "b", &[("r2", 10)]);
        compact_partition(&p, "2024-01-01").unwrap();
        files(dir.path(), "dmarc/")
            .into_iter()
            .map(|k| {
                let bytes = std::fs::read(dir.path().join(&k)).unwrap();
                (k, bytes)
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 2);
    assert!(first[0].0.starts_with("dmarc/dt=2024-01-01/part-"));
    assert!(first[0].0.ends_with(".tsv.gz"));
    assert_eq!(first, run());
}

#[test]
fn duplicate_reports_are_dropped_within_a_piece_and_across_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(32));
    stage_crafted(&p, DAY1, "a", &[("r1", 10), ("r2", 5)]);
    stage_crafted(&p, DAY1, "b", &[("r1", 10)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!(
        (s.rows, s.reports, s.duplicates, s.duplicate_rows),
        (15, 2, 1, 10)
    );
    // A later delivery of r2 (and a new r3) in another batch.
    stage_crafted(&p, DAY1, "c", &[("r2", 5), ("r3", 2)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.rows, s.reports, s.duplicates), (2, 1, 1));
    assert_eq!(output_rows(dir.path()).len(), 17);
    let m = manifests(&p, "2024-01-01").unwrap();
    let digests: usize = m.values().map(|m| m.digests.len()).sum();
    assert_eq!(digests, 3);
    // Everything a duplicate: nothing written, staged rows consumed.
    stage_crafted(&p, DAY1, "d", &[("r3", 2)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.files, s.rows, s.duplicates), (0, 0, 1));
    assert_no_leftovers(dir.path());
}

#[test]
fn compactrows_bounds_one_call_and_more_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(
        dir.path(),
        Settings {
            compactrows: 100,
            ..settings(1)
        },
    );
    for b in ["a", "b", "c"] {
        stage_crafted(&p, DAY1, b, &[(b, 60)]);
    }
    // 60 < 100, 120 >= 100: two objects per call.
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.staged_objects, s.rows, s.more), (2, 120, true));
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.staged_objects, s.rows, s.more), (1, 60, false));
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.staged_objects, s.rows, s.more), (0, 0, false));
}

#[test]
fn csv_output_has_a_header_per_file_and_the_csv_extension() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(
        dir.path(),
        Settings {
            format: Format::Csv,
            ..settings(1)
        },
    );
    stage_crafted(&p, DAY1, "a", &[("r", 1030)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!(s.files, 2);
    for key in &s.outputs {
        assert!(key.ends_with(".csv.gz"), "{key}");
        let lines = file_lines(&dir.path().join(key));
        assert!(lines[0].starts_with("dmarc_report_to,report_id,"));
    }
    let counts: Vec<usize> = s
        .outputs
        .iter()
        .map(|k| file_lines(&dir.path().join(k)).len() - 1)
        .collect();
    assert_eq!(counts, [1024, 6]);
}

#[test]
fn tabs_and_newlines_in_fields_never_break_tsv_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(1));
    let mut b = dmarc_tsv_core::pipeline::staged::StagedBuilder::new();
    b.begin_report(identity("x", DAY1), mail("incoming/x"));
    let mut row = crafted_row("x", 0);
    row[5] = "a\tb\nc\\d".into();
    b.push_row(row.iter().map(String::as_str)).unwrap();
    let key = p.layout.staged_key("2024-01-01", "x");
    p.data
        .put(&key, &b.finish("x", "2024-01-01").unwrap())
        .unwrap();
    compact_partition(&p, "2024-01-01").unwrap();
    let rows = output_rows(dir.path());
    assert_eq!(rows.len(), 1);
    let fields: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(fields.len(), dmarc_tsv_core::columns::COLUMNS.len());
    assert_eq!(fields[5], "a b c\\d");
}

#[test]
fn an_interrupted_compaction_is_finished_by_the_next_call_at_every_failpoint() {
    let compact_points = FAILPOINTS.iter().filter(|f| f.starts_with("compact."));
    for (n, name) in compact_points.enumerate() {
        // The 2nd hit, where there is one, lands between two writes of the same kind.
        for nth in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let p = local_pipeline(dir.path(), settings(1));
            stage_crafted(&p, DAY1, "a", &[("r1", 1500)]);
            stage_crafted(&p, DAY1, "b", &[("r1", 1500), ("r2", 600)]);
            let spec: FailpointSpec = format!("{name}:{nth}:error").parse().unwrap();
            let first = with_failpoint(spec, || compact_partition(&p, "2024-01-01"));
            match first {
                Err(PipelineError::Transient(m)) => assert!(m.contains(name), "{m}"),
                Ok(_) if nth == 2 => {} // that failpoint is hit once per call only
                other => panic!("{name}:{nth}: expected the failpoint error, got {other:?}"),
            }
            while compact_partition(&p, "2024-01-01").unwrap().more {}
            let rows = output_rows(dir.path());
            assert_eq!(rows.len(), 2100, "case {n} {name}:{nth}");
            let mut sizes = rows_per_file(dir.path(), "2024-01-01");
            sizes.sort();
            assert_eq!(sizes, [52, 1024, 1024], "{name}:{nth}");
            assert_no_leftovers(dir.path());
        }
    }
}

#[test]
fn a_partition_name_must_be_a_date() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(1));
    for bad in ["../x", "2024-1-1", "", "2024-01-01/"] {
        assert!(matches!(
            compact_partition(&p, bad),
            Err(PipelineError::BadInput(_))
        ));
    }
}

#[test]
fn corrupt_staged_objects_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(1));
    p.data
        .put("staging/dt=2024-01-01/junk.gz", b"not gzip at all")
        .unwrap();
    let e = compact_partition(&p, "2024-01-01").unwrap_err();
    assert!(matches!(e, PipelineError::Corrupt { .. }), "{e}");
    assert_eq!(e.error_type(), "BadInput");
}

#[test]
fn a_staged_key_rewritten_with_other_reports_keeps_the_earlier_dedup_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings(32));
    stage_crafted(&p, DAY1, "a", &[("r1", 3)]);
    compact_partition(&p, "2024-01-01").unwrap();
    // The same batch id again, now holding one more report (e.g. a newer parser read more).
    stage_crafted(&p, DAY1, "a", &[("r1", 3), ("r2", 4)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.rows, s.duplicates), (4, 1));
    assert_eq!(manifests(&p, "2024-01-01").unwrap().len(), 2);
    stage_crafted(&p, DAY1, "b", &[("r1", 3), ("r2", 4)]);
    let s = compact_partition(&p, "2024-01-01").unwrap();
    assert_eq!((s.rows, s.duplicates), (0, 2));
    assert_eq!(output_rows(dir.path()).len(), 7);
}
