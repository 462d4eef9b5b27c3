//! S3-compatible object storage (Cloudflare R2, AWS S3, any S3 API) through the `object_store`
//! crate: create-only PUTs (`If-None-Match: *`) carrying `x-amz-checksum-sha256`, so the server
//! itself checks every byte against the SHA-256 taken at export; multipart above a threshold with
//! parts in flight and the whole-file hash checked before the upload is completed; the file's
//! SHA-256 kept in the object's metadata (`x-amz-meta-sha256`) for validation and re-runs.
//!
//! Settings come from flags or the standard AWS environment: `AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (default
//! `auto`, right for R2) and `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint (always allowed on
//! loopback). Transient faults are retried with capped exponential backoff and jitter
//! (`FERRY_RETRIES` times, 6 by default).

use crate::outcome::FileStatus;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, MultipartId, ObjectStore as _,
    ObjectStoreExt as _, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RetryConfig,
};
use sha2::{Digest as _, Sha256};

use super::pieces::{Body, Pieces, pieces_for};
use super::{ObjectInfo, ObjectStore, PutOutcome, PutRequest, as_hashed};
use crate::error::{Error, ErrorKind, Result};

/// The longest object key S3 and R2 accept, in bytes of UTF-8.
const MAX_KEY: usize = 1024;

/// The metadata key holding the whole file's SHA-256 (hex).
pub(crate) const SHA256_META: &str = "sha256";

/// How to reach the store, from flags (the environment fills the rest).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// Sizes for uploads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Files this big or bigger go up in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Parts of one file in flight at once.
    pub part_concurrency: usize,
    /// Bytes held in memory for requests in flight, across all files (at least a part, and a
    /// file just below the multipart threshold).
    pub max_in_flight: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            multipart_threshold: 16 << 20,
            part_size: 16 << 20,
            part_concurrency: 4,
            max_in_flight: 40 << 20,
        }
    }
}

