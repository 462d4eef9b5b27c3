//! The ferry stream, version 1 (`"protocol":"ferry/1"`): the public API between stages.
//!
//! # Framing
//!
//! UTF-8, one compact JSON object per line, `\n`-terminated (`\r\n` accepted on input; empty lines
//! are ignored on input and never written). Every line has `"type"`: UPPERCASE on output, matched
//! case-insensitively on input. stdout carries protocol lines only. A line longer than the limit
//! (default 64 MiB, `--max-line-bytes`) is a fatal error naming the line number. Writers buffer and
//! flush at every `STATE`, `STREAM_END` and `END`; a closed downstream pipe stops a stage, which
//! says so in one line and exits 4 (it did not deliver everything).
//! A stream is complete only if it ends with `END`: a stage reading input that stops without `END`
//! commits nothing after the last acknowledged `STATE` and exits non-zero. Stages that pass data
//! through forward unknown kinds and unknown fields unchanged.
//!
//! # Kinds
//!
//! | type         | required                                             | optional |
//! |--------------|------------------------------------------------------|----------|
//! | `BEGIN`      | `protocol` (`"ferry/1"`), `run_id`                   | `producer{name,version}`, `source{kind,address,selection}` (redacted), `started_at` |
//! | `SCHEMA`     | `stream`, `schema` (JSON Schema object), `key_properties` | `source_stream`, `table{schema,name}`, `foreign_keys`, `unique`, `indexes`, `row_estimate`, `byte_estimate`, `x-sqlite`, `changes` |
//! | `RECORD`     | `stream`, `record`                                   | `op` (`upsert` default, `delete`), `time_extracted` |
//! | `FILE`       | `stream`, `path`, `size`, `sha256`, `content`        | `mtime`, `mode`, `content_type`, `path_b64`, `etag`, `key` |
//! | `STATE`      | `value` (`run_id`, `seq`, `bookmarks{stream: cursor}`) | — |
//! | `STREAM_END` | `stream`, `status`, `rows` or `files`                | `bytes`, `errors`, `digest{algo,value}` |
//! | `ERROR`      | `failure_type`, `message`, `fatal`                   | `stream`, `scope`, `key`, `path`, `stage`, `file_status` |
//! | `END`        | `run_id`, `status` (`ok`/`failed`)                   | `streams`, `rows`, `files`, `bytes`, `errors`, `rejected`, `skipped`, `finished_at` |
//!
//! ```text
//! {"type":"BEGIN","protocol":"ferry/1","run_id":"0193...","producer":{"name":"ferry-export","version":"0.1.0"},"source":{"kind":"sqlite","address":"sqlite:app.db"}}
//! {"type":"STATE","value":{"run_id":"0193...","seq":0,"bookmarks":{}}}
//! {"type":"SCHEMA","stream":"main.users","schema":{"type":"object","properties":{"id":{"type":"integer","x-sql-type":"INTEGER"}}},"key_properties":["id"]}
//! {"type":"RECORD","stream":"main.users","record":{"id":1}}
//! {"type":"STATE","value":{"run_id":"0193...","seq":1,"bookmarks":{"main.users":{"after":{"id":1},"rows":1,"complete":true}}}}
//! {"type":"STREAM_END","stream":"main.users","status":"complete","rows":1,"digest":{"algo":"values-sha256","value":"…"}}
//! {"type":"END","run_id":"0193...","status":"ok","streams":1,"rows":1}
//! ```
//!
//! # Streams, SCHEMA and values
//!
//! A stream is one table (or one file tree). Its SCHEMA comes before its first RECORD; a SCHEMA
//! repeated for the same stream replaces the earlier one. `schema.properties` lists the columns in
//! order; each property is a JSON Schema with ferry's extensions: `x-sql-type` (the source's
//! declared type, so a target of the same engine recreates it exactly), `x-sql-default`,
//! `x-sql-identity` and `x-sql-sequence` (a column numbered by a sequence, and the last number
//! that sequence handed out: a target's counter goes past it, as it goes past `x-sqlite`'s
//! `sequence`, SQLite's AUTOINCREMENT counter), `x-sqlite-dynamic` (the column holds values of
//! several storage classes). How each value is
//! written is decided by its column's schema: see [`crate::value`] for the table. A SCHEMA from
//! PostgreSQL also carries `x-sql-types` (the enum and composite types its columns use) and
//! `x-sql-generated` (its generated columns, which are not in the records): see
//! [`crate::connect::postgres::source`].
//! `key_properties` is the primary key; RECORDs of a stream exported by ferry arrive in ascending
//! key order (the source's own ordering for that key), or in rowid order for a keyless SQLite table.
//! `source_stream` is the name the producer gave the stream (set by a transform that renamed it):
//! bookmarks in STATE are always kept under the producer's names, so that `export --resume` can
//! read them back.
//!
//! # STATE, positions and acknowledgement
//!
//! `ferry-export` emits a STATE right after BEGIN (the resume point, empty bookmarks for a fresh
//! run), every N rows or T seconds, and before each STREAM_END. `STATE.value` is cumulative: the last
//! STATE seen is a complete resume point. A bookmark is
//! `{"after": {key columns}, "rowid": n?, "rows": n, "complete": bool}`, where `rows` counts the
//! stream's rows from its beginning. The *position* of a RECORD is the `rows` of the stream's last
//! bookmark before it plus its index since then; an importer records the position it committed
//! in the target itself, in the same transaction as the rows, so that a re-run of the same pipeline
//! skips exactly what is already there. Transforms pass STATE through in order and never move an
//! item across one. An importer treats STATE as a barrier: it commits everything received before
//! it, records the state in the checkpoint, then echoes the STATE line on stdout. Commit markers
//! and resume points belong to a source's *identity*: its address plus, when an export took only
//! part of it, `source.selection` (`--table users --where 'users=is_active = 1'`).
//!
//! # Changes
//!
//! A SCHEMA with `"changes": true` says its stream's RECORDs are changes to the table rather than
//! a copy of it: a catch-up pass (`ferry-export --incremental`) or change capture. Each RECORD has
//! an `op`: `upsert` (the default: the whole row, inserted, or replacing the row under its key)
//! or `delete` (the record carries the key; other fields are ignored). A change stream needs
//! `key_properties` (a keyless table cannot take changes) and is applied in order, inside the
//! same transactions and commit markers as any stream, so a kill at any instant repeats and loses
//! nothing. Its positions count changes, not rows, and `rows` in its bookmarks and STREAM_END
//! counts changes too. A delete in a stream whose SCHEMA does not declare `changes` is an error.
//!
//! ```text
//! {"type":"SCHEMA","stream":"main.users","schema":{...},"key_properties":["id"],"changes":true}
//! {"type":"RECORD","stream":"main.users","op":"upsert","record":{"id":7,"name":"Ann"}}
//! {"type":"RECORD","stream":"main.users","op":"delete","record":{"id":3}}
//! ```
//!
//! # STREAM_END digest
//!
//! `digest.algo` is `values-sha256`: one SHA-256 over the stream's RECORDs in stream order, each
//! as its columns' canonical encodings ([`crate::value::Value::hash_into`]) in column-name order;
//! before the first row, and again wherever a repeated SCHEMA changes the columns, a `ff` byte and
//! the column names in that order (each as a u32 big-endian length and its bytes). Encodings are
//! self-delimiting and a row has a fixed number of them, so the input is unambiguous. It depends
//! on values, not on JSON spelling, so any stage can recompute and check it, in a single pass
//! (no hash per row). A delete adds a `fd` byte and its key columns' encodings, in key order.
//! (Validation compares rows by a per-row hash, SHA-256 over each column's
//! name and canonical value: [`crate::row::RowShape::row_hash`].)

