//! The lines a stage writes besides the stream: for people and scripts to read, never read back
//! by another stage. Each is one compact JSON object per line, and its fields are these types'
//! (`tests/protocol.rs` parses every one strictly, refusing unknown fields).
//!
//! | line | written by | where |
//! |---|---|---|
//! | `FINDING` | `ferry-validate` | stdout, one per difference (up to `--max-listed` per stream and kind) |
//! | `SUMMARY` | `ferry-validate` | stdout, last line: the verdict |
//! | `PLAN` | `ferry-import --dry-run`, `ferry rollback` | stdout, one per action, then (files) a `summary` |
//! | reject | `ferry-import` | the reject file (`rejects-RUN.ndjson` beside the state file, or `--rejects`) |
//! | audit | `ferry rollback --confirm` | `.ferry/audit.ndjson`, written and synced before each action |
//! | request audit | `ferry serve` | `.ferry/serve-audit.ndjson`, one per request that changes data, synced before it is acted on |
//!
//! The results of a files import (`--results`) are a stream of their own, `uploads`: RECORDs
//! whose columns are `import::files::UPLOAD_COLUMNS`.
//!
//! ```text
//! {"type":"FINDING","stream":"main.users","kind":"changed","severity":"fail","key":{"id":3},"column":"email"}
//! {"type":"SUMMARY","status":"pass","source":"sqlite:app.db","target":"sqlite:copy.db","streams":7,"rows_source":680,"rows_target":680,"findings":{},"unverified":[]}
//! {"type":"PLAN","action":"load","stream":"main.users","table":"users","rows":10,"already_imported":0,"insert":10,"skip":0,"overwrite":0,"conflict":0,"reject":0}
//! {"type":"PLAN","action":"delete","target":"sqlite:copy.db","stream":"main.users","table":"users","key":{"id":1}}
//! {"stream":"main.users","line":12,"key":{"id":7},"reason":"NOT NULL constraint failed: users.email","record":{"id":7,"email":null},"run_id":"0193...","at":"2026-12-07T09:00:00Z"}
//! {"at":"2026-12-07T09:00:00Z","action":"delete","run":"0193...","target":"sqlite:copy.db","table":"users","key":{"id":1}}
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

/// What a FINDING is about. The names are the wire's; declared in their alphabetical order, so
/// counts by kind list the same way everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The row (or file) differs.
    Changed,
    /// The counter that numbers a table's new rows (a sequence, SQLite's AUTOINCREMENT) is behind
    /// the target's own rows or behind the numbers the source handed out: the application's next
    /// insert would collide, or be given a number again.
    CounterBehind,
    /// The same, where the target has no counter to move (an SQLite table without AUTOINCREMENT
    /// numbers the next row after its largest rowid).
    CounterNotKept,
    /// A column only the target has.
    ColumnExtra,
    /// A column the target lacks.
    ColumnMissing,
    /// A column of numbers that one side (SQLite) holds as text: its values are equal, but
    /// there they compare and sort as text (`WHERE total > 5`, `ORDER BY total` answer otherwise).
    ComparedAsText,
    /// A key held by more than one row.
    Duplicate,
    /// A row (or file) only the target has.
    Extra,
    /// Rows whose foreign key finds no parent in the target.
    FkOrphans,
    /// The same, already so in the source (not ferry's doing).
    FkOrphansInSource,
    /// A RECORD the stream side could not read.
    InvalidRecord,
    /// A stream the stream side could not read (no SCHEMA, a second one...).
    InvalidStream,
    /// A key column holding NULL in the target.
    KeyNull,
    /// The same, already so in the source.
    KeyNullInSource,
    /// A row (or file) the target lacks.
    Missing,
    /// A STREAM_END whose counts or digest disagree with the rows before it.
    StreamEndMismatch,
    /// A stream that ended without its STREAM_END.
    StreamIncomplete,
    /// A table the target lacks.
    TableMissing,
    /// A unique constraint the target's rows break.
    UniqueViolation,
    /// The same, already so in the source.
    UniqueViolationInSource,
    /// Something that could not be compared (a producer's error, a column of no comparable form).
    Unverified,
}

