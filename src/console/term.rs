//! Terminal mode: a rustyline editor on its own thread, one output thread that owns every
//! write to the terminal, and indicatif bars while downloads run.
//!
//! Why an output thread: rustyline's `ExternalPrinter` may block (its queue holds one
//! message, drained only while `readline` runs). If a notice lands in the instant between
//! Enter and the end of `readline`, a second one would block until the *next* prompt, and
//! a driver that prints before calling `ready` would deadlock. So callers hand lines to the
//! output thread and wait for it only briefly ([`PRINT_WAIT`]); order is kept either way.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::termios::{self, OptionalActions, Termios};
use rustyline::config::Config;
use rustyline::error::{ReadlineError, Signal};
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Editor, ExternalPrinter};
use tokio::sync::mpsc;

use super::complete::ConsoleHelper;
use super::{InputEvent, SharedCompletion};

/// How long `print` waits for its line to reach the terminal. Normally it takes
/// microseconds; the wait only runs out in the rare case described in the module docs,
/// and then the line still comes out, in order, with the next prompt.
const PRINT_WAIT: Duration = Duration::from_millis(250);

/// Who may touch the terminal right now.
struct State {
    /// `ready()` was called since the last line was read.
    permit: bool,
    /// `readline` is (about to be) running: output must go through the external printer.
    reading: bool,
    /// Present while at least one bar exists.
    bars: Option<MultiProgress>,
    active: usize,
}

struct Sync {
    state: Mutex<State>,
    permit_cv: Condvar,
}

impl Sync {
    /// A poisoned lock only means some thread panicked while holding it; the flags are
    /// still meaningful and the console must keep working.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct OutMsg {
    line: String,
    done: std_mpsc::SyncSender<()>,
}

pub(crate) struct Term {
    sync: Arc<Sync>,
    out: std_mpsc::Sender<OutMsg>,
    colour: bool,
}

impl Term {
    pub(crate) fn start(
        prompt: String,
        history: Option<PathBuf>,
        completion: SharedCompletion,
        tx: mpsc::UnboundedSender<InputEvent>,
    ) -> rustyline::Result<Arc<Term>> {
        let config = Config::builder()
            .max_history_size(1000)?
            .history_ignore_dups(true)?
            // A line starting with a space stays out of history, as in bash.
            .history_ignore_space(true)
            // bash-like: complete the common prefix, list the choices on the second Tab.
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<ConsoleHelper, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(ConsoleHelper { data: completion }));
        if let Some(h) = &history {
            // A missing or unreadable history file just means an empty history.
            let _ = editor.load_history(h);
            if let Some(parent) = h.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
        }
        // Without an external printer (unsupported terminal) lines are written directly;
        // they may then disturb the typed line, but nothing is lost.
        let printer = editor.create_external_printer().ok();
        install_exit_restore();

