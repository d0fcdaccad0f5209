//! Durable subscriptions on disk (see [`crate::events`] for what they are).
//!
//! Each is one file, `DB/subscriptions/NAME.json`: `{"filters": [...], "next": [n0,
//! n1, ...], "dead_letters": [...]}`, where `next[i]` is the subscription's position on
//! shard `i` (every event of a WAL record numbered below it is handled) and each dead
//! letter is `{"event", "error", "attempts"}` (the event as the API shows it). A file
//! is replaced whole and durably ([`crate::layout::write_durably`]). The [`Saver`]
//! thread writes a subscription's file when its positions or its dead letters moved,
//! at most every [`SAVE_EVERY`], and
//! then publishes them as saved ([`Durable::saved`]), which is what snapshots keep
//! the WAL for: a position is never trusted to the WAL's retention before it is on
//! disk. A crash loses at most the last [`SAVE_EVERY`] of positions, whose events
//! are then delivered again (at least once).

use crate::error::OpenError;
use crate::events::{DeadLetter, Durable, Event, HandlerId, Hub, NOT_STARTED};
use crate::layout;
use ampd_wire::{Error, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the saver looks for moved positions.
pub const SAVE_EVERY: Duration = Duration::from_millis(100);

/// The longest subscription name.
pub const NAME_LEN_MAX: usize = 64;

/// A subscription's name becomes a file name: letters, digits, `_`, `-` and `.`, not
/// starting with `.`, at most [`NAME_LEN_MAX`] bytes.
pub fn check_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty()
        || name.len() > NAME_LEN_MAX
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(Error::new(
            ErrorCode::InvalidQuery,
            format!(
                "subscription name {name:?}: use 1 to {NAME_LEN_MAX} letters, digits, '_', \
                 '-' or '.' (not first)"
            ),
        ));
    }
    Ok(())
}

/// A subscription opened again must name the filters it has.
pub fn check_filters(name: &str, kept: &[String], asked: &[String]) -> Result<(), Error> {
    if kept == asked {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::InvalidQuery,
        format!("subscription {name:?} exists with filter {kept:?}, not {asked:?}"),
    ))
}

const SUFFIX: &str = ".json";

fn file_name(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// A subscription as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Saved {
    #[serde(skip)]
    pub name: String,
    pub filters: Vec<String>,
    pub next: Vec<u64>,
    #[serde(default)]
    pub dead_letters: Vec<SavedLetter>,
}

/// A dead letter as a subscription's file holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedLetter {
    pub event: serde_json::Value,
    pub error: String,
    pub attempts: u32,
}

impl SavedLetter {
    /// The dead letter again, for `handler`; `None` if the event does not read.
    pub fn restore(&self, handler: HandlerId) -> Option<DeadLetter> {
        Some(DeadLetter {
            handler,
            event: Event::from_json(&self.event)?,
            error: self.error.clone(),
            attempts: self.attempts,
        })
    }
}

/// Every subscription saved in database folder `db`, by name.
pub(crate) fn load_all(db: &Path, shards: usize) -> Result<Vec<Saved>, OpenError> {
    let dir = layout::subscriptions_dir(db);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OpenError::io("list", &dir)(e)),
    };
    let mut all = Vec::new();
    for entry in entries {
        let entry = entry.map_err(OpenError::io("list", &dir))?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SUFFIX)) else {
            // A temp file of a save that a crash interrupted.
            continue;
        };
        let path = entry.path();
        let invalid = |why: String| OpenError::Io {
            op: "read the subscription",
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        };
        let text = std::fs::read(&path).map_err(OpenError::io("read", &path))?;
        let mut saved: Saved = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if saved.next.len() != shards {
            return Err(invalid(format!(
                "{} positions for {shards} shards",
                saved.next.len()
            )));
        }
        saved.name = name.to_owned();
        all.push(saved);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Writes a subscription's file.
pub(crate) fn save(db: &Path, saved: &Saved) -> std::io::Result<()> {
    let dir = layout::subscriptions_dir(db);
    std::fs::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    layout::write_durably(&dir, &file_name(&saved.name), &bytes)
}

/// Removes a subscription's file.
pub(crate) fn remove(db: &Path, name: &str) -> std::io::Result<()> {
    let dir = layout::subscriptions_dir(db);
    match std::fs::remove_file(dir.join(file_name(name))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::open(&dir)?.sync_all()
}

/// The thread that saves moved positions.
pub(crate) struct Saver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Saver {
    pub fn start(db: PathBuf, hub: Arc<Hub>) -> std::io::Result<Saver> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ampd-positions".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    std::thread::park_timeout(SAVE_EVERY);
                    save_moved(&db, &hub);
                }
                save_moved(&db, &hub);
            })?;
        Ok(Saver {
            stop,
            thread: Some(thread),
        })
    }

    /// Saves what moved one last time and ends the thread (after the shards stopped).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Saves the subscriptions whose positions or dead letters moved since their last
/// save.
fn save_moved(db: &Path, hub: &Hub) {
    for (id, durable, _) in hub.durables() {
        save_if_moved(db, hub, id, &durable);
    }
}

/// Saves `durable` (registered as `id`) if its positions or the dead letters moved
/// (and every shard tracks it).
pub(crate) fn save_if_moved(db: &Path, hub: &Hub, id: HandlerId, durable: &Durable) {
    let load = |v: &[std::sync::atomic::AtomicU64]| -> Vec<u64> {
        v.iter().map(|n| n.load(Ordering::Acquire)).collect()
    };
    let next = load(&durable.next);
    let dead_changes = hub.dead_changes();
    let moved =
        next != load(&durable.saved) || dead_changes != durable.dead_saved.load(Ordering::Acquire);
    if !moved || next.contains(&NOT_STARTED) || durable.lost().is_some() {
        return;
    }
    let dead_letters = hub
        .dead_letters()
        .into_iter()
        .filter(|d| d.handler == id)
        .map(|d| SavedLetter {
            event: d.event.to_json(),
            error: d.error,
            attempts: d.attempts,
        })
        .collect();
    let saved = Saved {
        name: durable.name.clone(),
        filters: durable.filters.clone(),
        next: next.clone(),
        dead_letters,
    };
    match save(db, &saved) {
        Ok(()) => {
            for (at, n) in durable.saved.iter().zip(next) {
                at.store(n, Ordering::Release);
            }
            durable.dead_saved.store(dead_changes, Ordering::Release);
        }
        Err(e) => tracing::error!(
            "cannot save the position of subscription {:?}: {e} (retried)",
            durable.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_names() {
        for ok in ["mailer", "a", "x.y-z_9", &"n".repeat(NAME_LEN_MAX)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "..",
            "sp ace",
            "é",
            &"n".repeat(NAME_LEN_MAX + 1),
        ] {
            assert_eq!(
                check_name(bad).map_err(|e| e.code()),
                Err(ErrorCode::InvalidQuery),
                "{bad:?}"
            );
        }
    }
}
