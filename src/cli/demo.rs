//! `ferry demo`: the main job end to end on the bundled sample database, through real pipes
//! between the real stage binaries, exactly as a user would type it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, ErrorKind, ExitStatus, Result};
use crate::human;
use crate::sample;

/// Where to run the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's files: created, or an empty one. In a directory an earlier demo
    /// used, the files and directories that demo made (listed in its .ferry-demo) are removed
    /// first, each directory whole with whatever was put in it since; nothing else is touched
    #[arg(long, value_name = "DIR", default_value = "ferry-demo")]
    pub dir: PathBuf,
}

fn stage_binary(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().ctx(ErrorKind::Io, || "finding this program's directory")?;
    let path = me.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::usage(format!(
            "{} is missing next to {}: build every binary with `cargo build --release`",
            name,
            me.display()
        )))
    }
}

/// Run `stages` connected by pipes, the first reading `input` (if any); the last one's stdout
/// goes to `output` (or is inherited). Returns each stage's exit code.
fn pipeline(stages: &[(&str, Vec<String>)], input: Option<&Path>, output: Option<&Path>) -> Result<Vec<i32>> {
    let mut shown: Vec<String> = Vec::new();
    let mut children = Vec::new();
    let mut prev: Option<std::process::ChildStdout> = None;
    for (i, (name, args)) in stages.iter().enumerate() {
        let mut cmd = Command::new(stage_binary(name)?);
        cmd.args(args);
        shown.push(format!("{name} {}", args.join(" ")));
        match (prev.take(), i, input) {
            (Some(out), _, _) => {
                cmd.stdin(Stdio::from(out));
            }
            (None, 0, Some(path)) => {
                cmd.stdin(std::fs::File::open(path).ctx(ErrorKind::Io, || format!("opening {}", path.display()))?);
            }
            _ => {
                cmd.stdin(Stdio::null());
            }
        }
        let last = i + 1 == stages.len();
        match (last, output) {
            (true, Some(path)) => {
                cmd.stdout(std::fs::File::create(path).ctx(ErrorKind::Io, || format!("creating {}", path.display()))?);
            }
            (true, None) => {
                cmd.stdout(Stdio::inherit());
            }
            (false, _) => {
                cmd.stdout(Stdio::piped());
            }
        }
        let mut child = cmd.spawn().ctx(ErrorKind::Io, || format!("starting {name}"))?;
        prev = child.stdout.take();
        children.push(child);
    }
    // The input goes to the first stage: `A < in | B`, which a shell reads as this pipeline.
    if let (Some(p), Some(first)) = (input, shown.first_mut()) {
        first.push_str(&format!(" < {}", p.display()));
    }
    let mut line = format!("$ {}", shown.join(" \\\n    | "));
    if let Some(p) = output {
        line.push_str(&format!(" > {}", p.display()));
    }
    human::say(&line);
    let mut codes = Vec::new();
    for (mut c, (name, _)) in children.into_iter().zip(stages) {
        let status = c.wait().ctx(ErrorKind::Io, || format!("waiting for {name}"))?;
        codes.push(status.code().unwrap_or(-1));
    }
    Ok(codes)
}

fn check(codes: &[i32], what: &str) -> Result<()> {
    if codes.iter().all(|c| *c == 0) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!("{what} failed (exit codes {codes:?})"),
        ))
    }
}

/// The file in which a demo lists what it made in its directory, so the next one removes
/// exactly that.
const MADE: &str = ".ferry-demo";

/// The names in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Result<std::collections::BTreeSet<std::ffi::OsString>> {
    if !dir.exists() {
        return Ok(Default::default());
    }
    std::fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
        .ctx(ErrorKind::Io, || format!("reading {}", dir.display()))
}