        let sync = Arc::new(Sync {
            state: Mutex::new(State {
                // The first prompt needs no `ready`: nothing has run yet.
                permit: true,
                reading: false,
                bars: None,
                active: 0,
            }),
            permit_cv: Condvar::new(),
        });
        let (out_tx, out_rx) = std_mpsc::channel();
        let s = sync.clone();
        std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || output_loop(s, out_rx, printer))
            .map_err(ReadlineError::Io)?;
        let s = sync.clone();
        std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || read_loop(editor, prompt, s, tx, history))
            .map_err(ReadlineError::Io)?;
        Ok(Arc::new(Term {
            sync,
            out: out_tx,
            colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }))
    }

    pub(crate) fn print(&self, line: &str) {
        let (done, wait) = std_mpsc::sync_channel(1);
        let msg = OutMsg {
            line: line.to_string(),
            done,
        };
        match self.out.send(msg) {
            Ok(()) => {
                let _ = wait.recv_timeout(PRINT_WAIT);
            }
            // The output thread is gone (it cannot normally end): write it ourselves.
            Err(e) => write_direct(&e.0.line),
        }
    }

    pub(crate) fn ready(&self) {
        self.sync.lock().permit = true;
        self.sync.permit_cv.notify_all();
    }

    pub(crate) fn progress(&self, label: &str, total: u64, counting: bool) -> Option<Bar> {
        let mut st = self.sync.lock();
        // Bars and the prompt must never draw over each other; a download started while
        // the prompt is up (not expected from the driver) simply gets no bar.
        if st.reading {
            return None;
        }
        let template = match (self.colour, counting) {
            (true, false) => {
                "{msg:24!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            (false, false) => {
                "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            (true, true) => "{msg:24!} [{bar:30.cyan/blue}] {pos}/{len} files {per_sec} ETA {eta}",
            (false, true) => "{msg:24!} [{bar:30}] {pos}/{len} files {per_sec} ETA {eta}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mp = st
            .bars
            .get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        let pb = mp.add(
            ProgressBar::new(total)
                .with_style(style)
                .with_message(label.to_string()),
        );
        st.active += 1;
        Some(Bar {
            pb,
            sync: self.sync.clone(),
        })
    }
}

/// One download's bar; removed from the screen when dropped.
pub(crate) struct Bar {
    pb: ProgressBar,
    sync: Arc<Sync>,
}

impl Bar {
    pub(crate) fn set(&self, done: u64) {
        self.pb.set_position(done);
    }

    pub(crate) fn set_label(&self, label: &str) {
        self.pb.set_message(label.to_string());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
        let mut st = self.sync.lock();
        if let Some(mp) = &st.bars {
            mp.remove(&self.pb);
        }
        st.active = st.active.saturating_sub(1);
        if st.active == 0 {
            // No bars left: later output goes straight to the terminal again.
            st.bars = None;
        }
    }
}

fn write_direct(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Owns every write to the terminal, so lines come out whole and in order.
fn output_loop<P: ExternalPrinter>(
    sync: Arc<Sync>,
    rx: std_mpsc::Receiver<OutMsg>,
    mut printer: Option<P>,
) {
    for msg in rx {
        let via_printer = {
            let st = sync.lock();
            if st.reading && printer.is_some() {
                true
            } else {
                // Holding the lock keeps `readline` from starting mid-write.
                match &st.bars {
                    Some(mp) => {
                        if mp.println(&msg.line).is_err() {
                            write_direct(&msg.line);
                        }
                    }
                    None => write_direct(&msg.line),
                }
                false
            }
        };
        if via_printer && let Some(p) = printer.as_mut() {
            // Not under the lock: this may block (see the module docs), and the input
            // thread needs the lock to get on with the next prompt.
            if p.print(format!("{}\n", msg.line)).is_err() {
                write_direct(&msg.line);
            }
        }
        let _ = msg.done.try_send(());
    }
}

fn read_loop(
    mut editor: Editor<ConsoleHelper, FileHistory>,
    prompt: String,
    sync: Arc<Sync>,
    tx: mpsc::UnboundedSender<InputEvent>,
    history: Option<PathBuf>,
) {
    let mut errors = 0u32;
    loop {
        {
            let mut st = sync.lock();
            while !st.permit {
                st = sync.permit_cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.permit = false;
            st.reading = true;
            READING.store(true, Ordering::SeqCst);
            if let Some(mp) = &st.bars {
                mp.set_draw_target(ProgressDrawTarget::hidden());
            }
        }
        let res = editor.readline(&prompt);
        {
            let mut st = sync.lock();
            st.reading = false;
            READING.store(false, Ordering::SeqCst);
            // A `ready` that came while the prompt was up belongs to an earlier command;
            // the line just read needs its own.
            st.permit = false;
            if let Some(mp) = &st.bars {
                mp.set_draw_target(ProgressDrawTarget::stdout());
            }
        }
        let event = match res {
            Ok(line) => {
                errors = 0;
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    // Saved after every line, so history survives however the process
                    // ends; a failure (read-only home, ...) is not worth bothering anyone.
                    if let Some(h) = &history {
                        let _ = editor.save_history(h);
                    }
                }
                InputEvent::Line(line)
            }
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Signal(Signal::Interrupt)) => {
                errors = 0;
                sync.lock().permit = true;
                InputEvent::Interrupt
            }
            Err(ReadlineError::Eof) => {
                let _ = tx.send(InputEvent::Eof);
                return;
            }
            Err(ReadlineError::Signal(_)) => {
                // A resize interrupted the read: just prompt again.
                sync.lock().permit = true;
                continue;
            }
            Err(e) => {
                // A broken terminal would fail forever; give up after a few tries.
                errors += 1;
                if errors >= 5 {
                    tracing::debug!("terminal input failed: {e}");
                    let _ = tx.send(InputEvent::Eof);
                    return;
                }
                sync.lock().permit = true;
                continue;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Set while the prompt is up, for the exit hook.
static READING: AtomicBool = AtomicBool::new(false);
static SAVED_TERMIOS: OnceLock<Termios> = OnceLock::new();

/// If the process exits while `readline` holds the terminal in raw mode (the driver quits
/// on Ctrl-C, say), the user's shell would be left without echo. `atexit` runs on
/// `process::exit` and on return from `main`, so the terminal settings saved here are put
/// back then.
fn install_exit_restore() {
    extern "C" fn restore() {
        if let Some(t) = SAVED_TERMIOS.get() {
            let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, t);
        }
        if READING.load(Ordering::SeqCst) {
            // End the prompt's line so the shell's prompt starts on its own. A raw write:
            // another thread may hold the stdout lock forever at this point.
            let _ = rustix::io::write(std::io::stdout(), b"\r\n");
        }
    }
    if SAVED_TERMIOS.get().is_some() {
        return;
    }
    let Ok(t) = termios::tcgetattr(std::io::stdin()) else {
        return;
    };
    if SAVED_TERMIOS.set(t).is_ok() && !crate::sys::at_exit(restore) {
        tracing::warn!("cannot register the exit hook; the terminal may stay raw on exit");
    }
}
