//! The one driver: drain the queue into staging, compact every partition until nothing is left,
//! then archive. `dmarc-tsv run` and `dmarc-tsv local` call [`run_all`]; the Lambdas call the same
//! stages piecewise.

use std::time::Instant;

use super::Pipeline;
use super::archive::archive;
use super::compact::{compact_partition, plan_partitions};
use super::error::PipelineError;
use super::queue::Queue;
use super::stage::drain;
use super::summary::{ArchiveSummary, RunSummary, StageSummary};

/// Compaction rounds before giving up on a partition that never empties (a bug guard: every
/// compaction call consumes staged objects).
const MAX_COMPACT_CALLS: u64 = 1_000_000;

/// Drain, compact, archive. `should_stop` is checked between steps; when it fires the summary says
/// `more` and a later run picks up where this one stopped.
pub fn run_all(
    p: &Pipeline,
    queue: &dyn Queue,
    should_stop: &dyn Fn() -> bool,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let stage = drain(p, queue, should_stop)?;
    compact_and_archive(p, stage, should_stop, started)
}

/// [`run_all`] with one drain per queue, each in its own thread (`dmarc-tsv local --jobs`), then
/// compaction and archiving as usual. The queues must not share messages; staging is per batch
/// and compaction deduplicates reports, so workers need no coordination. The first error wins,
/// after every worker has stopped.
pub fn run_all_workers(
    p: &Pipeline,
    queues: &[&dyn Queue],
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let drained: Vec<Result<StageSummary, PipelineError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = queues
            .iter()
            .map(|queue| scope.spawn(move || drain(p, *queue, should_stop)))
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(PipelineError::Permanent("an ingest worker panicked".into()))
                })
            })
            .collect()
    });
    let mut stage = StageSummary::default();
    for drain in drained {
        stage.add(&drain?);
    }
    compact_and_archive(p, stage, should_stop, started)
}

/// The rest of a run once staging is done: compact, then archive (each skipped when stopped).
fn compact_and_archive(
    p: &Pipeline,
    stage: StageSummary,
    should_stop: &dyn Fn() -> bool,
    started: Instant,
) -> Result<RunSummary, PipelineError> {
    let mut summary = RunSummary {
        more: stage.more,
        stage,
        ..RunSummary::default()
    };
    if !summary.more {
        summary.more = compact_all(p, should_stop, &mut summary)?;
    }
    if !summary.more {
        summary.more = archive_all(p, should_stop, &mut summary.archive)?;
    }
    summary.outputs.sort();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Compacts until no partition has staged rows; `Ok(true)` when stopped early.
pub fn compact_all(
    p: &Pipeline,
    should_stop: &dyn Fn() -> bool,
    summary: &mut RunSummary,
) -> Result<bool, PipelineError> {
    let mut calls = 0u64;
    loop {
        let plan = plan_partitions(p)?;
        if plan.partitions.is_empty() {
            return Ok(false);
        }
        for partition in &plan.partitions {
            summary.partitions += 1;
            loop {
                if should_stop() {
                    return Ok(true);
                }
                calls += 1;
                if calls > MAX_COMPACT_CALLS {
                    return Err(PipelineError::Permanent(format!(
                        "partition {partition} does not empty after {MAX_COMPACT_CALLS} compactions"
                    )));
                }
                let c = compact_partition(p, partition)?;
                summary.add_compaction(&c);
                if !c.more {
                    break;
                }
            }
        }
    }
}

/// Archives until no ledger is ready; `Ok(true)` when stopped early.
pub fn archive_all(
    p: &Pipeline,
    should_stop: &dyn Fn() -> bool,
    total: &mut ArchiveSummary,
) -> Result<bool, PipelineError> {
    loop {
        let a = archive(p, should_stop)?;
        total.add(&a);
        if !a.more {
            return Ok(false);
        }
        if should_stop() {
            return Ok(true);
        }
    }
}