pub(crate) struct S3Store {
    rt: tokio::runtime::Runtime,
    store: Arc<AmazonS3>,
    /// `""` or `media/`: prepended to every key.
    prefix: String,
    address: String,
    sizes: Sizes,
    /// The memory request bodies are read into, `max_in_flight` of it.
    pieces: Arc<Pieces>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether an endpoint URL names this machine (plain http is allowed there).
pub(crate) fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `s3://bucket/prefix` split into bucket and prefix (`""` or ending in `/`).
pub(crate) fn parse_address(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::usage(format!("{url:?} is not an s3:// address")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::usage(format!(
            "{url:?} names no bucket: write s3://BUCKET/PREFIX"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        crate::tree::check_relative(prefix.as_bytes())
            .map_err(|e| Error::usage(format!("the prefix of {url:?}: {e}")))?;
    }
    Ok((
        bucket.to_owned(),
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
    ))
}

impl S3Store {
    pub(crate) fn open(url: &str, settings: &S3Settings) -> Result<S3Store> {
        let (bucket, prefix) = parse_address(url)?;
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let region = settings
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "auto".into());
        let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
            return Err(Error::usage(format!(
                "{url}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for R2, an API token's access key id and secret)"
            )));
        };
        let allow_http = env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || endpoint.as_deref().is_some_and(is_loopback);
        if let Some(e) = &endpoint
            && e.starts_with("http://")
            && !allow_http
        {
            return Err(Error::usage(format!(
                "the endpoint {} is plain HTTP: credentials would cross the network unencrypted; use https:// (or AWS_ALLOW_HTTP=true if you mean it)",
                crate::address::redact_url(e)
            )));
        }
        let retries = crate::tuning::Tuning::get().retries;
        let client_options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(10));
        let client_options = match crate::retry::answer_timeout(Some(Duration::from_secs(300))) {
            Some(t) => client_options.with_timeout(t),
            None => client_options.with_timeout_disabled(),
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_checksum_algorithm(Checksum::SHA256)
            // The checksum header is signed and checked against the body by the server: signing
            // the body's hash too would hash every byte once more on both sides.
            .with_unsigned_payload(true)
            .with_client_options(client_options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: retries,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(token) = env("AWS_SESSION_TOKEN") {
            b = b.with_token(token);
        }
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| Error::usage(format!("{url}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting the S3 client: {e}")))?;
        let address = match &endpoint {
            Some(e) => format!("{url} at {}", crate::address::redact_url(e)),
            None => url.to_owned(),
        };
        let sizes = Sizes::default();
        Ok(S3Store {
            rt,
            store: Arc::new(store),
            prefix,
            address,
            pieces: Pieces::new(pieces_for(sizes.max_in_flight)),
            sizes,
        })
    }

    fn path(&self, key: &[u8]) -> std::result::Result<ObjPath, String> {
        let key = std::str::from_utf8(key)
            .map_err(|_| "object keys are UTF-8 and this name is not: give it a key in a transform".to_owned())?;
        crate::tree::check_relative(key.as_bytes()).map_err(|e| format!("unsafe key: {e}"))?;
        let len = self.prefix.len() + key.len();
        if len > MAX_KEY {
            return Err(format!(
                "the object key would be {len} bytes; S3 and R2 keys are at most {MAX_KEY}: give it a shorter key in a transform"
            ));
        }
        ObjPath::parse(format!("{}{key}", self.prefix)).map_err(|e| format!("not a valid object key: {e}"))
    }

    /// A failure of the store as a whole, with what to do about it.
    fn fatal(&self, what: &str, e: object_store::Error) -> Error {
        use object_store::Error as E;
        let (kind, hint) = match &e {
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => (
                ErrorKind::Target,
                "the store refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ),
            E::NotFound { .. } => (ErrorKind::Target, "does the bucket exist?"),
            _ => (
                ErrorKind::Transient,
                "the store failed or could not be reached, after retries; once it is back, re-run the same command to continue",
            ),
        };
        Error::new(kind, format!("{}: {what}: {hint}", self.address)).with_source(e)
    }

    async fn head_async(&self, path: &ObjPath) -> Result<Option<ObjectInfo>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(path, opts).await {
            Ok(r) => Ok(Some(ObjectInfo {
                size: r.meta.size,
                sha256: r
                    .attributes
                    .get(&Attribute::Metadata(SHA256_META.into()))
                    .map(|v| v.as_ref().to_owned()),
                etag: r.meta.e_tag.clone(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fatal(&format!("looking at {path}"), e)),
        }
    }

    /// [`S3Store::head_async`], reading the object to hash it when its metadata has no SHA-256
    /// (put by another tool, or by a server that died between the bytes and the metadata).
    async fn info_async(&self, path: &ObjPath) -> Result<Option<ObjectInfo>> {
        self.info_read(path, false).await.map(|i| i.map(|(info, _)| info))
    }

    /// The object's size and SHA-256: from its metadata, or (`read`, or when the metadata has
    /// none) from its bytes, read and hashed; whether they were read.
    async fn info_read(&self, path: &ObjPath, read: bool) -> Result<Option<(ObjectInfo, bool)>> {
        let Some(mut info) = self.head_async(path).await? else {
            return Ok(None);
        };
        let read = read || info.sha256.is_none();
        if read {
            let got = self
                .store
                .get_opts(path, GetOptions::default())
                .await
                .map_err(|e| self.fatal(&format!("reading {path}"), e))?;
            let mut body = got.into_stream();
            let mut h = Sha256::new();
            let mut n: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.fatal(&format!("reading {path}"), e))?;
                n += chunk.len() as u64;
                h.update(&chunk);
            }
            info.size = n;
            info.sha256 = Some(hex::encode(h.finalize()));
        }
        Ok(Some((info, read)))
    }

    fn attributes(req: &PutRequest<'_>) -> Attributes {
        let mut a = Attributes::new();
        a.insert(Attribute::Metadata(SHA256_META.into()), req.sha256.to_owned().into());
        if let Some(t) = req.mtime.and_then(|t| jiff::Timestamp::try_from(t).ok()) {
            a.insert(Attribute::Metadata("mtime".into()), t.to_string().into());
        }
        if let Some(ct) = req.content_type {
            a.insert(Attribute::ContentType, ct.to_owned().into());
        }
        a
    }

    /// What to do when something is at the key already: `Some` outcome, or `None` to write.
    fn settle_existing(info: &ObjectInfo, req: &PutRequest<'_>) -> Option<PutOutcome> {
        if info.size == req.size && info.sha256.as_deref() == Some(req.sha256) {
            return Some(PutOutcome::done(FileStatus::Present));
        }
        if req.overwrite {
            return None;
        }
        let theirs = match &info.sha256 {
            Some(s) => format!("{} bytes, sha256 {s}", info.size),
            None => format!("{} bytes, no sha256 recorded", info.size),
        };
        Some(PutOutcome::not(
            FileStatus::Conflict,
            format!("a different object is already at this key ({theirs}); --on-conflict overwrite replaces it"),
        ))
    }

    async fn put_async(&self, path: &ObjPath, req: &PutRequest<'_>) -> Result<PutOutcome> {
        let mut existed = false;
        if req.overwrite || req.size >= self.sizes.multipart_threshold {
            // Multipart uploads cannot be made create-only; overwriting wants to know first.
            if let Some(info) = self.info_async(path).await? {
                if let Some(o) = Self::settle_existing(&info, req) {
                    return Ok(o);
                }
                existed = true;
            }
        }
        let done = if existed {
            FileStatus::Overwritten
        } else {
            FileStatus::Uploaded
        };
        if req.size >= self.sizes.multipart_threshold {
            return self.multipart(path, req, done).await;
        }
        let body = match read_whole(req, self.pieces.lend(req.size).await) {
            Ok(b) => b,
            Err(o) => return Ok(o),
        };
        let opts = PutOptions {
            mode: if req.overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            },
            attributes: Self::attributes(req),
            ..Default::default()
        };
        let mut delays = backon::BackoffBuilder::build(crate::retry::policy());
        loop {
            let e = match self.store.put_opts(path, body.clone(), opts.clone()).await {
                Ok(r) => return Ok(PutOutcome::done(done).with_etag(r.e_tag)),
                Err(e) => e,
            };
            let outcome = match e {
                object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                    match self.info_async(path).await? {
                        Some(info) => Self::settle_existing(&info, req).unwrap_or_else(|| {
                            PutOutcome::not(FileStatus::Failed, "the object kept changing under us".into())
                        }),
                        None => PutOutcome::not(FileStatus::Failed, "the key kept changing under us".into()),
                    }
                }
                e if bad_digest(&e) => PutOutcome::not(
                    FileStatus::Failed,
                    format!("the store received other bytes than were sent (checksum mismatch): {e}"),
                ),
                // No answer was read (a reset, a cut answer, a timeout; or a create-only PUT
                // refused with 412 before its body was read, the connection then closed): the
                // object may have landed or not. What is at the key decides, as for any object
                // already there: our bytes count as present, not uploaded (they may have been
                // there before, and only what a run surely created is ever rolled back), other
                // bytes are a conflict; if nothing is there (or, overwriting, other bytes are),
                // it is sent again. The client library does not resend a PUT by itself.
                e if transport_failure(&e) => match self
                    .info_async(path)
                    .await?
                    .and_then(|info| Self::settle_existing(&info, req))
                {
                    Some(o) => o,
                    None => match delays.next() {
                        Some(wait) => {
                            tracing::warn!(key = %path, retry_in_ms = wait.as_millis() as u64, error = %e, "the PUT got no answer and did not land: sending it again");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        None => return Err(self.fatal(&format!("putting {path}"), e)),
                    },
                },
                e => return Err(self.fatal(&format!("putting {path}"), e)),
            };
            return Ok(outcome);
        }
    }

    /// A part task's outcome.
    fn part_done(
        &self,
        path: &ObjPath,
        r: std::result::Result<object_store::Result<(usize, PartId)>, tokio::task::JoinError>,
    ) -> std::result::Result<(usize, PartId), PartError> {
        match r {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(PartError::Store(self.fatal(&format!("sending a part of {path}"), e))),
            Err(e) => Err(PartError::Store(Error::new(
                ErrorKind::Io,
                format!("sending a part of {path}: the task ended: {e}"),
            ))),
        }
    }

    async fn multipart(&self, path: &ObjPath, req: &PutRequest<'_>, done: FileStatus) -> Result<PutOutcome> {
        let file = match std::fs::File::open(req.src) {
            Ok(f) => f,
            Err(e) => {
                return Ok(PutOutcome::not(
                    FileStatus::Failed,
                    format!("reading {}: {e}", req.src.display()),
                ));
            }
        };
        let before = file.metadata().ok();
        let opts = PutMultipartOptions {
            attributes: Self::attributes(req),
            ..Default::default()
        };
        if let Some(j) = req.journal {
            j.starting(req.key)?;
        }
        let id = match self.store.create_multipart_opts(path, opts).await {
            Ok(id) => id,
            Err(e) => {
                if let Some(j) = req.journal {
                    j.ended(req.key, super::INTENT);
                }
                return Err(self.fatal(&format!("starting a multipart upload of {path}"), e));
            }
        };
        // Noted before any part goes, so a kill from here on leaves an upload that can be found.
        if let Some(j) = req.journal
            && let Err(e) = j.started(req.key, &id)
        {
            let _ = self.store.abort_multipart(path, &id).await;
            return Err(e);
        }
        let sent = self.send_parts(path, &id, req, file, before).await;
        // Whatever did not complete is aborted, so no parts are left behind; one that cannot be
        // (the store is gone) stays in the journal for `ferry rollback --failed-only`.
        let ended = matches!(sent, Ok(Ok(_))) || self.store.abort_multipart(path, &id).await.is_ok();
        if ended && let Some(j) = req.journal {
            j.ended(req.key, &id);
        }
        let r = match sent? {
            Ok(r) => r,
            Err(o) => return Ok(o),
        };
        // The parts were each checked by the server; the whole is checked here.
        match self.head_async(path).await? {
            Some(info) if info.size == req.size && info.sha256.as_deref() == Some(req.sha256) => {
                let mut o = PutOutcome::done(done).with_etag(r.e_tag);
                o.part_size = Some(self.sizes.part_size);
                Ok(o)
            }
            other => Ok(PutOutcome::not(
                FileStatus::Failed,
                format!("after the upload the store reports {other:?}, not the file sent"),
            )),
        }
    }
}

impl S3Store {
    /// Send the file's parts (`part_concurrency` at once, within the bytes budget), hashing them
    /// on the way, and complete the upload only if the bytes sent are the bytes export hashed:
    /// `Ok(Err(outcome))` says why a file was not completed; the caller aborts the upload.
    async fn send_parts(
        &self,
        path: &ObjPath,
        id: &MultipartId,
        req: &PutRequest<'_>,
        mut file: std::fs::File,
        before: Option<std::fs::Metadata>,
    ) -> Result<std::result::Result<PutResult, PutOutcome>> {
        let part = self.sizes.part_size;
        let mut hasher = Sha256::new();
        let mut sent: u64 = 0;
        let mut parts: Vec<Option<PartId>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        // Each part is its own task, so parts already read go on being sent while this loop waits
        // for memory: a loop that only polled its parts between waits could hold the budget with
        // parts it never sends, and two files doing that at once would wait for each other.
        let result: std::result::Result<(), PartError> = async {
            loop {
                // Memory for what is left of the file, not a whole part past its end.
                let want = part.min(req.size.saturating_sub(sent)).max(1);
                let mut body = self.pieces.lend(want).await;
                let read = body
                    .read_from(&mut (&mut file).take(part))
                    .map_err(|e| PartError::File(format!("reading {}: {e}", req.src.display())))?;
                if read == 0 {
                    break;
                }
                let body = body.into_payload();
                for piece in body.iter() {
                    hasher.update(piece);
                }
                sent += read;
                let idx = parts.len();
                parts.push(None);
                let store = Arc::clone(&self.store);
                let (at, id) = (path.clone(), id.clone());
                in_flight.push(tokio::spawn(async move {
                    store.put_part(&at, &id, idx, body).await.map(|p| (idx, p))
                }));
                while in_flight.len() >= self.sizes.part_concurrency {
                    if let Some(r) = in_flight.next().await {
                        let (idx, p) = self.part_done(path, r)?;
                        parts[idx] = Some(p);
                    }
                }
            }
            while let Some(r) = in_flight.next().await {
                let (idx, p) = self.part_done(path, r)?;
                parts[idx] = Some(p);
            }
            Ok(())
        }
        .await;
        // Parts still going after a failure are stopped (the upload is aborted next).
        for h in in_flight.iter() {
            h.abort();
        }
        drop(in_flight);
        let after = std::fs::metadata(req.src).ok();
        let moved = match (&before, &after) {
            (Some(a), Some(b)) => a.len() != b.len() || a.mtime() != b.mtime() || a.mtime_nsec() != b.mtime_nsec(),
            _ => true,
        };
        let sha = hex::encode(hasher.finalize());
        match result {
            Err(PartError::Store(e)) => return Err(e),
            Err(PartError::File(m)) => return Ok(Err(PutOutcome::not(FileStatus::Failed, m))),
            Ok(()) if moved => {
                return Ok(Err(PutOutcome::not(
                    FileStatus::Changed,
                    format!("{} changed while being sent", req.src.display()),
                )));
            }
            Ok(()) if sent != req.size || sha != req.sha256 => {
                return Ok(Err(PutOutcome::not_as_hashed(req.src, sent, &sha)));
            }
            Ok(()) => {}
        }
        let parts: Vec<PartId> = parts.into_iter().flatten().collect();
        self.store
            .complete_multipart(path, id, parts)
            .await
            .map(Ok)
            .map_err(|e| self.fatal(&format!("completing the multipart upload of {path}"), e))
    }

