//! A real S3-protocol server on 127.0.0.1 for tests: s3s-fs (objects as files under a directory)
//! with SigV4 authentication on, run inside the test process. It can be stopped (every connection
//! dropped, the port refusing) and started again on the same port, and it counts the requests it
//! answers so a test can prove a re-run sent none.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

pub const ACCESS_KEY: &str = "FERRYTESTACCESSKEY01";
pub const SECRET_KEY: &str = "ferry-test-secret-key-that-must-never-be-printed";

/// An answer the server gives instead of serving a request.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub status: u16,
    /// The S3 error code (`SlowDown`, `PreconditionFailed`...).
    pub code: &'static str,
    /// Hang up at once instead, the body unread and no answer sent: what a client sees when a
    /// server refuses a request by its headers (a create-only PUT of a key already there) and
    /// closes the connection before the answer is read.
    pub hang_up: bool,
}

impl Fault {
    pub fn new(status: u16, code: &'static str) -> Fault {
        Fault {
            status,
            code,
            hang_up: false,
        }
    }
}

/// Queue answers here to have the next requests refused with them.
pub type Faults = Arc<Mutex<VecDeque<Fault>>>;

#[derive(Clone)]
struct Counted {
    inner: s3s::service::S3Service,
    requests: Arc<AtomicU64>,
    faults: Faults,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Counted {
    type Response =
        <s3s::service::S3Service as hyper::service::Service<hyper::Request<hyper::body::Incoming>>>::Response;
    type Error = <s3s::service::S3Service as hyper::service::Service<hyper::Request<hyper::body::Incoming>>>::Error;
    type Future = <s3s::service::S3Service as hyper::service::Service<hyper::Request<hyper::body::Incoming>>>::Future;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let Some(Fault { status, code, hang_up }) = self.faults.lock().expect("faults").pop_front() else {
            return hyper::service::Service::call(&self.inner, req);
        };
        Box::pin(async move {
            if hang_up {
                return Err(s3s::HttpError::new("hung up by the test".into()));
            }
            // The request is read to its end first, as a server does before it answers.
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test</Message></Error>"
            );
            Ok(hyper::Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(s3s::Body::from(xml))
                .expect("response"))
        })
    }
}

pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    requests: Arc<AtomicU64>,
    /// Queue answers here (`Fault::new(503, "SlowDown")`) to have the next requests refused.
    pub faults: Faults,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// A server over `root` (created) holding an empty bucket `bucket`.
    pub fn start(root: &Path, bucket: &str) -> S3Server {
        std::fs::create_dir_all(root.join(bucket)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = S3Server {
            port,
            root: root.to_owned(),
            requests: Arc::new(AtomicU64::new(0)),
            faults: Faults::default(),
            rt: None,
        };
        s.up();
        s
    }

    /// Start serving (again) on the same port.
    pub fn up(&mut self) {
        assert!(self.rt.is_none(), "already up");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let fs = s3s_fs::FileSystem::new(&self.root).expect("s3s-fs");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = Counted {
            inner: b.build(),
            requests: Arc::clone(&self.requests),
            faults: Arc::clone(&self.faults),
        };
        let port = self.port;
        let listener = rt.block_on(async {
            // The port was ours a moment ago; a restart may race its release.
            for _ in 0..100 {
                if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    return l;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("cannot listen on 127.0.0.1:{port} again");
        });
        rt.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stop at once: every connection dropped, the port closed.
    pub fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The environment a ferry stage needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "auto".into()),
        ]
    }

    /// Put `bytes` at `key` through the S3 API, with these `x-amz-meta-*` values: another
    /// program writing to the bucket.
    pub fn put_raw(&self, bucket: &str, key: &str, bytes: &[u8], metadata: &[(&str, &str)]) {
        use object_store::{Attribute, Attributes, ObjectStore as _, PutOptions, PutPayload};
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("auto")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("an S3 client");
        let mut attributes = Attributes::new();
        for (k, v) in metadata {
            attributes.insert(Attribute::Metadata((*k).to_owned().into()), (*v).to_owned().into());
        }
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(store.put_opts(&key.into(), PutPayload::from(bytes.to_vec()), opts))
            .expect("a put");
    }

    /// Where s3s-fs keeps an object's bytes.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.down();
    }
}
