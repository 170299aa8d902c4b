//! The one owner of the client's terminal (placeholder API; the line editor comes in the
//! console work). In plain mode (stdin not a terminal) lines are read one by one and output
//! is printed as plain, flushed lines.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

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
    /// The folder set by `setdir`.
    pub dir: Option<PathBuf>,
    /// File name -> owners offering it, from the local table.
    pub table: BTreeMap<String, Vec<String>>,
}

pub type SharedCompletion = Arc<RwLock<CompletionData>>;

/// How the console is set up.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Force plain mode even on a terminal.
    pub plain: bool,
    /// Where history is kept between runs (terminal mode only).
    pub history: Option<PathBuf>,
    pub completion: SharedCompletion,
}

/// Handle to the console; cheap to clone.
#[derive(Clone)]
pub struct Console {
    terminal: bool,
}

/// A progress bar; does nothing in plain mode.
pub struct Progress;

impl Progress {
    pub fn set(&self, _done: u64) {}
    pub fn finish(self) {}
}

impl Console {
    /// Starts reading input; events arrive on the returned channel.
    pub fn start(_opts: ConsoleOptions) -> (Console, mpsc::UnboundedReceiver<InputEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => {
                        if tx.send(InputEvent::Line(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(InputEvent::Eof);
        });
        (Console { terminal: false }, rx)
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Prints one line without disturbing what the user is typing.
    pub fn print(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// The previous command finished: the next line may be read.
    pub fn ready(&self) {}

    /// A progress bar for a download of `total` bytes.
    pub fn progress(&self, _label: &str, _total: u64) -> Progress {
        Progress
    }
}
