//! `dmarc-tsv local`: the whole pipeline on a folder, no AWS. Every file under `--input` is a
//! mail (or a bare report file); the output folder gets the same layout as the data bucket:
//! `dmarc/dt=…/part-….tsv.gz`, `quarantine/…` with `.reason.json` sidecars, and `state/` (the
//! manifests that make a second run over the same input skip what it already wrote).
//!
//! Exit status: 0 when the run finished (also when some inputs were quarantined: they are named on
//! stderr), 1 on I/O or storage errors, 2 on usage errors.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use dmarc_tsv_core::Skipped;
use dmarc_tsv_core::pipeline::mbox::MboxIndex;
use dmarc_tsv_core::pipeline::queue::Queue;
use dmarc_tsv_core::pipeline::store::{ObjectStore, StoreError};
use dmarc_tsv_core::pipeline::{
    ArchiveFormat, DirQueue, Hooks, InputStore, LocalStore, MailRef, Pipeline, RunSummary,
    Settings, StageSummary, run_all_workers,
};
use dmarc_tsv_core::writer::Format;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(
    about = "Process a folder of mails or report files into gzipped TSV (no AWS)",
    long_about = "Process every file under --input (raw mails, .eml, Maildir cur/ and new/, mbox \
                  files (any name but .eml/.msg/.xml/.gz/.zip/.json), zip, gzip or XML report \
                  files) into gzipped TSV files under --output, partitioned by \
                  report date like the S3 table. Inputs that hold no usable report are copied to \
                  OUTPUT/quarantine/ with a .reason.json and named on stderr. Running again on the \
                  same input adds no duplicate rows (duplicates are skipped and counted). Inputs \
                  are left in place unless --move is given."
)]
struct Args {
    /// Folder of mails or report files, or one such file (default: ./samples, the bundled
    /// sample reports).
    #[arg(long, value_name = "PATH")]
    input: Option<PathBuf>,
    /// Output folder (dmarc/, quarantine/, state/ go inside).
    #[arg(long, value_name = "DIR", default_value = "dmarc-output")]
    output: PathBuf,
    /// Move processed inputs to DIR/YYYYMMDD/<relative path> (quarantined ones are then removed
    /// from the input too; their copy is in OUTPUT/quarantine/).
    #[arg(long = "move", value_name = "DIR")]
    move_dir: Option<PathBuf>,
    /// With --move: `mail` moves each input to DIR/YYYYMMDD/<relative path>; `mbox` writes each
    /// staged batch as one gzipped mbox DIR/YYYYMMDD/<batch>.mbox.gz and removes the inputs.
    #[arg(long, value_name = "FORMAT", default_value = "mail")]
    archiveformat: ArchiveFormat,
    /// Output files hold at most N*1024 rows.
    #[arg(long, value_name = "N", default_value_t = 32)]
    maxrecords: u32,
    /// tsv (Athena's, no header) or csv (RFC 4180 with a header row).
    #[arg(long, value_name = "FORMAT", default_value = "tsv")]
    format: Format,
    /// Leave out records whose disposition is `none`.
    #[arg(long)]
    excludedispositionnone: bool,
    /// Log every step (info level) on stderr.
    #[arg(long)]
    verbose: bool,
    /// Rows read by one compaction step (memory bound).
    #[arg(long, value_name = "ROWS", hide = true)]
    compactrows: Option<u64>,
    /// Parse with N threads (default: the number of CPUs). The inputs are split into N runs of
    /// consecutive files, so the output is the same from run to run for the same N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: Option<u16>,
}

const DEFAULT_INPUT: &str = "samples";