impl FindingKind {
    /// Every kind, in order.
    pub const ALL: [FindingKind; 21] = [
        FindingKind::Changed,
        FindingKind::CounterBehind,
        FindingKind::CounterNotKept,
        FindingKind::ColumnExtra,
        FindingKind::ColumnMissing,
        FindingKind::ComparedAsText,
        FindingKind::Duplicate,
        FindingKind::Extra,
        FindingKind::FkOrphans,
        FindingKind::FkOrphansInSource,
        FindingKind::InvalidRecord,
        FindingKind::InvalidStream,
        FindingKind::KeyNull,
        FindingKind::KeyNullInSource,
        FindingKind::Missing,
        FindingKind::StreamEndMismatch,
        FindingKind::StreamIncomplete,
        FindingKind::TableMissing,
        FindingKind::UniqueViolation,
        FindingKind::UniqueViolationInSource,
        FindingKind::Unverified,
    ];

    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Changed => "changed",
            FindingKind::CounterBehind => "counter_behind",
            FindingKind::CounterNotKept => "counter_not_kept",
            FindingKind::ColumnExtra => "column_extra",
            FindingKind::ColumnMissing => "column_missing",
            FindingKind::ComparedAsText => "compared_as_text",
            FindingKind::Duplicate => "duplicate",
            FindingKind::Extra => "extra",
            FindingKind::FkOrphans => "fk_orphans",
            FindingKind::FkOrphansInSource => "fk_orphans_in_source",
            FindingKind::InvalidRecord => "invalid_record",
            FindingKind::InvalidStream => "invalid_stream",
            FindingKind::KeyNull => "key_null",
            FindingKind::KeyNullInSource => "key_null_in_source",
            FindingKind::Missing => "missing",
            FindingKind::StreamEndMismatch => "stream_end_mismatch",
            FindingKind::StreamIncomplete => "stream_incomplete",
            FindingKind::TableMissing => "table_missing",
            FindingKind::UniqueViolation => "unique_violation",
            FindingKind::UniqueViolationInSource => "unique_violation_in_source",
            FindingKind::Unverified => "unverified",
        }
    }

    /// Reported, but not failing a validation by itself: the target has more than asked, or the
    /// source already broke the rule.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            FindingKind::ColumnExtra
                | FindingKind::ComparedAsText
                | FindingKind::CounterNotKept
                | FindingKind::FkOrphansInSource
                | FindingKind::UniqueViolationInSource
                | FindingKind::KeyNullInSource
        )
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a finding fails the validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Fail,
    Warning,
}

/// `{"type":"FINDING","stream":..,"kind":..,"severity":..,...}`: one difference, with what
/// locates it (`key`, `column`, `source`/`target` values, `line`, `path`...) in `detail`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "FINDING")]
pub struct Finding {
    pub stream: String,
    pub kind: FindingKind,
    pub severity: Severity,
    #[serde(flatten)]
    pub detail: Map<String, Json>,
}

/// A validation's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    #[default]
    Fail,
    /// Nothing differs, but something could not be compared (and `--allow-unverified` was not
    /// given).
    Unverified,
    /// The validation itself failed (`message` says why): nothing is proved.
    Error,
}

/// The last line of `ferry-validate`: the verdict and what it rests on. Tables count rows,
/// files count files; a validation that failed carries only its `message`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "type", rename = "SUMMARY")]
pub struct Summary {
    pub status: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_source: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_target: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_source: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_target: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<BTreeMap<FindingKind, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<Vec<String>>,
    /// Objects whose SHA-256 came from their metadata, their bytes not read (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_metadata: Option<u64>,
}

impl Summary {
    /// The SUMMARY of a validation that could not be carried out.
    pub fn error(message: String) -> Summary {
        Summary {
            status: Verdict::Error,
            message: Some(message),
            ..Default::default()
        }
    }
}

/// What a PLAN (or audit) line says is, or would be, done. A plan shown before acting uses the
/// first form (`delete`), one carried out the second (`deleted`): [`Action::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    // ferry-import --dry-run, into tables.
    CreateTable,
    CreateIndex,
    Load,
    // ferry-import --dry-run, files; `summary` closes the plan.
    Upload,
    Present,
    Overwrite,
    Conflict,
    Summary,
    // ferry rollback.
    Delete,
    Deleted,
    Restore,
    Restored,
    DropTable,
    Dropped,
    EmptyTable,
    Emptied,
    Abort,
    Aborted,
    /// Left as it is, with `why`.
    Keep,
    /// Nothing left to do: already undone, or not there (`why`).
    Done,
    /// Not done, and nothing is while it stands (`why`); `--force` overrides where it can.
    Refuse,
    /// The run left nothing of its own to undo.
    Nothing,
    /// Rows written without a journal into a table that existed: they stay.
    CannotUndo,
    /// A multipart upload begun without its id being recorded: it cannot be aborted by ferry.
    UnknownUpload,
    // The audit log only.
    #[serde(rename = "abort-multipart")]
    AbortMultipart,
    /// The actions written ahead for a run did not happen (`why`).
    Failed,
}

impl Action {
    /// The action as a plan carried out reports it.
    pub fn done(self) -> Action {
        match self {
            Action::Delete => Action::Deleted,
            Action::Restore => Action::Restored,
            Action::DropTable => Action::Dropped,
            Action::EmptyTable => Action::Emptied,
            Action::Abort => Action::Aborted,
            other => other,
        }
    }

    /// The action as a plan shows it: carried out (`act`) or not.
    pub fn shown(self, act: bool) -> Action {
        if act { self.done() } else { self }
    }
}

