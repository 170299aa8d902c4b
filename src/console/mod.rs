//! The one owner of the client's terminal.
//!
//! Two modes, chosen once by [`Console::start`]:
//! - **terminal** (stdin and stdout are terminals, not [`ConsoleOptions::plain`]): a line
//!   editor with the caller's prompt ([`ConsoleOptions::prompt`]), history kept between
//!   runs, Tab completion ([`candidates`]), notices printed above the half-typed line, and
//!   progress bars while downloads run;
//! - **plain** (a script on stdin, or forced): every stdin line becomes an event at once,
//!   output is flushed line by line, no prompt, no colours, no bars.
//!
//! Protocol with the driver: events arrive on the returned channel; after handling a
//! [`InputEvent::Line`] the driver calls [`Console::ready`] so that the next prompt appears
//! below the command's output. [`InputEvent::Interrupt`] needs no `ready` (the prompt comes
//! back at once, as in a shell); a `ready` sent anyway does no harm.

mod complete;
mod term;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

pub use complete::{candidates, candidates_in, listing_wanted};

/// What the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupt,
    /// End of input (Ctrl-D, or the end of a piped script).
    Eof,
}

/// What completion needs to know, updated by the client driver.
#[derive(Debug, Default, Clone)]
pub struct CompletionData {
    /// The command names, completed as the first word (and after `help`); the client
    /// gives them when it creates the console.
    pub commands: Vec<String>,
    /// The folder set by `setdir`.
    pub dir: Option<PathBuf>,
    /// File name -> owners offering it, from the local table.
    pub table: BTreeMap<String, Vec<String>>,
    /// (owner, folder name with its `/`) -> the folder's hash as the table lists it,
    /// for the owners whose record verifies: which listings are current.
    pub folder_hashes: BTreeMap<(String, String), [u8; 32]>,
    /// (owner, folder) -> the listing fetched for it, so that `request photos/2024/a`
    /// completes inside the folder. Used only while its hash is the listed one.
    pub folders: BTreeMap<(String, String), FolderListing>,
    /// Where completion asks for a listing it wants but does not hold ([`listing_wanted`]);
    /// the client fetches it in the background.
    pub wants: Option<mpsc::UnboundedSender<ListingWant>>,
}

/// The paths inside one version of an offered folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderListing {
    /// The folder hash (its manifest's) the paths come from.
    pub hash: [u8; 32],
    /// Relative paths, folders with a trailing `/` (`2024/`, `2024/a.jpg`).
    pub paths: Vec<String>,
}

/// A listing completion would use but does not hold (or holds for an older version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingWant {
    pub owner: String,
    /// The folder's offered name, `photos/`.
    pub folder: String,
    /// Its hash in the table.
    pub hash: [u8; 32],
}

pub type SharedCompletion = Arc<RwLock<CompletionData>>;

/// How the console is set up.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// The prompt of terminal mode (the client's `>>> `).
    pub prompt: String,
    /// Force plain mode even on a terminal.
    pub plain: bool,
    /// Where history is kept between runs (terminal mode only); `None` means
    /// [`default_history_path`].
    pub history: Option<PathBuf>,
    pub completion: SharedCompletion,
}

/// Where history is kept when [`ConsoleOptions::history`] is not set: `history.txt` in the
/// user's data folder for fileapp (`None` if the system has no home folder).
pub fn default_history_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "fileapp").map(|d| d.data_dir().join("history.txt"))
}

/// Handle to the console; cheap to clone, usable from any thread or task.
#[derive(Clone)]
pub struct Console {
    /// `None` in plain mode.
    term: Option<Arc<term::Term>>,
}

/// A progress bar; does nothing in plain mode. Dropping it is the same as [`finish`].
///
/// [`finish`]: Progress::finish
pub struct Progress {
    bar: Option<term::Bar>,
}

impl Progress {
    /// `done` bytes of the total have arrived.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set(done);
        }
    }

    /// Replaces the bar's label (a folder's count of files done).
    pub fn set_label(&self, label: &str) {
        if let Some(b) = &self.bar {
            b.set_label(label);
        }
    }

    /// Removes the bar (the driver prints its own result line).
    pub fn finish(self) {}
}

impl Console {
    /// Starts reading input; events arrive on the returned channel.
    pub fn start(opts: ConsoleOptions) -> (Console, mpsc::UnboundedReceiver<InputEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        if tty && !opts.plain {
            let history = opts.history.clone().or_else(default_history_path);
            match term::Term::start(
                opts.prompt.clone(),
                history,
                opts.completion.clone(),
                tx.clone(),
            ) {
                Ok(t) => return (Console { term: Some(t) }, rx),
                // The editor could not take the terminal (odd TERM, ...): a plain console
                // still works, which beats refusing to run.
                Err(e) => tracing::debug!("line editor unavailable, using plain mode: {e}"),
            }
        }
        spawn_plain_reader(tx);
        (Console { term: None }, rx)
    }

    pub fn is_terminal(&self) -> bool {
        self.term.is_some()
    }

    /// Prints one line without disturbing what the user is typing.
    pub fn print(&self, line: &str) {
        match &self.term {
            Some(t) => t.print(line),
            None => print_plain(line),
        }
    }

    /// The previous command finished: the next line may be read.
    pub fn ready(&self) {
        if let Some(t) = &self.term {
            t.ready();
        }
    }

    /// A progress bar for a download of `total` bytes.
    pub fn progress(&self, label: &str, total: u64) -> Progress {
        Progress {
            bar: self
                .term
                .as_ref()
                .and_then(|t| t.progress(label, total, false)),
        }
    }

    /// A progress bar that counts files (hashing a folder for an offer).
    pub fn progress_files(&self, label: &str, total: u64) -> Progress {
        Progress {
            bar: self
                .term
                .as_ref()
                .and_then(|t| t.progress(label, total, true)),
        }
    }
}

/// Plain mode input: every line as it comes (the driver queues commands itself), then
/// `Eof` at the end of input or on a read error.
fn spawn_plain_reader(tx: mpsc::UnboundedSender<InputEvent>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Bytes, not `lines()`: one line of invalid UTF-8 must not end the script.
            match lock.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                        if buf.ends_with(b"\r") {
                            buf.pop();
                        }
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(InputEvent::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(InputEvent::Eof);
    });
}

/// One whole line under the stdout lock, flushed, so lines from concurrent tasks never mix
/// and a script's reader sees each one at once. Errors (closed pipe) are ignored: output
/// is best effort and must never bring the client down.
fn print_plain(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
