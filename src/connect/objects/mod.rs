//! Object stores: where FILE messages land. One small trait, [`ObjectStore`], that the upload
//! stage drives from several threads; a local directory ([`DirStore`], the embedded default for
//! trying ferry without a server) is [`dir`], S3 and R2 are [`s3`].
//!
//! Every put is create-only: an object already at the key with the same size and SHA-256 counts
//! as done (`present`), a different one is a `conflict` unless overwriting was asked for. A put
//! hashes the bytes it sends and refuses to record them when they are not the bytes hashed at
//! export (`changed`).

use crate::outcome::FileStatus;
use std::path::Path;
use std::time::SystemTime;

pub(crate) mod dir;
mod pieces;
pub(crate) mod s3;

use crate::error::Result;
use crate::tree;

/// Where a store notes the multipart uploads it starts and ends, so that one a killed run left
/// behind (its parts stored, and billed, but never completed) can be aborted later.
pub trait UploadJournal: Sync {
    /// Called before the store is asked for an upload id: the intent. A kill between the
    /// store's answer and [`UploadJournal::started`] leaves an upload no id of which was kept;
    /// the intent says it may be there. An error stops the put.
    fn starting(&self, key: &[u8]) -> Result<()>;
    /// Called once the store has given the upload an id, before any part is sent (the intent
    /// is settled by it); an error stops the put (the upload is aborted).
    fn started(&self, key: &[u8], upload_id: &str) -> Result<()>;
    /// Called once the upload is completed or aborted (or, with an empty id, once the intent
    /// came to nothing: the store gave no id).
    fn ended(&self, key: &[u8], upload_id: &str);
}

/// The upload id an intent is recorded under until the store gives the real one.
pub(crate) const INTENT: &str = "";

/// One file to put.
#[derive(Clone)]
pub struct PutRequest<'a> {
    pub key: &'a [u8],
    /// The file's bytes, on local disk.
    pub src: &'a Path,
    pub size: u64,
    /// What export hashed: 64 lowercase hex digits.
    pub sha256: &'a str,
    pub content_type: Option<&'a str>,
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub overwrite: bool,
    pub journal: Option<&'a dyn UploadJournal>,
}

/// What a put did: its status (one of those a put can end in), and what the store said.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub(crate) status: FileStatus,
    pub(crate) etag: Option<String>,
    /// Multipart part size, when the object went up in parts.
    pub(crate) part_size: Option<u64>,
    pub(crate) reason: Option<String>,
}

impl PutOutcome {
    pub(crate) fn done(status: FileStatus) -> Self {
        PutOutcome {
            status,
            etag: None,
            part_size: None,
            reason: None,
        }
    }

    pub(crate) fn not(status: FileStatus, reason: String) -> Self {
        PutOutcome {
            status,
            etag: None,
            part_size: None,
            reason: Some(reason),
        }
    }

    pub(crate) fn with_etag(mut self, etag: Option<String>) -> Self {
        self.etag = etag;
        self
    }

    /// The file's bytes were not the ones export hashed: nothing of them may be recorded.
    pub(crate) fn not_as_hashed(src: &Path, size: u64, sha256_hex: &str) -> Self {
        PutOutcome::not(
            FileStatus::Changed,
            format!(
                "{} is not what was hashed at export (now {size} bytes, sha256 {sha256_hex}); export it again",
                src.display()
            ),
        )
    }
}

/// What reading `req.src` found, as a put may use it: the file exactly as export hashed it, or
/// the outcome that says why not (changed: `changed`; unreadable: `failed`).
pub(crate) fn as_hashed(
    req: &PutRequest<'_>,
    read: std::result::Result<tree::Hashed, tree::ReadError>,
) -> std::result::Result<tree::Hashed, PutOutcome> {
    match read {
        Ok(h) if h.size == req.size && h.sha256_hex() == req.sha256 => Ok(h),
        Ok(h) => Err(PutOutcome::not_as_hashed(req.src, h.size, &h.sha256_hex())),
        Err(e) => {
            let status = match e {
                tree::ReadError::Changed(_) => FileStatus::Changed,
                tree::ReadError::Unreadable(_) => FileStatus::Failed,
            };
            Err(PutOutcome::not(status, format!("reading {}: {e}", req.src.display())))
        }
    }
}

/// What is at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The whole object's SHA-256, when the store knows it (a directory: always, by reading).
    pub sha256: Option<String>,
    /// The store's ETag (S3: a single-part upload's is the MD5 of its bytes).
    pub etag: Option<String>,
}

pub trait ObjectStore: Send + Sync {
    /// The redacted address, for messages, the checkpoint and the manifest.
    fn address(&self) -> String;
    /// What the store puts before every key (`media/` for `s3://bucket/media`): a key here is
    /// relative to it, and the object's full key (what an application keeps) is the two joined.
    fn key_prefix(&self) -> &str {
        ""
    }
    /// The object's full key in its bucket for `key` (relative to the prefix, as the manifest
    /// keeps it): what the upload results, rollback plans and the application name.
    fn full_key(&self, key: &[u8]) -> String {
        format!("{}{}", self.key_prefix(), String::from_utf8_lossy(key))
    }
    /// Put one file, create-only unless `overwrite`. An error means the store itself failed
    /// (full, read-only, unreachable...): the run stops; per-file trouble is a status.
    fn put(&self, req: &PutRequest<'_>) -> Result<PutOutcome>;
    /// What is at `key`, if anything.
    fn head(&self, key: &[u8]) -> Result<Option<ObjectInfo>>;
    /// Remove the object at `key`; true if there was one.
    fn delete(&self, key: &[u8]) -> Result<bool>;
    /// Abort the multipart upload `upload_id` at `key` (one a journal recorded), dropping its
    /// parts; aborting one that is already gone is not an error.
    fn abort_upload(&self, key: &[u8], upload_id: &str) -> Result<()> {
        let _ = (key, upload_id);
        Ok(())
    }
    /// Make every put so far durable (called before a STATE is acknowledged, so what the
    /// manifest records as done survives a crash of the machine, not only of ferry).
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// After the last put of a run: tidy up (best effort).
    fn finish(&self) {}
}