pub(crate) mod reader;
pub mod side;
pub(crate) mod writer;

use crate::outcome::FileStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

pub use reader::{Line, StreamReader};
pub use writer::StreamWriter;

/// The protocol identifier carried by BEGIN.
pub const PROTOCOL: &str = "ferry/1";

/// The name of the STREAM_END digest algorithm (see the module docs).
pub const DIGEST_ALGO: &str = "values-sha256";

/// Default longest line accepted on input.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Message kind, from the `type` field (case-insensitive on input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Begin,
    Schema,
    Record,
    File,
    State,
    StreamEnd,
    Error,
    End,
    /// Anything else: passed through by stages that forward data, ignored by others.
    Other,
}

impl Kind {
    pub fn parse(s: &str) -> Kind {
        const KINDS: [(&str, Kind); 8] = [
            ("RECORD", Kind::Record),
            ("STATE", Kind::State),
            ("SCHEMA", Kind::Schema),
            ("FILE", Kind::File),
            ("STREAM_END", Kind::StreamEnd),
            ("BEGIN", Kind::Begin),
            ("END", Kind::End),
            ("ERROR", Kind::Error),
        ];
        KINDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map_or(Kind::Other, |(_, k)| *k)
    }

    /// Writers flush after these kinds so that a reader sees each barrier promptly.
    pub fn is_flush_point(self) -> bool {
        matches!(self, Kind::State | Kind::StreamEnd | Kind::End)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Begin => "BEGIN",
            Kind::Schema => "SCHEMA",
            Kind::Record => "RECORD",
            Kind::File => "FILE",
            Kind::State => "STATE",
            Kind::StreamEnd => "STREAM_END",
            Kind::Error => "ERROR",
            Kind::End => "END",
            Kind::Other => "OTHER",
        }
    }
}

