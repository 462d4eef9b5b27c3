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

/// Write the user uploads the sample database's `saved_files` rows describe (those still `local`
/// and under 1 MB) under `dir`, with deterministic bytes: the media tree of the demo. Returns how
/// many files it wrote.
pub fn create_media(db: &Path, dir: &Path) -> Result<usize> {
    let conn = Connection::open(db).ctx(ErrorKind::Io, || format!("opening {}", db.display()))?;
    let rows: Vec<(i64, String, i64)> = conn
        .prepare("SELECT id, path, size FROM saved_files WHERE status = 'local' AND size < 1000000 ORDER BY id")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx(ErrorKind::Io, || format!("reading {}", db.display()))?;
    for (id, rel, size) in &rows {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx(ErrorKind::Io, || format!("creating {}", parent.display()))?;
        }
        let bytes: Vec<u8> = (0..*size).map(|i| ((i * 31 + id * 7) % 251) as u8).collect();
        std::fs::write(&path, bytes).ctx(ErrorKind::Io, || format!("writing {}", path.display()))?;
    }
    Ok(rows.len())
}
