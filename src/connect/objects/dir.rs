//! A local directory as an object store (the embedded default for trying ferry without a
//! server): create-only puts written aside, synced, then linked into place.

use crate::outcome::FileStatus;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ObjectInfo, ObjectStore, PutOutcome, PutRequest, as_hashed};
use crate::error::{Error, ErrorKind, Result};
use crate::tree::{self, PARTIAL_DIR};

/// A local directory as an object store: key `a/b.pdf` is the file `ROOT/a/b.pdf`. Files are
/// written under `ROOT/.ferry-partial/`, synced, then linked into place, so a key never holds a
/// half-written file, and a kill leaves at most a partial file there (walks skip that directory).
pub(crate) struct DirStore {
    root: PathBuf,
    seq: AtomicU64,
    /// Directories whose entries changed since the last [`ObjectStore::sync`]: a file's data is
    /// synced before it is linked, but the link itself is durable only once its directory is.
    dirty: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Errors that mean the whole store is unusable, not just one file.
fn store_wide(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::PermissionDenied
    ) || e.raw_os_error() == Some(5) // EIO
}

impl DirStore {
    pub(crate) fn open(root: &Path) -> Result<DirStore> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::new(ErrorKind::Target, format!("dir:{}: creating it: {e}", root.display())))?;
        let root = tree::open_root(root).map_err(|e| Error::new(ErrorKind::Target, e.message().to_owned()))?;
        Ok(DirStore {
            root,
            seq: AtomicU64::new(0),
            dirty: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn fatal(&self, what: String, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Target, format!("{}: {what}: {e}", self.address()))
    }

    /// The file for a key, refusing keys that could leave the root: by their name, or through a
    /// directory on the way that is a symbolic link (checked before anything is made or read
    /// through it).
    fn path_for(&self, key: &[u8]) -> std::result::Result<PathBuf, String> {
        tree::check_relative(key).map_err(|e| format!("unsafe key: {e}"))?;
        let path = self.root.join(std::ffi::OsStr::from_bytes(key));
        let mut dir = self.root.clone();
        for part in key
            .split(|b| *b == b'/')
            .take(key.split(|b| *b == b'/').count().saturating_sub(1))
        {
            dir.push(std::ffi::OsStr::from_bytes(part));
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "the key's directory {} is a symbolic link: it could lead outside the target",
                        dir.display()
                    ));
                }
                Ok(_) => {}
                // Nothing there yet: what follows is made fresh, as directories.
                Err(_) => break,
            }
        }
        Ok(path)
    }

    fn existing(&self, dst: &Path) -> Result<Option<std::fs::Metadata>> {
        match std::fs::symlink_metadata(dst) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(self.fatal(format!("looking at {}", dst.display()), e)),
        }
    }

    /// Compare what is at `dst` with what should be there.
    fn same(&self, dst: &Path, meta: &std::fs::Metadata, req: &PutRequest<'_>) -> Result<bool> {
        if meta.len() != req.size {
            return Ok(false);
        }
        let (_, sha) = tree::sha256_of(dst).map_err(|e| self.fatal(format!("reading {}", dst.display()), e))?;
        Ok(sha == req.sha256)
    }

    fn conflict(meta: &std::fs::Metadata) -> PutOutcome {
        PutOutcome::not(
            FileStatus::Conflict,
            format!(
                "a different object is already at this key ({} bytes); --on-conflict overwrite replaces it",
                meta.len()
            ),
        )
    }
}

impl ObjectStore for DirStore {
    fn address(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let Ok(dst) = self.path_for(key) else {
            return Ok(false);
        };
        match std::fs::remove_file(&dst) {
            Ok(()) => {
                // Directories the puts made and that are now empty go too, up to the root.
                let mut dir = dst.parent();
                while let Some(d) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.fatal(format!("removing {}", dst.display()), e)),
        }
    }

