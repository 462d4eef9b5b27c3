//! Generate a benchmark database: `cargo run --release --example gen-db -- OUT.db ROWS`,
//! or rebuild the bundled sample: `cargo run --example gen-db -- --sample testdata/sample.db`.
//!
//! `parents` (10,000 rows) and `items` (ROWS rows, 6 columns, a foreign key to `parents`),
//! deterministic, so runs on different machines compare like with like.

use std::process::ExitCode;

use rusqlite::{Connection, params};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sqlite-version") {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{}\n", rusqlite::version()).as_bytes());
        return ExitCode::SUCCESS;
    }
    if let (Some("--sample"), Some(path)) = (args.get(1).map(String::as_str), args.get(2)) {
        return match ferry::sample::create(std::path::Path::new(path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("gen-db: {e}\n").as_bytes());
                ExitCode::from(2)
            }
        };
    }
    let (Some(path), Some(rows)) = (args.get(1), args.get(2).and_then(|r| r.parse::<u64>().ok())) else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"usage: gen-db OUT.db ROWS | gen-db --sample OUT.db\n",
        );
        return ExitCode::from(2);
    };
    match generate(path, rows) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("gen-db: {e}\n").as_bytes());
            ExitCode::from(2)
        }
    }
}

fn generate(path: &str, rows: u64) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE items (
             id         INTEGER PRIMARY KEY,
             parent_id  INTEGER NOT NULL REFERENCES parents (id),
             name       TEXT NOT NULL,
             amount     REAL NOT NULL,
             qty        INTEGER NOT NULL,
             created_at TEXT NOT NULL
         );
         BEGIN;",
    )?;
    let parents = 10_000u64;
    {
        let mut st = conn.prepare("INSERT INTO parents VALUES (?1, ?2)")?;
        for i in 1..=parents {
            st.execute(params![i as i64, format!("parent {i}")])?;
        }
        let mut st = conn.prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 1..=rows {
            // xorshift64*: cheap, deterministic
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let amount = (r % 10_000_000) as f64 / 100.0 + 0.005;
            st.execute(params![
                i as i64,
                (1 + r % parents) as i64,
                format!("item {i} {:x}", r >> 40),
                amount,
                (r >> 20) as i64 % 1000,
                format!(
                    "2024-{:02}-{:02} {:02}:{:02}:{:02}",
                    1 + r % 12,
                    1 + (r >> 8) % 28,
                    (r >> 16) % 24,
                    (r >> 24) % 60,
                    (r >> 32) % 60
                ),
            ])?;
        }
    }
    conn.execute_batch("COMMIT;")?;
    Ok(())
}
