//! Reading SQLite's own SQL text (`sqlite_schema.sql`): a tokenizer that skips strings,
//! quoted names and comments, a table's column definitions and constraints, an index's WHERE.

use crate::connect::sql::json_valid_columns;

pub(super) fn action(a: &str) -> Option<String> {
    let a = a.trim().to_ascii_uppercase();
    (!a.is_empty() && a != "NO ACTION").then_some(a)
}

/// The bytes of some SQL text that are outside string literals, quoted names and comments, each
/// with its index and the parenthesis depth it stands at (a `)` is at the depth of its `(`).
struct SqlBytes<'a> {
    b: &'a [u8],
    i: usize,
    depth: i32,
}

fn sql_bytes(sql: &str) -> SqlBytes<'_> {
    SqlBytes {
        b: sql.as_bytes(),
        i: 0,
        depth: 0,
    }
}

impl Iterator for SqlBytes<'_> {
    type Item = (usize, u8, i32);

    fn next(&mut self) -> Option<(usize, u8, i32)> {
        let b = self.b;
        while self.i < b.len() {
            let (i, c) = (self.i, b[self.i]);
            // Where the quoted or commented span ends (exclusive), if one starts here.
            let skip_to = match c {
                b'\'' | b'"' | b'`' => {
                    let mut j = i + 1;
                    // A doubled quote is the quote character itself.
                    while j < b.len() && (b[j] != c || b.get(j + 1) == Some(&c)) {
                        j += if b[j] == c { 2 } else { 1 };
                    }
                    Some(j + 1)
                }
                b'[' => Some(b[i..].iter().position(|&x| x == b']').map_or(b.len(), |p| i + p + 1)),
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    Some(b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1))
                }
                b'/' if b.get(i + 1) == Some(&b'*') => Some(
                    b[i + 2..]
                        .windows(2)
                        .position(|w| w == b"*/")
                        .map_or(b.len(), |p| i + 2 + p + 2),
                ),
                _ => None,
            };
            if let Some(j) = skip_to {
                self.i = j.min(b.len());
                continue;
            }
            self.i += 1;
            let depth = match c {
                b'(' => {
                    self.depth += 1;
                    self.depth - 1
                }
                b')' => {
                    self.depth -= 1;
                    self.depth
                }
                _ => self.depth,
            };
            return Some((i, c, depth));
        }
        None
    }
}

/// Positions in `s` where the keyword `kw` (upper case) stands as a word, outside strings and
/// parentheses.
fn keyword_at(s: &str, kw: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    sql_bytes(s)
        .filter(|&(i, c, depth)| {
            depth == 0
                && c.eq_ignore_ascii_case(&kw.as_bytes()[0])
                && b.get(i..i + kw.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
                && (i == 0 || !word(&b[i - 1]))
                && b.get(i + kw.len()).is_none_or(|c| !word(c))
        })
        .map(|(i, _, _)| i)
        .collect()
}

/// The balanced parenthesised text starting at the first `(` of `s`, without the parentheses.
fn parenthesised(s: &str) -> Option<&str> {
    let mut open = None;
    for (i, c, depth) in sql_bytes(s) {
        match (c, depth, open) {
            (b'(', 0, None) => open = Some(i),
            (b')', 0, Some(o)) => return Some(s[o + 1..i].trim()),
            _ => {}
        }
    }
    None
}

/// The condition of a partial index, from its statement: the text after the last top-level WHERE.
pub(super) fn partial_condition(sql: &str) -> Option<String> {
    keyword_at(sql, "WHERE")
        .last()
        .map(|&i| sql[i + "WHERE".len()..].trim().to_owned())
}

/// What a `CREATE TABLE` statement says that the PRAGMAs do not: CHECK constraints, AUTOINCREMENT,
/// and each column's collation.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TableSqlParts {
    pub checks: Vec<String>,
    pub autoincrement: bool,
    pub collations: Vec<(String, String)>,
}

impl TableSqlParts {
    /// Whether a CHECK keeps `column` valid JSON (`json_valid("prefs")`, as Django writes for a
    /// JSONField): its values are JSON documents.
    pub(crate) fn json_checked(&self, column: &str) -> bool {
        self.checks
            .iter()
            .any(|check| json_valid_columns(check).iter().any(|n| n.eq_ignore_ascii_case(column)))
    }
}

/// The column definitions and table constraints of a `CREATE TABLE` (its top-level list).
fn column_list_pieces(sql: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = None;
    for (i, c, depth) in sql_bytes(sql) {
        match (c, depth, start) {
            (b'(', 0, None) => start = Some(i + 1),
            (b',', 1, Some(s)) => {
                pieces.push(&sql[s..i]);
                start = Some(i + 1);
            }
            (b')', 0, Some(s)) => {
                pieces.push(&sql[s..i]);
                break;
            }
            _ => {}
        }
    }
    pieces
}

/// The word at the start of `s` (an identifier, possibly quoted, after any comments), unquoted,
/// and the rest.
fn first_word(s: &str) -> (String, &str) {
    let mut s = s.trim_start();
    while let Some(rest) = s.strip_prefix("--").or_else(|| s.strip_prefix("/*")) {
        let end = if s.starts_with("--") {
            rest.find('\n').map(|p| p + 1)
        } else {
            rest.find("*/").map(|p| p + 2)
        };
        s = rest[end.unwrap_or(rest.len())..].trim_start();
    }
    if s.starts_with(['"', '`', '[']) {
        return quoted_word(s);
    }
    let end = s
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
        .unwrap_or(s.len());
    (s[..end].to_owned(), &s[end..])
}

/// A quoted identifier at the start of `s` ("x", `x`, [x]), unquoted, and the rest.
fn quoted_word(s: &str) -> (String, &str) {
    let (open, close) = match s.as_bytes().first() {
        Some(b'"') => ('"', '"'),
        Some(b'`') => ('`', '`'),
        Some(b'[') => ('[', ']'),
        _ => return (String::new(), s),
    };
    let body = &s[open.len_utf8()..];
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        if ch == close {
            if close != ']' && chars.peek().map(|(_, n)| *n) == Some(close) {
                out.push(close);
                chars.next();
                continue;
            }
            return (out, &body[i + 1..]);
        }
        out.push(ch);
    }
    (out, "")
}

/// The CHECK constraints, AUTOINCREMENT and collations of a `CREATE TABLE` statement.
pub(crate) fn table_sql_parts(sql: &str) -> TableSqlParts {
    let mut parts = TableSqlParts::default();
    for piece in column_list_pieces(sql) {
        let (word, rest) = first_word(piece);
        let table_constraint = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"]
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k));
        for at in keyword_at(piece, "CHECK") {
            if let Some(expr) = parenthesised(&piece[at..]) {
                parts.checks.push(expr.to_owned());
            }
        }
        if table_constraint {
            continue;
        }
        if !keyword_at(rest, "AUTOINCREMENT").is_empty() {
            parts.autoincrement = true;
        }
        if let Some(&at) = keyword_at(rest, "COLLATE").first() {
            let (coll, _) = first_word(&rest[at + "COLLATE".len()..]);
            if !coll.is_empty() && !coll.eq_ignore_ascii_case("BINARY") {
                parts.collations.push((word.clone(), coll));
            }
        }
    }
    parts
}
