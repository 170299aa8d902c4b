//! The client's command language: one line in, a [`Command`] or a usage message out.
//! Words are separated by white space; single or double quotes keep a name with spaces
//! together (`offer "my file.txt"`).

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `setdir <dir>`
    SetDir(String),
    /// `offer <file>...` (zero or more)
    Offer(Vec<String>),
    /// `list [-l] [--json] [pattern]`
    List {
        long: bool,
        json: bool,
        pattern: Option<String>,
    },
    /// `request [--force] [--json] <file> <owner> [<file> <owner>...]`: downloads all at
    /// once.
    Request {
        pairs: Vec<(String, String)>,
        force: bool,
        /// One JSON line per download instead of its human lines.
        json: bool,
    },
    /// `dereg [name]`
    Dereg(Option<String>),
    /// `reg`
    Reg,
    /// `help [command]`
    Help(Option<String>),
    /// `whoami`
    WhoAmI,
    /// `trust <name>`: accept the new key the table shows for a peer you knew.
    Trust(String),
    /// `quit` / `exit`
    Quit,
    /// An empty line.
    Nothing,
}

/// Why a line is not a command. The `Display` text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Invalid operation.")]
    Unknown,
    #[error("Usage: {0}")]
    Usage(&'static str),
    #[error("Unbalanced quote in command.")]
    Quote,
}

/// One entry of the command reference: used by the parser, `help` and completion.
pub struct CommandHelp {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub details: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "setdir",
        usage: "setdir <dir>",
        summary: "choose the folder whose files you offer",
        details: "The folder must exist. Offered names are looked up in it.\n  Example: setdir files",
    },
    CommandHelp {
        name: "offer",
        usage: "offer <file>...",
        summary: "offer files from the folder to everyone",
        details: "Each name must be a regular file or a folder directly inside the folder set\n  with setdir. A folder is offered as one entry, name/, with all its files.\n  Example: offer foo bar photos",
    },
    CommandHelp {
        name: "list",
        usage: "list [-l] [--json] [pattern]",
        summary: "show the files offered by online clients",
        details: "Reads the local copy of the table. A pattern may use * and ?.\n  -l adds size and a short hash of your own files; --json prints JSON.\n  Examples: list, list *.iso, list --json",
    },
    CommandHelp {
        name: "request",
        usage: "request [--force] [--json] <file> <owner> [<file> <owner>...]",
        summary: "download files directly from their owners",
        details: "Several pairs download at once, each verified by its BLAKE3 hash.\n  An interrupted download resumes when requested again. An existing file is\n  kept unless --force is given (an identical one counts as done).\n  name/ downloads a whole folder; name/path/in/it one file of it.\n  --json prints one JSON line per download (result, size, hash, time, path taken).\n  Examples: request foo B, request foo B bar C, request photos/ B",
    },
    CommandHelp {
        name: "dereg",
        usage: "dereg [<your name>]",
        summary: "go offline (your offers are kept for when you return)",
        details: "Stops serving files and tells the server you left. `reg` brings you back.\n  Example: dereg B",
    },
    CommandHelp {
        name: "reg",
        usage: "reg",
        summary: "come back online after dereg, with your offers",
        details: "Registers the same name again; your offers are restored for everyone.",
    },
    CommandHelp {
        name: "help",
        usage: "help [command]",
        summary: "list the commands, or explain one",
        details: "Example: help request",
    },
    CommandHelp {
        name: "whoami",
        usage: "whoami",
        summary: "show your name, status and key fingerprint",
        details: "Your name is bound to your key: only this key can register it again.\n  Peers check the fingerprint when they download from you.",
    },
    CommandHelp {
        name: "trust",
        usage: "trust <name>",
        summary: "accept a peer's new key after a key-change warning",
        details: "You remember every peer's key from the first time you saw it. When the table\n  binds a name you know to another key, downloads from it are refused until you\n  accept the new key (check its fingerprint with the peer first).\n  Example: trust B",
    },
    CommandHelp {
        name: "quit",
        usage: "quit",
        summary: "leave (also Ctrl-D; exit works too)",
        details: "Tells the server you left, best effort, and exits.",
    },
];

/// The reference entry of `name`.
pub fn help_for(name: &str) -> Option<&'static CommandHelp> {
    let name = if name == "exit" { "quit" } else { name };
    COMMANDS.iter().find(|c| c.name == name)
}

fn usage(name: &str) -> ParseError {
    ParseError::Usage(help_for(name).map_or("help", |c| c.usage))
}

