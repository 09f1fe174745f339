//! `dmarc-tsv-bench`: generate volume from the real corpus and measure the parser.
//!
//!   dmarc-tsv-bench core                          (a) 2,000 mails and (b) one 100,000-record report
//!   dmarc-tsv-bench gen --out DIR --mails 2000    write generated mails to a folder
//!   dmarc-tsv-bench gen-big --out FILE            write the large-report mail
//!   dmarc-tsv-bench parse-files FILE...           parse files once, print throughput and peak RSS

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dmarc_tsv_bench::corpus::{Template, default_corpus_dir, load_templates};
use dmarc_tsv_bench::generate::{
    GeneratedMail, Generator, VolumeOptions, big_report_mail, richest_template,
};
use dmarc_tsv_bench::measure::{Throughput, best_of, parse_all, peak_rss_kib};
use dmarc_tsv_core::ParseOptions;
use serde::{Deserialize, Serialize};

/// mimalloc rather than the system allocator: parsing a small report mail makes a few hundred
/// short-lived allocations, and glibc's malloc and free were about a tenth of the parse time
/// (measured in doc/benchmarks.md). The same choice in every dmarc-tsv binary and benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dmarc-tsv-bench",
    about = "Volume generator and parser benchmarks for dmarc-tsv"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse (a) many generated mails and (b) one very large report; print rates and peak RSS.
    Core(CoreArgs),
    /// Write generated mails (mail-NNNNNNN.eml) to a folder.
    Gen(GenArgs),
    /// Write one mail holding a large gzipped report.
    GenBig(GenBigArgs),
    /// Parse the given files once (single thread) and print throughput and peak RSS.
    ParseFiles(ParseFilesArgs),
}

#[derive(Args)]
struct CorpusArg {
    /// The real-report corpus to build volume from.
    #[arg(long, default_value_os_t = default_corpus_dir())]
    corpus: PathBuf,
}

#[derive(Args)]
struct CoreArgs {
    #[command(flatten)]
    corpus: CorpusArg,
    /// Mails in set (a).
    #[arg(long, default_value_t = 2000)]
    mails: usize,
    /// Records in the large report (b); 0 skips (b).
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Timed passes over (a); the fastest is reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Runs of (b), each in a fresh child process; the median (by CPU time) is reported.
    #[arg(long, default_value_t = 3)]
    big_runs: u32,
    /// Parse the files of this folder as set (a) instead of generating mails.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    corpus: CorpusArg,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    mails: usize,
    /// Spread report dates over this many days (output partitions).
    #[arg(long, default_value_t = 7)]
    days: u32,
}

#[derive(Args)]
struct GenBigArgs {
    #[command(flatten)]
    corpus: CorpusArg,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    records: usize,
}

#[derive(Args)]
struct ParseFilesArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// One measured set, as printed with `--json` (also the child's answer for set (b)).
#[derive(Debug, Serialize, Deserialize)]
struct Measured {
    #[serde(flatten)]
    throughput: ThroughputJson,
    peak_rss_kib: Option<u64>,
    xml_bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ThroughputJson {
    mails: u64,
    mail_bytes: u64,
    reports: u64,
    rows: u64,
    unusable_mails: u64,
    seconds: f64,
    cpu_seconds: Option<f64>,
}

impl From<&Throughput> for ThroughputJson {
    fn from(t: &Throughput) -> Self {
        ThroughputJson {
            mails: t.mails,
            mail_bytes: t.mail_bytes,
            reports: t.reports,
            rows: t.rows,
            unusable_mails: t.unusable_mails,
            seconds: t.seconds,
            cpu_seconds: t.cpu_seconds,
        }
    }
}

impl ThroughputJson {
    fn rate(&self, count: u64) -> f64 {
        rate(count, self.seconds)
    }

