//! Directory trees: walking in byte order of relative paths (so a resume cursor is a path), and
//! hashing each file once with the same read that checks it did not change underneath.
//!
//! Relative paths are bytes, `/`-separated, exactly as the file system has them; the stream
//! carries them as UTF-8 `path`, plus `path_b64` when they are not UTF-8 (see [`FileName`]).

use crate::outcome::FileStatus;
use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// Where an import into a directory keeps files while they are written; walks skip it.
pub(crate) const PARTIAL_DIR: &str = ".ferry-partial";

/// The name of the digest algorithm over a file stream (see [`FileDigest`]).
pub(crate) const FILES_DIGEST_ALGO: &str = "files-sha256";

/// A regular file found by a walk.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Relative path bytes, `/`-separated.
    pub rel: Vec<u8>,
    pub abs: PathBuf,
}

/// What a walk reports, in byte order of relative paths.
#[derive(Debug)]
pub(crate) enum Walked {
    File(Entry),
    /// Left out on purpose (a symbolic link not followed, a socket...): worth a log line, and
    /// a result saying so.
    Skipped {
        rel: Vec<u8>,
        why: String,
        what: LeftOut,
    },
    /// Could not be looked at (permission denied, a link loop...): a non-fatal error.
    Problem {
        rel: Vec<u8>,
        message: String,
    },
}

/// What a walk leaves out on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeftOut {
    /// A symbolic link, not followed.
    Symlink,
    /// Not a regular file: a socket, pipe or device.
    Special,
}

impl LeftOut {
    /// The status its upload result says.
    pub(crate) fn status(self) -> FileStatus {
        match self {
            LeftOut::Symlink => FileStatus::SkippedSymlink,
            LeftOut::Special => FileStatus::SkippedSpecial,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WalkOptions {
    /// Follow symbolic links that stay inside the tree (never ones that lead out of it).
    pub follow_symlinks: bool,
}

/// How directory entries sort among their siblings so that a depth-first walk visits relative
/// paths in byte order: a directory sorts as its name followed by `/` (compared without copying).
fn path_order(a: &walkdir::DirEntry, b: &walkdir::DirEntry) -> std::cmp::Ordering {
    fn key(e: &walkdir::DirEntry) -> impl Iterator<Item = &u8> {
        let slash: &'static [u8] = if e.file_type().is_dir() { b"/" } else { b"" };
        e.file_name().as_bytes().iter().chain(slash)
    }
    key(a).cmp(key(b))
}

fn rel_bytes(root: &Path, path: &Path) -> Vec<u8> {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// The tree's root as an absolute, canonical directory path, or an error saying what is wrong.
pub(crate) fn open_root(root: &Path) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(root)
        .map_err(|e| Error::new(ErrorKind::Source, format!("dir:{}: {e}", root.display())))?;
    if !canon.is_dir() {
        return Err(Error::new(
            ErrorKind::Source,
            format!("dir:{} is not a directory", root.display()),
        ));
    }
    Ok(canon)
}

/// Walk `root` (canonical, from [`open_root`]) in byte order of relative paths, strictly after
/// `after` when given; directories wholly before it are not read at all.
pub(crate) fn walk(
    root: &Path,
    opts: WalkOptions,
    after: Option<&[u8]>,
    mut each: impl FnMut(Walked) -> Result<()>,
) -> Result<()> {
    let mut it = walkdir::WalkDir::new(root)
        .follow_links(opts.follow_symlinks)
        .sort_by(path_order)
        .into_iter();
    while let Some(item) = it.next() {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                let rel = e.path().map(|p| rel_bytes(root, p)).unwrap_or_default();
                let message = match e.loop_ancestor() {
                    Some(a) => format!("a symbolic link loop (back to {})", a.display()),
                    None => e.io_error().map_or_else(|| e.to_string(), |io| io.to_string()),
                };
                each(Walked::Problem { rel, message })?;
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let rel = rel_bytes(root, entry.path());
        let ft = entry.file_type();
        if entry.depth() == 1 && ft.is_dir() && entry.file_name() == PARTIAL_DIR {
            it.skip_current_dir();
            continue;
        }
        if ft.is_dir() {
            // Everything under `rel/` sorts before `after` when `after` is past `rel/` and not
            // inside it: skip the whole directory.
            if let Some(a) = after {
                let mut prefix = rel.clone();
                prefix.push(b'/');
                if a > prefix.as_slice() && !a.starts_with(&prefix) {
                    it.skip_current_dir();
                    continue;
                }
            }
        }
        if entry.path_is_symlink() {
            if !opts.follow_symlinks {
                each(Walked::Skipped {
                    rel,
                    why: "a symbolic link, not followed (--follow-symlinks follows links that stay inside the tree)"
                        .into(),
                    what: LeftOut::Symlink,
                })?;
                continue;
            }
            let inside = std::fs::canonicalize(entry.path()).is_ok_and(|t| t.starts_with(root));
            if !inside {
                if ft.is_dir() {
                    it.skip_current_dir();
                }
                each(Walked::Problem {
                    rel,
                    message: "a symbolic link that leads outside the tree: not followed".into(),
                })?;
                continue;
            }
        }
        if ft.is_dir() {
            continue;
        }
        if after.is_some_and(|a| rel.as_slice() <= a) {
            continue;
        }
        if !ft.is_file() {
            each(Walked::Skipped {
                rel,
                why: "not a regular file (a socket, pipe or device)".into(),
                what: LeftOut::Special,
            })?;
            continue;
        }
        each(Walked::File(Entry {
            rel,
            abs: entry.into_path(),
        }))?;
    }
    Ok(())
}

/// What identifies one version of a file without reading it: if any of these moved, the
/// bytes may have (nanosecond times; the status change time moves on every write, rename and
/// chmod, and cannot be set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stamp {
    pub(crate) fn of(m: &Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// What one read of a file found.
#[derive(Debug, Clone)]
pub(crate) struct Hashed {
    pub size: u64,
    pub sha256: [u8; 32],
    pub mtime: Option<SystemTime>,
    /// Permission bits.
    pub mode: u32,
    /// The version read.
    pub stamp: Stamp,
}

impl Hashed {
    pub(crate) fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub(crate) fn mtime_rfc3339(&self) -> Option<String> {
        self.mtime
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map(|t| t.to_string())
    }
}

const READ_BUF: usize = 256 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec() && a.ino() == b.ino()
}

/// Why a file could not be read as one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// It changed while being read (size, times or inode moved, or fewer bytes came).
    Changed(String),
    /// It could not be opened or read (or the sink refused a chunk).
    Unreadable(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Changed(m) | ReadError::Unreadable(m) => f.write_str(m),
        }
    }
}

/// Read `f` to its end in chunks, handing each to `sink`; the bytes read.
fn read_chunks(f: &mut File, mut sink: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<u64> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(READ_BUF, 0);
        let mut n: u64 = 0;
        loop {
            let k = match f.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sink(&buf[..k])?;
            n += k as u64;
        }
    })
}