/// Splits a line into words, honouring single and double quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(ParseError::Quote);
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses one input line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words = split_words(line)?;
    let Some((cmd, args)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    match cmd.as_str() {
        "setdir" => match args {
            [dir] => Ok(Command::SetDir(dir.clone())),
            _ => Err(usage("setdir")),
        },
        "offer" => Ok(Command::Offer(args.to_vec())),
        "list" | "ls" => {
            let (mut long, mut json, mut pattern) = (false, false, None);
            for a in args {
                match a.as_str() {
                    "-l" | "--long" => long = true,
                    "--json" => json = true,
                    p if !p.starts_with('-') && pattern.is_none() => pattern = Some(p.to_string()),
                    _ => return Err(usage("list")),
                }
            }
            Ok(Command::List {
                long,
                json,
                pattern,
            })
        }
        "request" | "get" => {
            let force = args.iter().any(|a| a == "--force" || a == "-f");
            let json = args.iter().any(|a| a == "--json");
            let rest: Vec<&String> = args
                .iter()
                .filter(|a| !matches!(a.as_str(), "--force" | "-f" | "--json"))
                .collect();
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(usage("request"));
            }
            let pairs = rest
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            Ok(Command::Request { pairs, force, json })
        }
        "dereg" => match args {
            [] => Ok(Command::Dereg(None)),
            [n] => Ok(Command::Dereg(Some(n.clone()))),
            _ => Err(usage("dereg")),
        },
        "reg" => match args {
            [] => Ok(Command::Reg),
            _ => Err(usage("reg")),
        },
        "help" | "?" => match args {
            [] => Ok(Command::Help(None)),
            [c] => Ok(Command::Help(Some(c.clone()))),
            _ => Err(usage("help")),
        },
        "quit" | "exit" => Ok(Command::Quit),
        "whoami" => match args {
            [] => Ok(Command::WhoAmI),
            _ => Err(usage("whoami")),
        },
        "trust" => match args {
            [n] => Ok(Command::Trust(n.clone())),
            _ => Err(usage("trust")),
        },
        _ => Err(ParseError::Unknown),
    }
}

/// Does `name` match a shell-style pattern with `*` and `?`?
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with backtracking on the last star: linear-ish, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_commands() {
        assert_eq!(parse("setdir files"), Ok(Command::SetDir("files".into())));
        assert_eq!(
            parse("offer foo bar"),
            Ok(Command::Offer(vec!["foo".into(), "bar".into()]))
        );
        assert_eq!(parse("offer"), Ok(Command::Offer(vec![])));
        assert_eq!(
            parse("list"),
            Ok(Command::List {
                long: false,
                json: false,
                pattern: None
            })
        );
        assert_eq!(
            parse("request foo B"),
            Ok(Command::Request {
                pairs: vec![("foo".into(), "B".into())],
                force: false,
                json: false
            })
        );
        assert_eq!(parse("dereg"), Ok(Command::Dereg(None)));
        assert_eq!(parse("dereg B"), Ok(Command::Dereg(Some("B".into()))));
        assert_eq!(parse("  "), Ok(Command::Nothing));
    }

    #[test]
    fn malformed_lines_give_usage() {
        assert_eq!(parse("setdir"), Err(ParseError::Usage("setdir <dir>")));
        assert_eq!(
            parse("setdir a b").unwrap_err().to_string(),
            "Usage: setdir <dir>"
        );
        assert!(matches!(parse("request foo"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("request"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("request a b c"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("dereg a b"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("list -x"), Err(ParseError::Usage(_))));
        assert_eq!(parse("frobnicate"), Err(ParseError::Unknown));
        assert_eq!(
            parse("frobnicate").unwrap_err().to_string(),
            "Invalid operation."
        );
        assert_eq!(parse("offer \"unterminated"), Err(ParseError::Quote));
    }

    #[test]
    fn quotes_and_many_pairs() {
        assert_eq!(
            parse("offer 'my file' \"x y\" z"),
            Ok(Command::Offer(vec![
                "my file".into(),
                "x y".into(),
                "z".into()
            ]))
        );
        assert_eq!(
            parse("request --force a B b C"),
            Ok(Command::Request {
                pairs: vec![("a".into(), "B".into()), ("b".into(), "C".into())],
                force: true,
                json: false
            })
        );
        assert_eq!(
            parse("request --json a B"),
            Ok(Command::Request {
                pairs: vec![("a".into(), "B".into())],
                force: false,
                json: true
            })
        );
        assert_eq!(
            parse("list -l *.iso"),
            Ok(Command::List {
                long: true,
                json: false,
                pattern: Some("*.iso".into())
            })
        );
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*.iso", "debian.iso"));
        assert!(!glob_match("*.iso", "debian.isox"));
        assert!(glob_match("f?o", "foo"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn every_command_has_help() {
        for c in COMMANDS {
            assert!(help_for(c.name).is_some());
            assert!(c.usage.starts_with(c.name));
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(line in ".{0,200}") {
            let _ = parse(&line);
        }

        #[test]
        fn glob_never_panics(p in "[a*?]{0,12}", n in "[ab]{0,12}") {
            let _ = glob_match(&p, &n);
        }
    }
}