pub fn main(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return Ok(ExitCode::from(if err.use_stderr() { 2 } else { 0 }));
        }
    };
    init_logging(args.verbose);
    let Input { dir: input, file } = resolve_input(args.input.as_deref())?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating the output folder {}", args.output.display()))?;
    if let Some(dir) = &args.move_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the --move folder {}", dir.display()))?;
    }
    let _lock = lock_output(&args.output)?;
    // Half-written files of a run that died; nobody else writes here while we hold the lock.
    LocalStore::new(&args.output)
        .remove_temp_files()
        .with_context(|| format!("cleaning {}", args.output.display()))?;
    let settings = settings_of(&args)?;
    let bucket = input.display().to_string();
    let mut exclude = vec![args.output.clone()];
    exclude.extend(args.move_dir.clone());
    let queue = match &file {
        Some(name) => DirQueue::single(&input, &bucket, name),
        None => DirQueue::new(&input, &bucket, &exclude),
    }
    .with_context(|| format!("listing {}", input.display()))?;
    let hooks = Arc::new(CliHooks::new(queue.total()));
    let pipeline = build_pipeline(
        &args,
        settings,
        &input,
        bucket,
        queue.mbox_index(),
        hooks.clone(),
    )?;
    let queues = queue.split(jobs_of(&args));
    let workers: Vec<&dyn Queue> = queues.iter().map(|q| q as &dyn Queue).collect();
    let result = run_all_workers(&pipeline, &workers, &|| false);
    hooks.finish();
    let summary = result.with_context(|| format!("processing {}", input.display()))?;
    print_summary(&args, &input, &summary)?;
    if summary.stage.left_for_retry > 0 {
        eprintln!(
            "dmarc-tsv local: {} input(s) could not be read (see the warnings above); run again \
             once fixed",
            summary.stage.left_for_retry
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Worker threads: `--jobs`, else one per CPU.
fn jobs_of(args: &Args) -> usize {
    args.jobs.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// One `local` run per output folder at a time: two would compact the same partitions at once.
/// The OS drops the lock when the process ends, however it ends.
fn lock_output(output: &Path) -> anyhow::Result<std::fs::File> {
    let path = output.join(".dmarc-tsv.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another dmarc-tsv local is writing to {}; wait for it to finish",
            output.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose {
        "warn,dmarc_tsv=info,dmarc_tsv_core=info"
    } else {
        "warn"
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The input folder, and the one file to read when `--input` names a file.
struct Input {
    dir: PathBuf,
    file: Option<String>,
}

fn resolve_input(given: Option<&Path>) -> anyhow::Result<Input> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_INPUT);
            if !p.is_dir() {
                bail!(
                    "no --input given and there is no ./{DEFAULT_INPUT} folder here: pass \
                     --input DIR, a folder of DMARC report mails or files (.eml, .xml, .zip, .gz)"
                );
            }
            p
        }
    };
    if path.is_dir() {
        return Ok(Input {
            dir: path,
            file: None,
        });
    }
    if !path.is_file() {
        bail!("--input {}: no such file or folder", path.display());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--input names no file")?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Input {
        dir,
        file: Some(name),
    })
}

/// Mails staged together by `local` (one staged object per partition per batch).
const LOCAL_STAGE_BATCH: u32 = 1000;

fn settings_of(args: &Args) -> anyhow::Result<Settings> {
    let mut s = Settings {
        maxrecords: args.maxrecords,
        format: args.format,
        excludedispositionnone: args.excludedispositionnone,
        verbose: args.verbose,
        // Local files are all listed at once: one empty poll means done.
        emptypolls: 1,
        // No SQS batch limit here: stage many mails per staged object (fewer files, fuller pieces).
        stagebatch: LOCAL_STAGE_BATCH,
        // Staged rows are read back from the same disk minutes later: compressing them only
        // costs CPU.
        stagecompression: 0,
        archiveformat: args.archiveformat,
        ..Settings::default()
    };
    if let Some(rows) = args.compactrows {
        s.compactrows = rows;
    }
    s.validate()?;
    Ok(s)
}

fn build_pipeline(
    args: &Args,
    settings: Settings,
    input: &Path,
    bucket: String,
    mbox: MboxIndex,
    hooks: Arc<CliHooks>,
) -> anyhow::Result<Pipeline> {
    let inputs: Arc<dyn ObjectStore> = Arc::new(InputStore::new(LocalStore::new(input), mbox));
    let resolver = Arc::new(move |b: &str| {
        if b == bucket {
            Ok(inputs.clone())
        } else {
            Err(StoreError::Permanent(format!(
                "event names {b:?}, not the input folder"
            )))
        }
    });
    let data: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&args.output));
    let mut p = Pipeline::new(settings, data, resolver)?
        .with_hooks(hooks)
        .with_quarantine_removes_source(args.move_dir.is_some());
    if let Some(dir) = &args.move_dir {
        p = p.with_move_store(Arc::new(LocalStore::new(dir)));
    }
    Ok(p)
}

/// Names quarantined inputs on stderr as they happen; draws a progress bar on a terminal.
struct CliHooks {
    bar: Option<ProgressBar>,
}

impl CliHooks {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {pos}/{len} inputs {wide_bar} {elapsed}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        CliHooks { bar }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Hooks for CliHooks {
    fn quarantined(&self, mail: &MailRef, reasons: &[Skipped]) {
        let why = if reasons.is_empty() {
            "nothing recognisable".to_string()
        } else {
            reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.say(&format!("quarantined {}: {why}", mail.key));
    }

    fn batch_done(&self, total: &StageSummary) {
        if let Some(bar) = &self.bar {
            bar.set_position(total.mails + total.gone + total.left_for_retry);
        }
    }
}

fn print_summary(args: &Args, input: &Path, s: &RunSummary) -> anyhow::Result<()> {
    let out = args.output.display();
    let mut e = std::io::stderr().lock();
    writeln!(e, "dmarc-tsv local: {} → {out}", input.display())?;
    writeln!(
        e,
        "  mails {}, reports {}, rows {}",
        s.stage.mails, s.stage.reports, s.stage.rows
    )?;
    writeln!(
        e,
        "  files written {} ({} rows), duplicate reports skipped {} ({} rows)",
        s.files, s.rows_written, s.duplicates, s.duplicate_rows
    )?;
    let by_reason: Vec<String> = s
        .stage
        .quarantined_by_reason
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    if s.stage.quarantined > 0 {
        writeln!(
            e,
            "  quarantined {} ({}): copies and .reason.json in {out}/{}",
            s.stage.quarantined,
            by_reason.join(", "),
            Settings::default().quarantineprefix.trim_end_matches('/')
        )?;
    } else {
        writeln!(e, "  quarantined 0")?;
    }
    if let Some(dir) = &args.move_dir {
        match args.archiveformat {
            ArchiveFormat::Mail => {
                writeln!(e, "  moved {} inputs to {}", s.archive.moved, dir.display())?
            }
            ArchiveFormat::Mbox => writeln!(
                e,
                "  moved {} inputs into {} mbox bundle(s) in {} — look: zcat {}/*/*.mbox.gz | less",
                s.archive.moved,
                s.archive.bundles,
                dir.display(),
                dir.display()
            )?,
        }
    }
    writeln!(e, "  time {:.2}s", s.elapsed.as_secs_f64())?;
    let ext = args.format.extension();
    writeln!(
        e,
        "  {ext} files: {out}/dmarc/dt=*/part-*.{ext}.gz — look: zcat {out}/dmarc/dt=*/*.{ext}.gz | head"
    )?;
    if s.stage.quarantined > 0 {
        writeln!(
            e,
            "  done, with {} input(s) quarantined (named above)",
            s.stage.quarantined
        )?;
    }
    Ok(())
}
