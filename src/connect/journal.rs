//! What `ferry rollback` asks of a table store that keeps a run's rollback journal in itself
//! (PostgreSQL, D1: an undo table per table the run wrote into, beside its commit markers), behind
//! one trait ([`InPlaceJournal`]). Each such store implements it in its own folder
//! (`postgres/journal.rs`, `d1/journal.rs`) and [`super::open_in_place_journal`] picks one by
//! address. The statements of a rollback are the same SQL everywhere but for the few things
//! asked here.

use serde_json::Value as Json;

use super::sql::{literal, quote};
use crate::error::Result;
use crate::row::RowShape;

/// A database holding a run's rollback journal, open for undoing it.
pub(crate) trait InPlaceJournal {
    /// Whether a table exists (`name` as SQL: quoted, qualified).
    fn exists(&mut self, name: &str) -> Result<bool>;
    /// The rows a table holds now (none when it is gone).
    fn count(&mut self, name: &str) -> Result<u64>;
    /// Each key an undo table holds, newest first: whether the run inserted it, and its columns
    /// as a JSON object. `first_entries` is the subquery (`b`) of each key's oldest entry.
    fn keys(&mut self, shape: &RowShape, first_entries: &str) -> Result<Vec<(bool, Json)>>;
    /// The statements that forget the run's commit markers, wherever the import kept them.
    fn forget_markers(&mut self, run_id: &str) -> Result<Vec<String>>;
    /// What an INSERT that puts back rows with their own identity values says after its
    /// column list (PostgreSQL's `OVERRIDING SYSTEM VALUE`).
    fn insert_keeping_identity(&self) -> &'static str {
        ""
    }
    /// Take ferry's lock on the tables (or the database) so that no import writes into them while
    /// they are undone, or say who holds it. Held until [`InPlaceJournal::unlock`] or the end of
    /// the session.
    fn lock(&mut self, tables: &[String]) -> Result<()>;
    fn unlock(&mut self) {}
    /// Run statements in one transaction, foreign keys not enforced between them where the store
    /// allows; the rows each changed.
    fn apply(&mut self, what: &str, stmts: &[String]) -> Result<Vec<u64>>;
}

/// The key columns of `shape` as the arguments of a JSON object built from the undo table's
/// rows (`b`): `'id', b."id", ...`.
pub(crate) fn key_pairs(shape: &RowShape) -> String {
    let pairs: Vec<String> = shape
        .key
        .iter()
        .map(|&i| {
            let name = &shape.columns[i].name;
            format!("{}, b.{}", literal(Some(name)), quote(name))
        })
        .collect();
    pairs.join(", ")
}

/// A key as the store's JSON text gave it back (its text as a string, if it is not JSON).
pub(crate) fn key_json(text: String) -> Json {
    serde_json::from_str(&text).unwrap_or(Json::String(text))
}