/// A message as the stages build and write it. Unknown fields of an input message are kept in
/// `extra` so that a stage that rewrites a message does not drop them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Message {
    Begin(Begin),
    Schema(Box<Schema>),
    Record(Record),
    File(Box<FileMsg>),
    State(State),
    StreamEnd(StreamEnd),
    Error(ErrorMsg),
    End(End),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Begin(_) => Kind::Begin,
            Message::Schema(_) => Kind::Schema,
            Message::Record(_) => Kind::Record,
            Message::File(_) => Kind::File,
            Message::State(_) => Kind::State,
            Message::StreamEnd(_) => Kind::StreamEnd,
            Message::Error(_) => Kind::Error,
            Message::End(_) => Kind::End,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Producer {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: String,
    /// Redacted: never holds a password or token.
    pub address: String,
    /// What of the source was exported, when not everything (`--table users --where '...'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    /// The part of it this stream carries (`--shard K/N`), when it is one of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
}

impl SourceInfo {
    /// What identifies this export for resuming and for commit markers: the address, and the
    /// selection and the shard when there are (two exports of different rows are different
    /// migrations).
    pub fn identity(&self) -> String {
        let mut id = self.address.clone();
        if let Some(sel) = &self.selection {
            id = format!("{id} {sel}");
        }
        if let Some(s) = &self.shard {
            id = format!("{id} --shard {s}");
        }
        id
    }