    /// CPU seconds where the platform measures them, else wall-clock seconds.
    fn cpu_or_wall(&self) -> f64 {
        self.cpu_seconds.unwrap_or(self.seconds)
    }
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Core(args) => core(args),
        Cmd::Gen(args) => gen_mails(args),
        Cmd::GenBig(args) => gen_big(args),
        Cmd::ParseFiles(args) => parse_files(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dmarc-tsv-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn templates(corpus: &CorpusArg) -> Result<Vec<Template>> {
    load_templates(&corpus.corpus).with_context(|| format!("loading {}", corpus.corpus.display()))
}

fn generate(templates: &[Template], mails: usize, days: u32) -> Result<Vec<GeneratedMail>> {
    let generator = Generator::new(
        templates,
        VolumeOptions {
            days,
            ..VolumeOptions::default()
        },
    );
    (0..mails)
        .map(|i| generator.mail(i).map_err(anyhow::Error::from))
        .collect()
}

fn gen_mails(args: GenArgs) -> Result<()> {
    let templates = templates(&args.corpus)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let generator = Generator::new(
        &templates,
        VolumeOptions {
            days: args.days,
            ..VolumeOptions::default()
        },
    );
    let mut bytes = 0u64;
    for i in 0..args.mails {
        let mail = generator.mail(i)?;
        bytes += mail.bytes.len() as u64;
        let path = args.out.join(&mail.file_name);
        std::fs::write(&path, &mail.bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {} mails ({:.1} MB) built from {} real reports over {} days to {}",
        args.mails,
        bytes as f64 / 1e6,
        templates.len(),
        args.days,
        args.out.display()
    );
    Ok(())
}

fn gen_big(args: GenBigArgs) -> Result<()> {
    let templates = templates(&args.corpus)?;
    let template = richest_template(&templates).context("no template")?;
    let mail = big_report_mail(template, args.records)?;
    std::fs::write(&args.out, &mail.bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} records, {:.1} MB of XML, mail {:.1} MB) from {}",
        args.out.display(),
        args.records,
        mail.xml_bytes as f64 / 1e6,
        mail.bytes.len() as f64 / 1e6,
        template.name
    );
    Ok(())
}

fn read_files(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

fn folder_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn parse_files(args: ParseFilesArgs) -> Result<()> {
    let mails = read_files(&args.files)?;
    let totals = parse_all(&mails, &ParseOptions::default())?;
    let measured = Measured {
        throughput: (&totals).into(),
        peak_rss_kib: peak_rss_kib(),
        xml_bytes: 0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&measured)?);
    } else {
        print_set("files", &measured, None);
    }
    Ok(())
}

fn core(args: CoreArgs) -> Result<()> {
    let opts = ParseOptions::default();
    let templates = templates(&args.corpus)?;
    let (mails, xml_bytes, label) = match &args.from {
        Some(dir) => {
            let files = folder_files(dir)?;
            (
                read_files(&files)?,
                0,
                format!("{} files of {}", files.len(), dir.display()),
            )
        }
        None => {
            let generated = generate(&templates, args.mails, VolumeOptions::default().days)?;
            let xml: u64 = generated.iter().map(|m| m.xml_bytes as u64).sum();
            let label = format!(
                "{} SES-style mails, zip/gzip/xml rotating over {} real reports",
                generated.len(),
                templates.len()
            );
            (generated.into_iter().map(|m| m.bytes).collect(), xml, label)
        }
    };
    let best = best_of(args.rounds, || parse_all(&mails, &opts))?;
    let set_a = Measured {
        throughput: (&best).into(),
        peak_rss_kib: peak_rss_kib(),
        xml_bytes,
    };
    let set_b = if args.records > 0 {
        Some(big_report_in_children(
            &templates,
            args.records,
            args.big_runs,
        )?)
    } else {
        None
    };
    if args.json {
        let json = serde_json::json!({
            "a": set_a, "b": set_b, "rounds": args.rounds, "big_runs": args.big_runs
        });
        println!("{json}");
        return Ok(());
    }
    print_set(
        &format!("(a) {label}"),
        &set_a,
        Some("this process, mails held in memory"),
    );
    if let Some(b) = &set_b {
        print_set(
            &format!("(b) one mail, {} records gzipped", args.records),
            b,
            Some("child process: mail bytes + parser"),
        );
    }
    warn_if_unusable(&set_a);
    Ok(())
}

/// Runs set (b) `runs` times, each in a child process so the peak RSS it reports is the parser's
/// own, not the generator's (which held the whole XML to build the mail); the run with the
/// median CPU time is reported (one 0.3 s run varies by ±8 % on a shared machine).
fn big_report_in_children(templates: &[Template], records: usize, runs: u32) -> Result<Measured> {
    let template = richest_template(templates).context("no template")?;
    let mail = big_report_mail(template, records)?;
    let path = std::env::temp_dir().join(format!("dmarc-tsv-bench-big-{}.eml", std::process::id()));
    std::fs::write(&path, &mail.bytes).with_context(|| format!("writing {}", path.display()))?;
    let xml_bytes = mail.xml_bytes as u64;
    drop(mail);
    let measured: Result<Vec<Measured>> = (0..runs.max(1))
        .map(|_| parse_file_in_child(&path))
        .collect();
    let _ = std::fs::remove_file(&path);
    let mut measured = measured?;
    measured.sort_by(|a, b| {
        a.throughput
            .cpu_or_wall()
            .total_cmp(&b.throughput.cpu_or_wall())
    });
    let mut median = measured.swap_remove(measured.len() / 2);
    median.xml_bytes = xml_bytes;
    Ok(median)
}

fn parse_file_in_child(path: &Path) -> Result<Measured> {
    let output = Command::new(std::env::current_exe()?)
        .arg("parse-files")
        .arg("--json")
        .arg(path)
        .output()
        .context("starting the child process")?;
    if !output.status.success() {
        bail!(
            "child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the child's answer")
}

fn print_set(label: &str, m: &Measured, rss_note: Option<&str>) {
    let t = &m.throughput;
    println!("{label}");
    println!(
        "    {} mails, {:.1} MB of mail{}: {} reports, {} records in {:.3} s",
        t.mails,
        t.mail_bytes as f64 / 1e6,
        if m.xml_bytes > 0 {
            format!(" ({:.1} MB of XML)", m.xml_bytes as f64 / 1e6)
        } else {
            String::new()
        },
        t.reports,
        t.rows,
        t.seconds
    );
    if let Some(cpu) = t.cpu_seconds {
        println!(
            "    CPU {cpu:.3} s: {:.0} reports/s, {:.0} records/s per CPU-second",
            rate(t.reports, cpu),
            rate(t.rows, cpu)
        );
    }
    println!(
        "    {:.0} reports/s  {:.0} records/s  {:.1} MB/s of mail{}",
        t.rate(t.reports),
        t.rate(t.rows),
        t.rate(t.mail_bytes) / 1e6,
        if m.xml_bytes > 0 {
            format!("  {:.1} MB/s of XML", t.rate(m.xml_bytes) / 1e6)
        } else {
            String::new()
        }
    );
    match m.peak_rss_kib {
        Some(kib) => println!(
            "    peak RSS {:.1} MiB ({})",
            kib as f64 / 1024.0,
            rss_note.unwrap_or("this process")
        ),
        None => println!("    peak RSS unknown (no /proc/self/status)"),
    }
}

fn warn_if_unusable(m: &Measured) {
    let t = &m.throughput;
    if t.unusable_mails > 0 {
        eprintln!(
            "warning: {} of {} mails gave no report: the figures above do not measure real parsing",
            t.unusable_mails, t.mails
        );
    }
}
