//! Failpoints: named places, right after each step that touches storage or the queue, where a test
//! can make the process die (`abort`, exit code 86) or the step fail (`error`, a transient error).
//!
//! `DMARC_FAILPOINT=<name>[:<nth>][:abort|error]` fires at the nth hit (default 1st, default abort).
//! `DMARC_FAILPOINT_ONCE_FILE=<path>`: fire only if the file does not exist, and create it when firing
//! (so a retried Lambda invocation runs through). In-process tests use [`with_failpoint`], which
//! overrides the environment for the current thread only.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::settings::ArchiveFormat;

/// Every failpoint, in pipeline order. Crash tests iterate over this list.
pub const FAILPOINTS: &[&str] = &[
    "stage.after_receive",
    "stage.after_get_mail",
    "stage.after_quarantine_reason_put",
    "stage.after_quarantine_mail_put",
    "stage.after_quarantine_source_delete",
    "stage.after_staged_put",
    "stage.after_ledger_put",
    "stage.after_queue_delete",
    "compact.after_list",
    "compact.after_commit_put",
    "compact.after_output_put",
    "compact.after_manifest_put",
    "compact.after_staged_delete",
    "compact.after_commit_delete",
    "archive.after_copy",
    "archive.after_bundle_put",
    "archive.after_source_delete",
    "archive.after_ledger_delete",
];

/// The archive formats under which a failpoint is reached. Archiving runs differ by format
/// (`archive.after_copy` only moves single mails, `archive.after_bundle_put` only writes
/// bundles), so crash tests run each archive failpoint under every format that reaches it; the
/// other steps do not depend on the format and run under the default one.
pub fn formats_reaching(name: &str) -> &'static [ArchiveFormat] {
    match name {
        "archive.after_copy" => &[ArchiveFormat::Mail],
        "archive.after_bundle_put" => &[ArchiveFormat::Mbox],
        n if n.starts_with("archive.") => &[ArchiveFormat::Mail, ArchiveFormat::Mbox],
        _ => &[ArchiveFormat::Mail],
    }
}

/// Exit code of a process killed by an `abort` failpoint.
pub const ABORT_EXIT_CODE: i32 = 86;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// The process exits at once with [`ABORT_EXIT_CODE`] (no cleanup, like a crash).
    Abort,
    /// The step returns a transient error.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailpointSpec {
    pub name: String,
    /// Fires at this hit (1 = first).
    pub nth: u32,
    pub action: FailAction,
}

impl std::str::FromStr for FailpointSpec {
    type Err = String;
    /// `<name>[:<nth>][:abort|error]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.trim().split(':');
        let name = parts.next().unwrap_or_default().to_string();
        if !FAILPOINTS.contains(&name.as_str()) {
            return Err(format!(
                "unknown failpoint {name:?}; known: {}",
                FAILPOINTS.join(", ")
            ));
        }
        let mut spec = FailpointSpec {
            name,
            nth: 1,
            action: FailAction::Abort,
        };
        for p in parts {
            match p {
                "abort" => spec.action = FailAction::Abort,
                "error" => spec.action = FailAction::Error,
                n => {
                    spec.nth = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("bad failpoint part {n:?} (nth >= 1, abort or error)")
                    })?
                }
            }
        }
        Ok(spec)
    }
}

/// A failpoint in `error` mode fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failpoint {0} fired")]
pub struct FailpointError(pub String);

struct Armed {
    spec: FailpointSpec,
    hits: AtomicU32,
    once_file: Option<std::path::PathBuf>,
}

fn from_env() -> &'static Option<Armed> {
    static ENV: OnceLock<Option<Armed>> = OnceLock::new();
    ENV.get_or_init(|| {
        let raw = std::env::var("DMARC_FAILPOINT").ok()?;
        if raw.trim().is_empty() {
            return None;
        }
        match raw.parse::<FailpointSpec>() {
            Ok(spec) => Some(Armed {
                spec,
                hits: AtomicU32::new(0),
                once_file: std::env::var_os("DMARC_FAILPOINT_ONCE_FILE").map(Into::into),
            }),
            Err(e) => {
                tracing::error!("DMARC_FAILPOINT ignored: {e}");
                None
            }
        }
    })
}

thread_local! {
    static SCOPED: RefCell<Option<(FailpointSpec, u32)>> = const { RefCell::new(None) };
}

/// Runs `f` with `spec` armed on this thread (instead of the environment's failpoint).
pub fn with_failpoint<T>(spec: FailpointSpec, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCOPED.with(|s| *s.borrow_mut() = None);
        }
    }
    SCOPED.with(|s| *s.borrow_mut() = Some((spec, 0)));
    let _reset = Reset;
    f()
}

/// Marks a failpoint. Returns an error (or exits the process) when the armed failpoint fires.
pub fn hit(name: &'static str) -> Result<(), FailpointError> {
    debug_assert!(FAILPOINTS.contains(&name), "unlisted failpoint {name}");
    let scoped = SCOPED.with(|s| {
        let mut s = s.borrow_mut();
        let (spec, hits) = s.as_mut()?;
        Some(if spec.name == name {
            *hits += 1;
            (*hits == spec.nth).then_some(spec.action)
        } else {
            None
        })
    });
    let action = match scoped {
        Some(a) => a,
        None => env_action(name),
    };
    match action {
        None => Ok(()),
        Some(FailAction::Error) => Err(FailpointError(name.to_string())),
        Some(FailAction::Abort) => {
            eprintln!("failpoint {name}: aborting (exit {ABORT_EXIT_CODE})");
            std::process::exit(ABORT_EXIT_CODE)
        }
    }
}

fn env_action(name: &str) -> Option<FailAction> {
    let armed = from_env().as_ref()?;
    if armed.spec.name != name {
        return None;
    }
    let n = armed.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if n != armed.spec.nth {
        return None;
    }
    if let Some(path) = &armed.once_file {
        if path.exists() {
            return None;
        }
        // Best effort: if the marker cannot be written the failpoint fires again next time.
        let _ = std::fs::write(path, name);
    }
    Some(armed.spec.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: FailpointSpec = "compact.after_list:3:error".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.nth, s.action),
            ("compact.after_list", 3, FailAction::Error)
        );
        let s: FailpointSpec = "stage.after_receive".parse().unwrap();
        assert_eq!((s.nth, s.action), (1, FailAction::Abort));
        assert!("nope".parse::<FailpointSpec>().is_err());
        assert!("stage.after_receive:0".parse::<FailpointSpec>().is_err());
    }

    #[test]
    fn scoped_failpoint_fires_at_the_nth_hit_only() {
        let spec: FailpointSpec = "compact.after_list:2:error".parse().unwrap();
        with_failpoint(spec, || {
            assert!(hit("compact.after_list").is_ok());
            assert!(hit("stage.after_receive").is_ok());
            assert_eq!(
                hit("compact.after_list"),
                Err(FailpointError("compact.after_list".into()))
            );
            assert!(hit("compact.after_list").is_ok());
        });
        assert!(hit("compact.after_list").is_ok());
    }
}