    /// The identity every shard of this source shares (the identity of an export without
    /// `--shard`).
    pub fn whole_identity(&self) -> String {
        SourceInfo {
            shard: None,
            ..self.clone()
        }
        .identity()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Begin {
    pub protocol: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<Producer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// `table` of a SCHEMA: where the stream came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub name: String,
}

/// The referenced side of a foreign key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct References {
    pub stream: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub references: References,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_update: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deferrable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unique {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub name: String,
    /// Empty for an index on expressions (then `sql` is the only description).
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Partial index condition, as SQL.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_sql: Option<String>,
    /// The source's own statement, valid for a target of the same engine with unchanged names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

/// SQLite specifics that let a SQLite target recreate a table exactly.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SqliteTable {
    /// The `CREATE TABLE` statement as the source stored it. Transforms that change the stream's
    /// shape remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub without_rowid: bool,
    /// The key is `INTEGER PRIMARY KEY AUTOINCREMENT`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub autoincrement: bool,
    /// CHECK constraints (their expressions), which the catalogue does not list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// The table's row in `sqlite_sequence` (AUTOINCREMENT tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

/// The JSON Schema object of a stream: `properties` in column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectSchema {
    #[serde(rename = "type", default = "object_type")]
    pub type_: Json,
    #[serde(default)]
    pub properties: Map<String, Json>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

fn object_type() -> Json {
    Json::String("object".into())
}

impl Default for ObjectSchema {
    fn default() -> Self {
        ObjectSchema {
            type_: object_type(),
            properties: Map::new(),
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub stream: String,
    pub schema: ObjectSchema,
    #[serde(default)]
    pub key_properties: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<Unique>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Index>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_estimate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_estimate: Option<u64>,
    #[serde(default, rename = "x-sqlite", skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteTable>,
    /// The stream's RECORDs are changes (`op` upsert or delete), not a snapshot: see the module
    /// docs, "Changes".
    #[serde(default, skip_serializing_if = "is_false")]
    pub changes: bool,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Schema {
    /// A stream with no columns, no key and nothing else yet.
    pub fn new(stream: impl Into<String>) -> Schema {
        Schema {
            stream: stream.into(),
            schema: ObjectSchema::default(),
            key_properties: vec![],
            source_stream: None,
            table: None,
            foreign_keys: vec![],
            unique: vec![],
            indexes: vec![],
            row_estimate: None,
            byte_estimate: None,
            sqlite: None,
            changes: false,
            extra: Map::new(),
        }
    }

    /// The name under which this stream's bookmarks are kept in STATE.
    pub fn bookmark_name(&self) -> &str {
        self.source_stream.as_deref().unwrap_or(&self.stream)
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.schema.properties.keys().map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub stream: String,
    pub record: Map<String, Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_extracted: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// A stream's resume point inside STATE.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Bookmark {
    /// The key of the last row emitted (keyset cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Map<String, Json>>,
    /// The rowid of the last row, for SQLite tables ordered by rowid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rowid: Option<i64>,
    /// Rows of this stream emitted from its beginning up to this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub complete: bool,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateValue {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub bookmarks: Map<String, Json>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl StateValue {
    /// The bookmark of one stream, if present and in ferry's shape.
    pub fn bookmark(&self, stream: &str) -> Option<Bookmark> {
        self.bookmarks
            .get(stream)
            .and_then(|b| serde_json::from_value(b.clone()).ok())
    }
}

/// Where a file's bytes are (they never travel inside the stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// `file:///abs/path` (percent-encoded bytes) or `s3://bucket/key`.
    pub uri: String,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// A file or object. `path` is relative and `/`-separated; a name that is not UTF-8 has its exact
/// bytes in `path_b64` (and a lossy `path` for people).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMsg {
    pub stream: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    pub size: u64,
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub content: Content,
    /// RFC 3339 UTC with the file system's precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// Permission bits (`0o644` is 420).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The object key a transform chose (else the target's prefix + `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl FileMsg {
    /// The exact bytes of the relative path.
    pub fn path_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        use base64::Engine as _;
        match &self.path_b64 {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("path_b64 is not base64: {e}")),
            None => Ok(self.path.as_bytes().to_vec()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub value: Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub algo: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    pub stream: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl StreamEnd {
    /// A table stream's complete end: its rows and their `values-sha256` digest (hex).
    pub fn complete_rows(stream: &str, rows: u64, digest: String) -> StreamEnd {
        StreamEnd {
            stream: stream.to_owned(),
            status: "complete".into(),
            rows: Some(rows),
            files: None,
            bytes: None,
            errors: None,
            digest: Some(Digest {
                algo: DIGEST_ALGO.into(),
                value: digest,
            }),
            extra: Map::new(),
        }
    }
}

/// The ERROR field that marks a file the export left out on purpose, not one that failed:
/// `skipped-symlink` (a link not followed) or `skipped-special` (a socket, pipe or device). The
/// import gives it an upload result with that status; nothing counts it as a failure.
pub const FILE_STATUS: &str = "file_status";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub failure_type: String,
    pub message: String,
    pub fatal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl ErrorMsg {
    /// What the file was, when this ERROR is about a file the export left out on purpose.
    pub(crate) fn left_out(&self) -> Option<FileStatus> {
        self.extra
            .get(FILE_STATUS)
            .and_then(Json::as_str)
            .and_then(FileStatus::parse)
            .filter(|s| s.is_left_out())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub run_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// The current time as RFC 3339 in UTC, to the microsecond: the finest PostgreSQL keeps, so the
/// times ferry writes (the upload results' `migrated_at`) load into a timestamptz column as they are.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_microsecond(now.as_microsecond())
        .unwrap_or(now)
        .to_string()
}

/// A new run id: a UUIDv7 (time-ordered), as text.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `{"name":"ferry-export","version":"0.1.0"}` for a stage.
pub fn producer(name: &str) -> Producer {
    Producer {
        name: name.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_case_insensitively_and_unknown_is_other() {
        assert_eq!(Kind::parse("record"), Kind::Record);
        assert_eq!(Kind::parse("Stream_End"), Kind::StreamEnd);
        assert_eq!(Kind::parse("ACTIVATE_VERSION"), Kind::Other);
        assert!(Kind::State.is_flush_point());
        assert!(!Kind::Record.is_flush_point());
    }

    #[test]
    fn times_written_keep_at_most_microseconds() {
        for _ in 0..20 {
            let t = now_rfc3339();
            let fraction = t.trim_end_matches('Z').rsplit_once('.').map_or("", |(_, f)| f);
            assert!(fraction.len() <= 6, "{t}");
            assert!(t.parse::<jiff::Timestamp>().is_ok(), "{t}");
        }
    }

    #[test]
    fn type_tag_comes_first_in_output() {
        let m = Message::End(End {
            run_id: "r".into(),
            status: "ok".into(),
            streams: Some(1),
            rows: None,
            files: None,
            bytes: None,
            errors: None,
            rejected: None,
            skipped: None,
            finished_at: None,
            extra: Map::new(),
        });
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"type":"END","run_id":"r","status":"ok","streams":1}"#);
    }
}