    /// Download the object at `key` (within the bucket, prefix included) into the file `dest`
    /// (its directory is created). A missing object or a failing store is an error.
    pub(crate) fn fetch(&self, key: &str, dest: &std::path::Path) -> Result<()> {
        use std::io::Write as _;
        let path = ObjPath::parse(format!("{}{key}", self.prefix))
            .map_err(|e| Error::input(format!("{}: {key:?} is not an object key: {e}", self.address)))?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::new(ErrorKind::Io, format!("creating {}: {e}", dir.display())))?;
        }
        let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing {}: {e}", dest.display()));
        self.rt.block_on(async {
            let got = self
                .store
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(|e| self.fatal(&format!("reading {path}"), e))?;
            let mut out = std::fs::File::create(dest).map_err(io)?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.fatal(&format!("reading {path}"), e))?;
                out.write_all(&chunk).map_err(io)?;
            }
            out.flush().map_err(io)
        })
    }
}

/// An object found by listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// The key without the store's prefix.
    pub key: String,
    pub size: u64,
    pub sha256: Option<String>,
    /// The SHA-256 was computed from the object's bytes, not taken from its metadata.
    pub read: bool,
    /// Last modified, RFC 3339 UTC.
    pub modified: Option<String>,
    pub etag: Option<String>,
}

