//! Tab completion, as a pure function of the line, the cursor and what the driver told us
//! ([`CompletionData`]), so it can be tested without a terminal. The rustyline glue
//! ([`ConsoleHelper`]) only adapts it.

use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::{CompletionData, ListingWant, SharedCompletion};

/// Completion candidates for `line` with the cursor at byte `pos`.
///
/// Returns the byte offset where the word being completed starts and the texts that may
/// replace `line[start..pos]`. Candidates that need it come quoted (`"my file"`), so that
/// the command parser reads them back as one word; folders end with `/`.
/// Never panics: a `pos` past the end or inside a character gives no candidates.
pub fn candidates(line: &str, pos: usize, data: &CompletionData) -> (usize, Vec<String>) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    candidates_in(line, pos, data, &cwd)
}

/// [`candidates`] with relative `setdir` paths resolved against `cwd` (tests pass their own
/// folder instead of changing the process-wide one).
pub fn candidates_in(
    line: &str,
    pos: usize,
    data: &CompletionData,
    cwd: &Path,
) -> (usize, Vec<String>) {
    if pos > line.len() || !line.is_char_boundary(pos) {
        return (pos.min(line.len()), Vec::new());
    }
    let cur = current_word(&line[..pos]);
    let (start, partial, before) = (cur.start, cur.partial.as_str(), &cur.before);
    let mut out = match before.split_first() {
        None => command_names(&data.commands, partial),
        Some((cmd, args)) => match cmd.as_str() {
            "help" | "?" if args.is_empty() => command_names(&data.commands, partial),
            "setdir" if args.is_empty() => folders(partial, cwd),
            "offer" => files_in(data.dir.as_deref(), partial, args),
            "request" | "get" => request_words(data, partial, args, &line[pos..]),
            _ => Vec::new(),
        },
    };
    out.sort();
    out.dedup();
    (start, out)
}

/// The word under the cursor: where it starts, its text without quotes, and the complete
/// words before it (unquoted).
struct Current {
    start: usize,
    partial: String,
    before: Vec<String>,
}

/// Splits the text left of the cursor like the command parser splits words,
/// but tolerates an open quote (the user is still typing the word).
fn current_word(left: &str) -> Current {
    let mut before = Vec::new();
    let mut cur = String::new();
    let mut start = left.len();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for (i, c) in left.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                quote = Some(c);
            }
            None if c.is_whitespace() => {
                if in_word {
                    before.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                cur.push(c);
            }
        }
    }
    if !in_word {
        // Cursor after white space (or at the very start): a new, empty word.
        start = left.len();
        cur.clear();
    }
    Current {
        start,
        partial: cur,
        before,
    }
}

/// Quotes `s` if the command parser would otherwise split it or eat its quotes.
fn quote(s: &str) -> String {
    let needs = s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'');
    if !needs {
        s.to_string()
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else if !s.contains('\'') {
        format!("'{s}'")
    } else {
        // Both kinds of quote: the parser has no escapes, so such a name cannot be typed
        // as one word; offer it as is rather than something that parses differently.
        s.to_string()
    }
}

fn command_names(commands: &[String], partial: &str) -> Vec<String> {
    commands
        .iter()
        .filter(|n| n.starts_with(partial))
        .cloned()
        .collect()
}

/// Regular files directly inside the `setdir` folder (what `offer` accepts), minus those
/// already on the line. Hidden files only when the user typed the leading dot.
fn files_in(dir: Option<&Path>, partial: &str, already: &[String]) -> Vec<String> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(partial) && (partial.starts_with('.') || !n.starts_with('.')))
        .filter(|n| !already.contains(n))
        .map(|n| quote(&n))
        .collect()
}

/// `request [--force] <file> <owner> [<file> <owner>...]`: a file name from the table at
/// even positions (or a path inside an offered folder, from its listing), then the
/// owners offering the file (or folder) just before. `right` is the line right of the
/// cursor, where the owner may already be typed.
fn request_words(
    data: &CompletionData,
    partial: &str,
    args: &[String],
    right: &str,
) -> Vec<String> {
    if partial.starts_with('-') {
        return ["--force"]
            .into_iter()
            .filter(|f| f.starts_with(partial) && !args.iter().any(|a| a == f || a == "-f"))
            .map(str::to_string)
            .collect();
    }
    let words: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--force" && *a != "-f")
        .collect();
    if words.len().is_multiple_of(2) {
        if let Some(inside) = folder_paths(data, partial, right) {
            return inside;
        }
        data.table
            .keys()
            .filter(|n| n.starts_with(partial))
            .map(|n| quote(n))
            .collect()
    } else {
        let file = words[words.len() - 1];
        let offered = match split_folder(file) {
            Some((folder, _)) => folder,
            None => file.as_str(),
        };
        data.table
            .get(offered)
            .into_iter()
            .flatten()
            .filter(|o| o.starts_with(partial))
            .map(|o| quote(o))
            .collect()
    }
}

/// The folder entry of the table a request word is inside, and the path after it:
/// `photos/2024/a` -> (`photos/`, `2024/a`).
fn split_folder(word: &str) -> Option<(&str, &str)> {
    let slash = word.find('/')?;
    let (folder, inner) = word.split_at(slash + 1);
    fileapp_core::tree::valid_folder_offer(folder).then_some((folder, inner))
}

/// The owner of `folder` a request means: the word typed after it (`right`: the rest of
/// the line after the cursor's word) if it offers the folder, else the single owner.
fn folder_owner<'a>(data: &'a CompletionData, folder: &str, right: &str) -> Option<&'a str> {
    let owners = data.table.get(folder)?;
    let after = right
        .trim_start_matches(|c: char| !c.is_whitespace())
        .split_whitespace()
        .next()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''));
    match after {
        Some(w) => owners.iter().find(|o| *o == w).map(String::as_str),
        None if owners.len() == 1 => owners.first().map(String::as_str),
        None => None,
    }
}

