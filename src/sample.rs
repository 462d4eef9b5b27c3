//! The bundled sample database (`testdata/sample.sql`), embedded so `ferry demo` needs no files.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Context, ErrorKind, Result};

/// The SQL script that builds the sample database.
pub const SQL: &str = include_str!("../testdata/sample.sql");

/// Build the sample database at `path` (replacing any file there).
pub fn create(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_file(path).ctx(ErrorKind::Io, || format!("replacing {}", path.display()))?;
    }
    let conn = Connection::open(path).ctx(ErrorKind::Io, || format!("creating {}", path.display()))?;
    // The sample holds a reference to a missing row on purpose; rusqlite enables foreign keys by default.
    conn.execute_batch("PRAGMA foreign_keys = OFF;")
        .ctx(ErrorKind::Io, || format!("creating {}", path.display()))?;
    conn.execute_batch(SQL).ctx(ErrorKind::Io, || {
        format!("building the sample database {}", path.display())
    })?;
    Ok(())
}