impl S3Store {
    /// Every object under the prefix, in key order, with the SHA-256 its metadata holds (one
    /// HEAD per object, `concurrency` at once), or with `deep`, read from its bytes.
    pub(crate) fn list(&self, concurrency: usize, deep: bool) -> Result<Vec<Listed>> {
        use futures_util::TryStreamExt as _;
        self.rt.block_on(async {
            let prefix = match self.prefix.trim_end_matches('/') {
                "" => None,
                p => Some(ObjPath::parse(p).map_err(|e| Error::usage(format!("{}: {e}", self.address)))?),
            };
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| self.fatal("listing the objects", e))?;
            let mut out: Vec<Listed> = futures_util::stream::iter(metas)
                .map(|m| async move {
                    let info = self.info_read(&m.location, deep).await?;
                    let full = m.location.to_string();
                    let key = full.strip_prefix(&self.prefix).unwrap_or(&full).to_owned();
                    let modified = m
                        .last_modified
                        .to_rfc3339()
                        .parse::<jiff::Timestamp>()
                        .ok()
                        .map(|t| t.to_string());
                    Ok::<_, Error>(info.map(|(i, read)| Listed {
                        key,
                        size: i.size,
                        sha256: i.sha256,
                        read,
                        modified,
                        etag: i.etag.or_else(|| m.e_tag.clone()),
                    }))
                })
                .buffer_unordered(concurrency.max(1))
                .try_filter_map(|l| async move { Ok(l) })
                .try_collect()
                .await?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }
}

enum PartError {
    Store(Error),
    File(String),
}

/// A 400 BadDigest: the bytes the server got do not match the checksum sent with them.
fn bad_digest(e: &object_store::Error) -> bool {
    let text = e.to_string();
    text.contains("BadDigest") || text.contains("XAmzContentSHA256Mismatch")
}

/// Whether a request failed in transport, with no answer from the server read: it may or may
/// not have been applied.
fn transport_failure(e: &object_store::Error) -> bool {
    crate::error::causes(e).any(|x| x.downcast_ref::<object_store::client::HttpError>().is_some())
}

/// Read a whole file into `body`, checking it is the one hashed at export.
fn read_whole(req: &PutRequest<'_>, mut body: Body) -> std::result::Result<PutPayload, PutOutcome> {
    let read = crate::tree::hash_file_into(req.src, |chunk| {
        body.extend(chunk);
        Ok(())
    });
    as_hashed(req, read).map(|_| body.into_payload())
}

impl ObjectStore for S3Store {
    fn address(&self) -> String {
        self.address.clone()
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn put(&self, req: &PutRequest<'_>) -> Result<PutOutcome> {
        let path = match self.path(req.key) {
            Ok(p) => p,
            Err(reason) => return Ok(PutOutcome::not(FileStatus::Refused, reason)),
        };
        self.rt.block_on(self.put_async(&path, req))
    }

    fn head(&self, key: &[u8]) -> Result<Option<ObjectInfo>> {
        let Ok(path) = self.path(key) else {
            return Ok(None);
        };
        self.rt.block_on(self.info_async(&path))
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let Ok(path) = self.path(key) else {
            return Ok(false);
        };
        self.rt.block_on(async {
            if self.head_async(&path).await?.is_none() {
                return Ok(false);
            }
            self.store
                .delete(&path)
                .await
                .map(|()| true)
                .map_err(|e| self.fatal(&format!("deleting {path}"), e))
        })
    }

    fn abort_upload(&self, key: &[u8], upload_id: &str) -> Result<()> {
        let Ok(path) = self.path(key) else {
            return Ok(());
        };
        let id: MultipartId = upload_id.to_owned();
        self.rt.block_on(async {
            match self.store.abort_multipart(&path, &id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fatal(&format!("aborting the multipart upload of {path}"), e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_bucket_and_prefix() {
        assert_eq!(parse_address("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse_address("s3://b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(
            parse_address("s3://b/media/x/").unwrap(),
            ("b".into(), "media/x/".into())
        );
        assert!(parse_address("s3:///x").is_err());
        assert!(parse_address("s3://b/../x").is_err());
    }

    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:9000"));
        assert!(is_loopback("http://localhost:9000/"));
        assert!(is_loopback("http://[::1]:9000"));
        assert!(!is_loopback("http://10.0.0.1:9000"));
        assert!(!is_loopback("https://acct.r2.cloudflarestorage.com"));
    }

    #[test]
    fn the_upload_memory_holds_a_part_and_the_largest_single_put() {
        let s = Sizes::default();
        let room = pieces_for(s.max_in_flight);
        assert!(room >= pieces_for(s.part_size), "a part could never be lent");
        assert!(
            room >= pieces_for(s.multipart_threshold - 1),
            "a file below the threshold could never be lent"
        );
    }
}