/// Read a file once, hashing it, and make sure it did not change while being read (its size and
/// modification time before and after, and the bytes read).
pub(crate) fn hash_file(path: &Path) -> std::result::Result<Hashed, ReadError> {
    hash_file_into(path, |_| Ok(()))
}

/// [`hash_file`], handing every chunk read to `sink` as well (a copy that is hashed on the way).
pub(crate) fn hash_file_into(
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::result::Result<Hashed, ReadError> {
    let unreadable = |e: std::io::Error| ReadError::Unreadable(e.to_string());
    let mut f = File::open(path).map_err(unreadable)?;
    let before = f.metadata().map_err(unreadable)?;
    if !before.is_file() {
        return Err(ReadError::Unreadable("not a regular file any more".into()));
    }
    let mut h = Sha256::new();
    let mut sink_failed = false;
    let n = read_chunks(&mut f, |chunk| {
        h.update(chunk);
        sink(chunk).inspect_err(|_| sink_failed = true)
    })
    .map_err(|e| {
        if sink_failed {
            ReadError::Unreadable(format!("writing: {e}"))
        } else {
            unreadable(e)
        }
    })?;
    let after = std::fs::metadata(path).map_err(|e| ReadError::Changed(format!("gone while being read ({e})")))?;
    let opened_after = f.metadata().map_err(unreadable)?;
    if !same_version(&before, &opened_after) || !same_version(&before, &after) || n != before.len() {
        return Err(ReadError::Changed(format!(
            "changed while being read (size {} then {}, {} bytes read): not recorded; re-run to pick up the new version",
            before.len(),
            after.len(),
            n
        )));
    }
    Ok(Hashed {
        size: n,
        sha256: h.finalize().into(),
        mtime: before.modified().ok(),
        mode: before.mode() & 0o7777,
        stamp: Stamp::of(&before),
    })
}

/// The SHA-256 of a file's bytes, streaming (for checking what is already at a target).
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let n = read_chunks(&mut f, |chunk| {
        h.update(chunk);
        Ok(())
    })?;
    Ok((n, hex::encode(h.finalize())))
}

