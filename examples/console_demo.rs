//! A tiny driver for the console, to try it by hand and for `tests/console_tty.rs`:
//! prints the notice `>>> [Client table updated.]` every 300 ms from another thread and
//! echoes each line as `got: <line>`.
//!
//! Usage: `console_demo [--plain] [--history FILE] [--notice-ms N]`.
//! Commands: `bars` runs two fake downloads with progress bars; `quit` leaves.

use std::time::Duration;

use fileapp::console::{Console, ConsoleOptions, InputEvent};

fn main() {
    let mut opts = ConsoleOptions::default();
    let mut notice_ms = 300u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plain" => opts.plain = true,
            "--history" => opts.history = args.next().map(Into::into),
            "--notice-ms" => notice_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(300),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    {
        // Something to complete after `request`.
        let mut d = opts.completion.write().unwrap();
        d.table
            .insert("foo.txt".into(), vec!["B".into(), "C".into()]);
        d.dir = std::env::current_dir().ok();
    }
    let (console, mut rx) = Console::start(opts);

    if notice_ms > 0 {
        let c = console.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(notice_ms));
                c.print(">>> [Client table updated.]");
            }
        });
    }

    // No tokio runtime needed: the receiver has a blocking form.
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            InputEvent::Line(l) if l.trim() == "quit" => break,
            InputEvent::Line(l) if l.trim() == "bars" => {
                fake_downloads(&console);
                console.ready();
            }
            InputEvent::Line(l) => {
                console.print(&format!("got: {l}"));
                console.ready();
            }
            InputEvent::Interrupt => console.print("got: <interrupt>"),
            InputEvent::Eof => {
                console.print("got: <eof>");
                break;
            }
        }
    }
}

fn fake_downloads(console: &Console) {
    let total = 50 * 1024 * 1024;
    let handles: Vec<_> = ["first.iso", "second.iso"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let c = console.clone();
            std::thread::spawn(move || {
                let p = c.progress(name, total);
                let step = total / (40 + 20 * i as u64);
                let mut done = 0;
                while done < total {
                    std::thread::sleep(Duration::from_millis(50));
                    done = (done + step).min(total);
                    p.set(done);
                }
                p.finish();
                c.print(&format!("Downloaded {name}."));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