/// Make the demo's directory ready: remove what an earlier demo made there (as its list says),
/// and nothing else. A directory with other things in it and no list is not ours: refused.
fn clear(dir: &Path) -> Result<std::collections::BTreeSet<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt as _;
    let list = dir.join(MADE);
    if let Ok(text) = std::fs::read(&list) {
        for name in text.split(|b| *b == b'\n').filter(|n| !n.is_empty()) {
            let name = std::ffi::OsStr::from_bytes(name);
            if name.as_bytes().contains(&b'/') || name == ".." || name == "." {
                continue;
            }
            let path = dir.join(name);
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            removed.ctx(ErrorKind::Io, || format!("removing {}", path.display()))?;
        }
        std::fs::remove_file(&list).ctx(ErrorKind::Io, || format!("removing {}", list.display()))?;
    } else if !entries(dir)?.is_empty() {
        return Err(Error::usage(format!(
            "{} is not empty and no ferry demo made it: the demo never deletes what it did not make; give an empty or new directory with --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
    entries(dir)
}

/// Lists, when the demo ends however it ends, what it made in its directory.
struct Made<'a> {
    dir: &'a Path,
    before: std::collections::BTreeSet<std::ffi::OsString>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(now) = entries(self.dir) else { return };
        let mut text = Vec::new();
        for name in now.difference(&self.before) {
            text.extend_from_slice(name.as_bytes());
            text.push(b'\n');
        }
        if let Err(e) = std::fs::write(self.dir.join(MADE), text) {
            human::say(&format!(
                "ferry demo: could not list what it made in {}: {e}",
                self.dir.display()
            ));
        }
    }
}

pub(crate) fn run(args: &DemoArgs) -> Result<ExitStatus> {
    let dir = &args.dir;
    let before = clear(dir)?;
    let _made = Made { dir, before };
    let p = |f: &str| dir.join(f);
    let s = |path: PathBuf| path.display().to_string();
    let sample_db = p("sample.db");
    sample::create(&sample_db)?;
    human::say(&format!(
        "ferry demo: built {} from the bundled SQL (users, files, notifications, awkward values)\n",
        sample_db.display()
    ));

    let src = format!("sqlite:{}", s(sample_db.clone()));
    let dst = format!("sqlite:{}", s(p("copy.db")));
    let state = s(p("state.db"));
    let ops: Vec<String> = [
        "--rename-stream",
        "main.users=people",
        "--drop-field",
        "people.password_hash",
    ]
    .map(String::from)
    .to_vec();

    let codes = pipeline(&[("ferry-export", vec![src.clone()])], None, Some(&p("app.ndjson")))?;
    check(&codes, "export")?;

    let mut import = vec![dst.clone(), "--create".into(), "--state".into(), state.clone()];
    import.extend(["--reject-file".to_string(), s(p("rejects.ndjson"))]);
    let codes = pipeline(
        &[("ferry-transform", ops.clone()), ("ferry-import", import)],
        Some(&p("app.ndjson")),
        Some(&p("import-acks.ndjson")),
    )?;
    check(&codes, "transform | import")?;

    let codes = pipeline(
        &[
            ("ferry-export", vec![src.clone()]),
            ("ferry-transform", ops.clone()),
            (
                "ferry-validate",
                vec![dst.clone(), "--report".into(), s(p("report.json"))],
            ),
        ],
        None,
        Some(&p("findings.ndjson")),
    )?;
    let validated = codes.last().copied() == Some(0);
    check(&codes[..2], "export | transform")?;

    // The users' uploaded files: into a directory acting as the object store, each file hashed
    // once, put create-only, verified, recorded; the results land in a table.
    let media = p("media");
    let files = sample::create_media(&sample_db, &media)?;
    human::say(&format!(
        "\nferry demo: wrote {files} uploaded files under {} (the saved_files rows still local)",
        media.display()
    ));
    let media_addr = format!("dir:{}", s(media));
    let bucket = format!("dir:{}", s(p("bucket")));
    let codes = pipeline(
        &[
            ("ferry-export", vec![media_addr.clone()]),
            ("ferry-import", vec![bucket.clone(), "--state".into(), state.clone()]),
        ],
        None,
        Some(&p("uploads.ndjson")),
    )?;
    check(&codes, "export | import of the files")?;
    let uploads = format!("sqlite:{}", s(p("uploads.db")));
    let codes = pipeline(
        &[(
            "ferry-import",
            vec![uploads, "--create".into(), "--state".into(), state.clone()],
        )],
        Some(&p("uploads.ndjson")),
        Some(&p("uploads-acks.ndjson")),
    )?;
    check(&codes, "import of the upload results")?;
    let codes = pipeline(
        &[("ferry-validate", vec![media_addr, bucket])],
        None,
        Some(&p("files-findings.ndjson")),
    )?;
    let files_validated = codes.last().copied() == Some(0);

    let codes = pipeline(&[("ferry", vec!["status".into(), "--state".into(), state])], None, None)?;
    check(&codes, "status")?;

    let validated = validated && files_validated;
    human::say(&format!(
        "\nferry demo: {} — files in {}: app.ndjson (the stream), copy.db (the target), report.json, findings.ndjson, media/ and bucket/ (the files), uploads.db (their results), state.db",
        if validated {
            "the target tables and the bucket are proved equal to the source"
        } else {
            "VALIDATION FOUND DIFFERENCES"
        },
        dir.display()
    ));
    human::say(&format!(
        "try: ferry-validate {src} {dst}   # exit 1: users was renamed and a field dropped on the way"
    ));
    Ok(if validated {
        ExitStatus::Ok
    } else {
        ExitStatus::Differences
    })
}