/// A relative path as the stream carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileName {
    /// UTF-8 (lossy when the name is not UTF-8).
    pub path: String,
    /// The exact bytes, base64, when the name is not UTF-8.
    pub path_b64: Option<String>,
}

impl FileName {
    pub(crate) fn of(rel: &[u8]) -> FileName {
        match std::str::from_utf8(rel) {
            Ok(s) => FileName {
                path: s.to_owned(),
                path_b64: None,
            },
            Err(_) => FileName {
                path: String::from_utf8_lossy(rel).into_owned(),
                path_b64: Some(base64::engine::general_purpose::STANDARD.encode(rel)),
            },
        }
    }
}

/// Check a relative path (or object key) is safe to put under a root: not empty, not absolute,
/// no `.` or `..` or empty segment, no NUL. Returns why not.
pub(crate) fn check_relative(rel: &[u8]) -> std::result::Result<(), String> {
    if rel.is_empty() {
        return Err("the path is empty".into());
    }
    if rel.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if rel[0] == b'/' {
        return Err("the path is absolute (it must be relative to the tree)".into());
    }
    for seg in rel.split(|&b| b == b'/') {
        match seg {
            b"" => return Err("the path has an empty segment (`//` or a trailing `/`)".into()),
            b"." | b".." => return Err("the path has a `.` or `..` segment".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Bytes kept as they are in a `file://` URI; everything else is percent-encoded.
const URI_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `file:///abs/path`, every byte of the path kept exactly (percent-encoded where needed).
pub(crate) fn file_uri(abs: &Path) -> String {
    format!("file://{}", percent_encode(abs.as_os_str().as_bytes(), URI_KEEP))
}

/// The path of a `file://` URI (the inverse of [`file_uri`]).
pub(crate) fn path_of_uri(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    if !rest.starts_with('/') {
        return None;
    }
    let bytes: Vec<u8> = percent_decode(rest.as_bytes()).collect();
    Some(PathBuf::from(std::ffi::OsString::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes),
    )))
}

/// The digest over a file stream: SHA-256 of, for each file in stream order, the path's length
/// (u32, big-endian) and bytes, the size (u64, big-endian) and the 32 bytes of its SHA-256. Equal
/// trees listed in the same order have equal digests.
#[derive(Default)]
pub(crate) struct FileDigest {
    h: Sha256,
}

impl FileDigest {
    pub(crate) fn add(&mut self, rel: &[u8], size: u64, sha256_hex: &str) {
        self.h.update((rel.len() as u32).to_be_bytes());
        self.h.update(rel);
        self.h.update(size.to_be_bytes());
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(sha256_hex, &mut raw).is_err() {
            // Never equal to a well-formed entry.
            self.h.update(sha256_hex.as_bytes());
        }
        self.h.update(raw);
    }

    pub(crate) fn take_hex(&mut self) -> String {
        hex::encode(std::mem::take(&mut self.h).finalize())
    }
}

/// A well-formed SHA-256 in the stream: 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &Path, opts: WalkOptions, after: Option<&[u8]>) -> Vec<String> {
        let mut out = Vec::new();
        walk(root, opts, after, |w| {
            if let Walked::File(e) = w {
                out.push(String::from_utf8_lossy(&e.rel).into_owned());
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn walks_in_byte_order_of_whole_paths_and_resumes_after_a_path() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a.txt", "a/b", "a/c/d", "a-b", "B", "z", ".ferry-partial/x"] {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, p.as_os_str().as_bytes()).unwrap();
        }
        let root = open_root(d.path()).unwrap();
        let all = paths(&root, WalkOptions::default(), None);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all, ["B", "a-b", "a.txt", "a/b", "a/c/d", "z"]);
        assert_eq!(
            paths(&root, WalkOptions::default(), Some(b"a.txt")),
            ["a/b", "a/c/d", "z"]
        );
        assert_eq!(paths(&root, WalkOptions::default(), Some(b"a/c/d")), ["z"]);
        assert_eq!(paths(&root, WalkOptions::default(), Some(b"a/b")), ["a/c/d", "z"]);
    }

    #[test]
    fn hashes_like_sha256sum_and_names_survive_a_uri() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let h = hash_file(&p).unwrap();
        assert_eq!(h.size, 3);
        assert_eq!(
            h.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/a b/%25/\xff\xfe/\xc3\xa9"));
        assert_eq!(path_of_uri(&file_uri(&odd)).unwrap(), odd);
    }

    #[test]
    fn unsafe_relative_paths_are_refused() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"a/../b",
            b"..",
            b"./a",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [&b"a"[..], b"a/b.c", b"..a/b..", b"a\\b", b"\xff"] {
            assert!(check_relative(good).is_ok());
        }
    }
}