/// A PLAN line: an action and what it is done to. Only the fields an action has are written.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "PLAN")]
pub struct Plan {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The run a rollback line is about, when it names no store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A row's key (an object of its columns), or an object's key (a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A file's status in the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The statement a `create_table` or `create_index` would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Rows a stream brings (`load`) or a table holds (`drop_table`, `empty_table`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadCounts>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Plan {
    pub fn new(action: Action) -> Plan {
        Plan {
            action,
            target: None,
            run: None,
            stream: None,
            table: None,
            key: None,
            path: None,
            size: None,
            status: None,
            upload_id: None,
            sql: None,
            rows: None,
            load: None,
            files: None,
            why: None,
        }
    }

    /// An action on a stream's table in `target`.
    pub fn on_table(action: Action, target: &str, stream: &str, table: &str) -> Plan {
        let mut p = Plan::new(action);
        p.target = Some(target.to_owned());
        p.stream = Some(stream.to_owned());
        p.table = Some(table.to_owned());
        p
    }
}

/// What a dry run would do with a stream's rows (`load`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadCounts {
    pub already_imported: u64,
    pub insert: u64,
    pub skip: u64,
    pub overwrite: u64,
    pub conflict: u64,
    pub reject: u64,
    /// A change stream's deletes.
    #[serde(skip_serializing_if = "is_zero")]
    pub delete: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a dry run would do with the files (`summary`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FileCounts {
    pub upload: u64,
    pub present: u64,
    pub overwrite: u64,
    pub conflict: u64,
    pub bytes_to_send: u64,
}

/// A row the target refused, in the reject file: where it was in the input, its key, the
/// target's reason and the row itself, so it can be put right and loaded again.
#[derive(Debug, Clone, Serialize)]
pub struct RowReject<'a> {
    pub stream: &'a str,
    pub line: u64,
    pub key: &'a Json,
    pub reason: &'a str,
    pub record: &'a Json,
    pub run_id: &'a str,
    pub at: String,
}

/// A file that was not put, in the reject file: its path (as `key`, the stream's key), the
/// object's key, its status in the manifest and why.
#[derive(Debug, Clone, Serialize)]
pub struct FileReject<'a> {
    pub line: u64,
    pub stream: &'a str,
    pub key: FileKey,
    pub object_key: String,
    pub status: &'static str,
    pub reason: Option<&'a str>,
}

/// A file's key in its stream: its path.
#[derive(Debug, Clone, Serialize)]
pub struct FileKey {
    pub path: String,
}

/// A line of `ferry serve`'s audit log: who asked for what, written before it is done.
#[derive(Debug, Clone, Serialize)]
pub struct RequestAudit {
    pub at: String,
    /// The token's name (never the token).
    pub caller: String,
    /// What was asked: `export`, ...
    pub action: String,
    /// The run or export it started.
    pub run: String,
    /// The store it reads or writes, by its name in the server's config.
    pub store: String,
    /// The request's body, as understood.
    pub request: Json,
}

/// A line of the audit log: an action of a rollback, written and synced before it is carried
/// out (and a `failed` line after, when it was not).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: String,
    pub action: Action,
    pub run: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(action: Action, run: &str, target: &str) -> AuditEntry {
        AuditEntry {
            at: super::now_rfc3339(),
            action,
            run: run.to_owned(),
            target: target.to_owned(),
            table: None,
            key: None,
            size: None,
            sha256: None,
            upload_id: None,
            why: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_tagged_first_and_leave_out_what_they_lack() {
        let f = Finding {
            stream: "s".into(),
            kind: FindingKind::FkOrphansInSource,
            severity: Severity::Warning,
            detail: [("key".to_owned(), json!({"id": 1}))].into_iter().collect(),
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"FINDING","stream":"s","kind":"fk_orphans_in_source","severity":"warning","key":{"id":1}}"#
        );
        assert_eq!(
            serde_json::to_string(&Summary::error("no".into())).unwrap(),
            r#"{"type":"SUMMARY","status":"error","message":"no"}"#
        );
        let mut p = Plan::new(Action::DropTable.shown(true));
        p.table = Some("t".into());
        p.rows = Some(3);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"type":"PLAN","action":"dropped","table":"t","rows":3}"#
        );
        let mut load = Plan::new(Action::Load);
        load.load = Some(LoadCounts {
            insert: 2,
            ..Default::default()
        });
        let text = serde_json::to_string(&load).unwrap();
        assert!(text.contains(r#""already_imported":0,"insert":2,"#), "{text}");
        let a = AuditEntry::now(Action::AbortMultipart, "r", "s3://b");
        assert!(
            serde_json::to_string(&a)
                .unwrap()
                .contains(r#""action":"abort-multipart""#)
        );
    }

    #[test]
    fn counts_by_kind_list_alphabetically_as_the_wire_names_them() {
        let kinds = [
            FindingKind::Unverified,
            FindingKind::Changed,
            FindingKind::KeyNullInSource,
            FindingKind::ColumnExtra,
            FindingKind::FkOrphans,
        ];
        let counts: BTreeMap<FindingKind, u64> = kinds.iter().map(|k| (*k, 1)).collect();
        let names: Vec<String> = serde_json::to_value(&counts)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(FindingKind::ColumnExtra.is_warning() && !FindingKind::Changed.is_warning());
        for k in FindingKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
    }
}