/// The folder, its owner and listed hash a request word is inside, if the table knows
/// them (the owner's record verified).
fn folder_of<'a>(
    data: &'a CompletionData,
    word: &'a str,
    right: &str,
) -> Option<(&'a str, &'a str, &'a str, [u8; 32])> {
    let (folder, inner) = split_folder(word)?;
    let owner = folder_owner(data, folder, right)?;
    let key = (owner.to_string(), folder.to_string());
    let hash = *data.folder_hashes.get(&key)?;
    Some((folder, inner, owner, hash))
}

/// Paths inside an offered folder, one level at a time (`photos/2024/`, then
/// `photos/2024/a.jpg`), from its cached listing; `None` when none is held for the
/// folder's current hash (then the table's names are offered, which is the folder
/// itself at most).
fn folder_paths(data: &CompletionData, partial: &str, right: &str) -> Option<Vec<String>> {
    let (folder, inner, owner, hash) = folder_of(data, partial, right)?;
    let listing = data
        .folders
        .get(&(owner.to_string(), folder.to_string()))
        .filter(|l| l.hash == hash)?;
    let head = inner.rfind('/').map_or("", |i| &inner[..=i]);
    let found = listing
        .paths
        .iter()
        .filter(|p| p.starts_with(inner))
        .filter(|p| {
            let rest = &p[head.len()..];
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            !rest.is_empty() && !rest.contains('/')
        })
        .map(|p| quote(&format!("{folder}{p}")))
        .collect();
    Some(found)
}

/// The listing completion of `line` at `pos` would use but does not hold for the
/// folder's current hash: a request's file word inside an offered folder whose owner is
/// known. The console hands it to [`CompletionData::wants`]; a later Tab uses it.
pub fn listing_wanted(line: &str, pos: usize, data: &CompletionData) -> Option<ListingWant> {
    if pos > line.len() || !line.is_char_boundary(pos) {
        return None;
    }
    let cur = current_word(&line[..pos]);
    let (cmd, args) = cur.before.split_first()?;
    if !matches!(cmd.as_str(), "request" | "get") {
        return None;
    }
    let words = args
        .iter()
        .filter(|a| *a != "--force" && *a != "-f")
        .count();
    if !words.is_multiple_of(2) {
        return None;
    }
    let (folder, _, owner, hash) = folder_of(data, &cur.partial, &line[pos..])?;
    let key = (owner.to_string(), folder.to_string());
    match data.folders.get(&key) {
        Some(l) if l.hash == hash => None,
        _ => Some(ListingWant {
            owner: key.0,
            folder: key.1,
            hash,
        }),
    }
}

/// Folders, like a shell completes `cd`: the typed path up to its last `/` is kept, the
/// rest is matched against the folders found there. `~/` means the home folder.
fn folders(partial: &str, cwd: &Path) -> Vec<String> {
    let (head, tail) = match partial.rfind('/') {
        Some(i) => (&partial[..=i], &partial[i + 1..]),
        None => ("", partial),
    };
    let base: PathBuf = if head.is_empty() {
        cwd.to_path_buf()
    } else if let Some(rest) = head.strip_prefix("~/") {
        match directories::BaseDirs::new() {
            Some(b) => b.home_dir().join(rest),
            None => return Vec::new(),
        }
    } else if Path::new(head).is_absolute() {
        PathBuf::from(head)
    } else {
        cwd.join(head)
    };
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    entries
        .flatten()
        // metadata() follows links, so a link to a folder counts as a folder, as in a shell.
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(tail) && (tail.starts_with('.') || !n.starts_with('.')))
        .map(|n| quote(&format!("{head}{n}/")))
        .collect()
}

/// The rustyline helper: completion only (no hints, colours or multi-line validation).
pub(crate) struct ConsoleHelper {
    pub(crate) data: SharedCompletion,
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        // A poisoned lock only means a writer panicked; the data is still worth using.
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let (start, found) = candidates(line, pos, &data);
        // Never waits: the listing is fetched in the background for a later Tab.
        if let Some(want) = listing_wanted(line, pos, &data)
            && let Some(tx) = &data.wants
        {
            let _ = tx.send(want);
        }
        let single = found.len() == 1;
        let pairs = found
            .into_iter()
            .map(|c| {
                // A unique, finished word gets a space after it, as in a shell; a folder
                // does not, so the next Tab can go on into it.
                let done = single && !c.ends_with('/') && !c.ends_with("/\"");
                let replacement = if done { format!("{c} ") } else { c.clone() };
                Pair {
                    display: c,
                    replacement,
                }
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {}

impl Validator for ConsoleHelper {}

impl Helper for ConsoleHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_word_handles_quotes_and_spaces() {
        let c = current_word("offer \"my fi");
        assert_eq!((c.start, c.partial.as_str()), (6, "my fi"));
        assert_eq!(c.before, vec!["offer".to_string()]);
        let c = current_word("offer a ");
        assert_eq!((c.start, c.partial.as_str()), (8, ""));
        assert_eq!(c.before, vec!["offer".to_string(), "a".to_string()]);
        let c = current_word("");
        assert_eq!((c.start, c.partial.as_str()), (0, ""));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a"), "a");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("a\"b"), "'a\"b'");
    }

    #[test]
    fn bad_positions_do_not_panic() {
        let d = CompletionData::default();
        assert_eq!(candidates("hé", 2, &d).1, Vec::<String>::new());
        assert_eq!(candidates("he", 99, &d).1, Vec::<String>::new());
    }
}