    fn sync(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = match self.dirty.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Target,
                    "the directory store's state was poisoned",
                ));
            }
        };
        for d in dirs {
            // A directory a later rollback removed is nothing to keep.
            match File::open(&d).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.fatal(format!("syncing the directory {}", d.display()), e)),
            }
        }
        Ok(())
    }

    fn finish(&self) {
        // Only when empty: another run may be writing into it.
        let _ = std::fs::remove_dir(self.root.join(PARTIAL_DIR));
    }

    fn head(&self, key: &[u8]) -> Result<Option<ObjectInfo>> {
        let Ok(dst) = self.path_for(key) else {
            return Ok(None);
        };
        match self.existing(&dst)? {
            Some(m) if m.is_file() => {
                let (size, sha) =
                    tree::sha256_of(&dst).map_err(|e| self.fatal(format!("reading {}", dst.display()), e))?;
                Ok(Some(ObjectInfo {
                    size,
                    sha256: Some(sha),
                    etag: None,
                }))
            }
            Some(m) => Ok(Some(ObjectInfo {
                size: m.len(),
                sha256: None,
                etag: None,
            })),
            None => Ok(None),
        }
    }

    fn put(&self, req: &PutRequest<'_>) -> Result<PutOutcome> {
        let dst = match self.path_for(req.key) {
            Ok(p) => p,
            Err(reason) => return Ok(PutOutcome::not(FileStatus::Refused, reason)),
        };
        let before = self.existing(&dst)?;
        if let Some(m) = &before {
            if !m.is_file() {
                return Ok(PutOutcome::not(
                    FileStatus::Failed,
                    "something other than a file (a directory or link) is at this key".into(),
                ));
            }
            if self.same(&dst, m, req)? {
                return Ok(PutOutcome::done(FileStatus::Present));
            }
            if !req.overwrite {
                return Ok(Self::conflict(m));
            }
        }
        let parent = dst.parent().unwrap_or(&self.root);
        // Directories made for this key are entries in their parents, up to one that was there.
        let mut made: Vec<PathBuf> = vec![parent.to_owned()];
        let mut up = parent;
        while !up.exists()
            && let Some(p) = up.parent().filter(|p| p.starts_with(&self.root))
        {
            made.push(p.to_owned());
            up = p;
        }
        if let Err(e) = std::fs::create_dir_all(parent) {
            if store_wide(&e) {
                return Err(self.fatal(format!("creating {}", parent.display()), e));
            }
            return Ok(PutOutcome::not(
                FileStatus::Failed,
                format!("cannot make the directory for this key: {e}"),
            ));
        }
        // A directory on the way that is a link out of the root would let a key escape it.
        match std::fs::canonicalize(parent) {
            Ok(p) if p.starts_with(&self.root) => {}
            _ => {
                return Ok(PutOutcome::not(
                    FileStatus::Failed,
                    "the key's directory leads outside the target (a symbolic link)".into(),
                ));
            }
        }

        let partial = self.root.join(PARTIAL_DIR);
        std::fs::create_dir_all(&partial).map_err(|e| self.fatal(format!("creating {}", partial.display()), e))?;
        let tmp = partial.join(format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| self.fatal(format!("creating {}", tmp.display()), e))?;
        let mut write_err: Option<std::io::Error> = None;
        let read = tree::hash_file_into(req.src, |chunk| {
            out.write_all(chunk).inspect_err(|e| {
                write_err = Some(std::io::Error::new(e.kind(), e.to_string()));
            })
        });
        let cleanup = |f: File| {
            drop(f);
            let _ = std::fs::remove_file(&tmp);
        };
        if let Some(e) = write_err {
            cleanup(out);
            return Err(self.fatal(format!("writing {}", dst.display()), e));
        }
        if let Err(o) = as_hashed(req, read) {
            cleanup(out);
            return Ok(o);
        }
        if let Some(t) = req.mtime {
            let _ = out.set_modified(t);
        }
        if let Some(mode) = req.mode {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = out.set_permissions(std::fs::Permissions::from_mode(mode));
        }
        if let Err(e) = out.sync_data() {
            cleanup(out);
            return Err(self.fatal(format!("syncing {}", dst.display()), e));
        }
        drop(out);
        // Noted once the entry is in place (a sync for an earlier STATE may run meanwhile).
        let note = |made: Vec<PathBuf>| {
            if let Ok(mut d) = self.dirty.lock() {
                d.extend(made);
            }
        };
        if before.is_some() {
            std::fs::rename(&tmp, &dst).map_err(|e| self.fatal(format!("replacing {}", dst.display()), e))?;
            note(made);
            return Ok(PutOutcome::done(FileStatus::Overwritten));
        }
        // Create-only: a link fails if something appeared at the key meanwhile.
        let linked = std::fs::hard_link(&tmp, &dst);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                note(made);
                Ok(PutOutcome::done(FileStatus::Uploaded))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match self.existing(&dst)? {
                Some(m) if m.is_file() && self.same(&dst, &m, req)? => Ok(PutOutcome::done(FileStatus::Present)),
                Some(m) => Ok(Self::conflict(&m)),
                None => Ok(PutOutcome::not(
                    FileStatus::Failed,
                    "the key kept changing under us".into(),
                )),
            },
            Err(e) if store_wide(&e) => Err(self.fatal(format!("creating {}", dst.display()), e)),
            Err(e) => Ok(PutOutcome::not(
                FileStatus::Failed,
                format!("creating {}: {e}", dst.display()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_notes_the_directories_whose_entries_it_changed_until_they_are_synced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("dst/a")).unwrap();
        let store = DirStore::open(&tmp.path().join("dst")).unwrap();
        let src = tmp.path().join("f");
        std::fs::write(&src, b"bytes").unwrap();
        let sha = tree::sha256_of(&src).unwrap().1;
        let put = |key: &str| {
            store
                .put(&PutRequest {
                    key: key.as_bytes(),
                    src: &src,
                    size: 5,
                    sha256: &sha,
                    content_type: None,
                    mtime: None,
                    mode: None,
                    overwrite: false,
                    journal: None,
                })
                .unwrap()
                .status
        };
        assert_eq!(put("a/b/c/one"), FileStatus::Uploaded);
        let root = store.root.clone();
        let dirty = |s: &DirStore| {
            let mut d: Vec<PathBuf> = s.dirty.lock().unwrap().iter().cloned().collect();
            d.sort();
            d
        };
        // c holds the file, b holds c, a holds b (a was there: its parent's entry is unchanged).
        assert_eq!(
            dirty(&store),
            vec![root.join("a"), root.join("a/b"), root.join("a/b/c")]
        );
        store.sync().unwrap();
        assert!(dirty(&store).is_empty());
        // Already there with the same bytes: no entry changed.
        assert_eq!(put("a/b/c/one"), FileStatus::Present);
        assert!(dirty(&store).is_empty());
        assert_eq!(put("two"), FileStatus::Uploaded);
        assert_eq!(dirty(&store), vec![root.clone()]);
    }
}
