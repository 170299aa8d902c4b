//! Turning the client's state into lines: `list` (columns, `-l`, `--json`), `help`, and
//! the JSON line of `request --json`.
//! Pure functions; the texts themselves are in [`super::messages`].

use crate::identity::fingerprint;

use super::command::{COMMANDS, CommandHelp};
use super::flow::{DownloadDone, DownloadOutcome};
use super::messages;
use super::table::{ClientTable, Row};

/// The lines `list` prints for `rows` (already filtered), looking owners' keys up in
/// `table` for `long`.
pub fn list(table: &ClientTable, rows: &[Row], long: bool, json: bool) -> Vec<String> {
    if json {
        return vec![serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())];
    }
    if rows.is_empty() {
        return vec![messages::NO_FILES.to_string()];
    }
    if long {
        let mut out: Vec<[String; 8]> = vec![messages::LIST_LONG_HEADER.map(String::from)];
        out.extend(rows.iter().map(|r| {
            let key = table.owner(&r.owner).and_then(|o| o.key).map_or_else(
                || messages::NO_KEY.to_string(),
                |k| messages::key_cell(&fingerprint(&k), r.verified),
            );
            [
                name_cell(r),
                r.owner.clone(),
                r.ip.to_string(),
                r.tcp_port.to_string(),
                r.size.to_string(),
                r.hash.chars().take(16).collect(),
                r.reach.to_string(),
                key,
            ]
        }));
        format_columns(&out)
    } else {
        let mut out: Vec<[String; 4]> = vec![messages::LIST_HEADER.map(String::from)];
        out.extend(rows.iter().map(|r| {
            [
                name_cell(r),
                r.owner.clone(),
                r.ip.to_string(),
                r.tcp_port.to_string(),
            ]
        }));
        format_columns(&out)
    }
}

/// A row's FILENAME: a file's name, or a folder's with its file count and size.
fn name_cell(r: &Row) -> String {
    if r.file.ends_with('/') {
        messages::folder_cell(&r.file, r.files, r.size)
    } else {
        r.file.clone()
    }
}

/// `help`: every command with its summary, usages aligned.
pub fn help_all() -> Vec<String> {
    help_table(COMMANDS)
}

fn help_table(commands: &[CommandHelp]) -> Vec<String> {
    let width = commands.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    commands
        .iter()
        .map(|c| messages::help_line(c.usage, c.summary, width))
        .collect()
}

/// `help <name>`.
pub fn help_one(name: &str) -> Vec<String> {
    match super::command::help_for(name) {
        Some(c) => messages::help_detail(c.usage, c.summary, c.details).to_vec(),
        None => vec![messages::no_such_command(name)],
    }
}

/// The names completion offers as the first word.
pub fn command_names() -> Vec<String> {
    COMMANDS.iter().map(|c| c.name.to_string()).collect()
}

/// Aligns columns to their longest value, two spaces apart; the last column is not padded.
pub fn format_columns<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(
                        ' ',
                        widths[i] - cell.chars().count() + 2,
                    ));
                }
            }
            line
        })
        .collect()
}

/// The one line `request --json` prints for a finished download: an object with `file`,
/// `owner`, `result` (`downloaded`, `identical` or `failed`), `path` (`direct`, `reverse`,
/// `punched`, `relayed`; `null` when no connection was made), and for a download `size`,
/// `moved` (bytes that came over the network, not resumed), `seconds`,
/// `bytes_per_second`; for a file `blake3`; for a folder `files` and `into`; for a
/// failure `error`.
pub fn download_json(d: &DownloadDone) -> String {
    use serde_json::{Value, json};
    let mut v = json!({
        "file": d.file,
        "owner": d.owner,
        "path": d.via.map(|v| v.to_string()),
    });
    let mut stats = |size: u64, moved: u64, elapsed: std::time::Duration| {
        let secs = elapsed.as_secs_f64();
        v["result"] = "downloaded".into();
        v["size"] = size.into();
        v["moved"] = moved.into();
        v["seconds"] = json!((secs * 1e6).round() / 1e6);
        v["bytes_per_second"] = if secs > 0.0 {
            json!((moved as f64 / secs).round())
        } else {
            Value::Null
        };
    };
    match &d.outcome {
        DownloadOutcome::Done {
            size,
            hash,
            elapsed,
            moved,
        } => {
            stats(*size, *moved, *elapsed);
            v["blake3"] = hex::encode(hash).into();
        }
        DownloadOutcome::TreeDone {
            files,
            size,
            elapsed,
            moved,
            path,
        } => {
            stats(*size, *moved, *elapsed);
            v["files"] = (*files).into();
            v["into"] = path.display().to_string().into();
        }
        DownloadOutcome::AlreadyPresent { hash } => {
            v["result"] = "identical".into();
            v["blake3"] = hex::encode(hash).into();
        }
        DownloadOutcome::TreeAlreadyPresent => v["result"] = "identical".into(),
        DownloadOutcome::Failed(why) => {
            v["result"] = "failed".into();
            v["error"] = why.as_str().into();
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_longest_value() {
        let rows = vec![
            messages::LIST_HEADER.map(String::from),
            [
                "a-much-longer-name".into(),
                "B".into(),
                "127.0.0.1".into(),
                "1401".into(),
            ],
        ];
        let out = format_columns(&rows);
        assert_eq!(out[0], "FILENAME            OWNER  IP ADDRESS  TCP PORT");
        assert_eq!(out[1], "a-much-longer-name  B      127.0.0.1   1401");
    }

    #[test]
    fn list_long_marks_an_owner_whose_record_did_not_verify() {
        use crate::proto::Item;
        let mut t = ClientTable::default();
        let owner = Item::Owner {
            name: "B".into(),
            ip: "127.0.0.1".parse().unwrap(),
            tcp_port: 1401,
            online: true,
            key: Some([3; 32]),
        };
        let file = Item::File {
            owner: "B".into(),
            file: "f".into(),
            size: 1,
            hash: [0; 32],
            files: 0,
        };
        // No signature: not verified, and `list -l` says so next to the key.
        t.handle_part(0, 1, 0, 1, vec![owner, file]);
        let rows = t.rows();
        assert!(!rows[0].verified);
        let out = list(&t, &rows, true, false);
        assert!(out[1].ends_with("(record not verified)"), "{out:?}");
        let fp = fingerprint(&[3; 32]);
        assert_eq!(messages::key_cell(&fp, true), fp);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let rows = vec![
            ["é".to_string(), "x".into()],
            ["ab".to_string(), "y".into()],
        ];
        assert_eq!(format_columns(&rows), vec!["é   x", "ab  y"]);
    }

    #[test]
    fn empty_list_and_json() {
        let t = ClientTable::default();
        assert_eq!(list(&t, &[], false, false), vec![messages::NO_FILES]);
        assert_eq!(list(&t, &[], true, true), vec!["[]"]);
    }

    #[test]
    fn help_aligns_usages_and_knows_each_command() {
        let lines = help_all();
        assert_eq!(lines.len(), COMMANDS.len());
        let col = |l: &str, c: &CommandHelp| l.find(c.summary).unwrap();
        let first = col(&lines[0], &COMMANDS[0]);
        for (l, c) in lines.iter().zip(COMMANDS) {
            assert!(l.starts_with(&format!("  {}", c.usage)), "{l}");
            assert_eq!(col(l, c), first, "summaries start in one column: {l}");
            assert_eq!(help_one(c.name).len(), 2);
        }
        assert_eq!(help_one("nope"), vec![">>> [No such command: nope]"]);
    }
}
