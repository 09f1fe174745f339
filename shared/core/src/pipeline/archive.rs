//! Archive: once every staged object of a batch has been compacted (consumed), move the batch's
//! mails to `<move>/<YYYYMMDD>/<key>` (the seed's `-move`), then drop the ledger. Copy first,
//! delete second: a missing source with the target present means the move was already done.

use super::Pipeline;
use super::error::PipelineError;
use super::events::MailRef;
use super::failpoint::hit;
use super::layout::{archive_key, yyyymmdd};
use super::retry::retry;
use super::stage::{Ledger, MailFate};
use super::summary::ArchiveSummary;

/// Ledgers handled by one call (each may move up to `pollmessages` mails).
pub const MAX_LEDGERS_PER_CALL: usize = 200;

/// Handles finished batches until done, [`MAX_LEDGERS_PER_CALL`], or `should_stop` (then `more`).
pub fn archive(
    p: &Pipeline,
    should_stop: &dyn Fn() -> bool,
) -> Result<ArchiveSummary, PipelineError> {
    let prefix = p.layout.ledger_prefix();
    let ledgers = retry(&p.retry, "list ledgers", || p.data.list(&prefix))?;
    let mut summary = ArchiveSummary::default();
    let mut handled = 0;
    for obj in &ledgers {
        if handled >= MAX_LEDGERS_PER_CALL || should_stop() {
            summary.more = true;
            break;
        }
        let Some(bytes) = retry(&p.retry, "get ledger", || p.data.get(&obj.key))? else {
            continue;
        };
        // An unreadable ledger only delays archiving of its mails: report it, go on with others.
        let ledger: Ledger = match serde_json::from_slice(&bytes) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(key = %obj.key, "unreadable ledger left in place: {e}");
                summary.unreadable += 1;
                continue;
            }
        };
        if !all_consumed(p, &ledger)? {
            summary.waiting += 1;
            continue;
        }
        handled += 1;
        for m in &ledger.mails {
            match m.fate {
                MailFate::Staged if p.moves_mails() => {
                    if move_mail(p, &m.mail)? {
                        summary.moved += 1;
                    }
                }
                MailFate::Quarantined => summary.quarantined += 1,
                MailFate::Staged | MailFate::Gone => {}
            }
        }
        retry(&p.retry, "delete ledger", || p.data.delete(&obj.key))?;
        hit("archive.after_ledger_delete")?;
        summary.ledgers += 1;
    }
    p.hooks.archived(&summary);
    Ok(summary)
}

fn all_consumed(p: &Pipeline, ledger: &Ledger) -> Result<bool, PipelineError> {
    for key in &ledger.staged {
        if retry(&p.retry, "check staged", || p.data.exists(key))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Moves one mail; `Ok(false)` when it was already moved (or is gone).
fn move_mail(p: &Pipeline, mail: &MailRef) -> Result<bool, PipelineError> {
    let source = p.mail_store(&mail.bucket)?;
    let target = archive_key(&p.settings.move_prefix, &yyyymmdd(p.now()), &mail.key);
    let copied = match &p.move_store {
        // Another store (local `--move DIR`): read and write.
        Some(dest) => match retry(&p.retry, "get mail to move", || source.get(&mail.key))? {
            Some(bytes) => {
                retry(&p.retry, "put moved mail", || dest.put(&target, &bytes))?;
                true
            }
            None => false,
        },
        None => retry(&p.retry, "copy mail", || source.copy(&mail.key, &target))?,
    };
    if !copied {
        let dest = p.move_store.clone().unwrap_or_else(|| source.clone());
        if !retry(&p.retry, "check moved mail", || dest.exists(&target))? {
            tracing::warn!(key = %mail.key, "mail to archive is gone and not in the archive");
        }
        return Ok(false);
    }
    hit("archive.after_copy")?;
    retry(&p.retry, "delete moved mail", || source.delete(&mail.key))?;
    hit("archive.after_source_delete")?;
    tracing::info!(key = %mail.key, to = %target, "mail archived");
    Ok(true)
}
