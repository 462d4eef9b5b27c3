//! A private, throwaway PostgreSQL cluster for one test binary: `initdb` in a temporary directory,
//! `postgres` on a free loopback port (as the `postgres` user when the tests run as root), password
//! authentication over TCP, stopped and deleted by a watchdog when the test process exits.
//! `FERRY_TEST_PG=postgres://user:password@host:port/db` uses an existing server instead.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "ferry-test-Secret-9";

pub struct Cluster {
    /// `postgres://user:password@host:port` without a database.
    pub base: String,
    pub user: String,
    pub host: String,
    pub port: u16,
    /// Where the cluster lives, for tests that stop and start it (None for FERRY_TEST_PG).
    pub data: Option<PathBuf>,
    pub bin: Option<PathBuf>,
    /// The set-up connection (`postgres` database, no TLS): over TCP, or over the Unix socket for
    /// the TLS cluster, whose TCP side takes TLS only.
    admin_url: String,
}

/// The certificates of the TLS cluster ([`tls_cluster`]), as PEM files.
pub struct Pki {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A CA that signed neither.
    pub other_ca: PathBuf,
    /// A client certificate for the role `certuser` (which logs in by certificate), and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| match std::env::var("FERRY_TEST_PG") {
        Ok(url) if !url.is_empty() => external(&url),
        _ => start(None),
    })
}

/// A second private cluster that takes TCP connections over TLS only (`hostssl`), with a server
/// certificate for the name `localhost` alone (so checking the host name at 127.0.0.1 fails) and
/// client certificates signed by the same CA. Always started here, `FERRY_TEST_PG` or not: it
/// needs a server set up this way.
pub fn tls_cluster() -> &'static (Cluster, Pki) {
    static C: OnceLock<(Cluster, Pki)> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ferry-pki-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let pki = make_pki(&dir);
        let cluster = start(Some(&dir));
        let mut admin = cluster.admin();
        admin
            .batch_execute("CREATE ROLE certuser LOGIN")
            .expect("create certuser");
        (cluster, pki)
    })
}

/// Write the CA, server and client certificates into `dir`.
fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
    };
    let issuer = ca("ferry test CA");
    let other = ca("some other CA");
    let leaf = |names: Vec<String>, cn: &str, file: &str| {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        let crt = dir.join(format!("{file}.crt"));
        let pem = dir.join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).expect("write certificate");
        std::fs::write(&pem, key.serialize_pem()).expect("write key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        (crt, pem)
    };
    leaf(vec!["localhost".into()], "localhost", "server");
    let (client_cert, client_key) = leaf(vec![], "certuser", "client");
    std::fs::write(dir.join("ca.crt"), issuer.pem()).expect("write CA");
    std::fs::write(dir.join("other-ca.crt"), other.pem()).expect("write CA");
    Pki {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        client_cert,
        client_key,
    }
}

fn external(url: &str) -> Cluster {
    let cfg: postgres::Config = url.parse().expect("FERRY_TEST_PG is not a PostgreSQL URL");
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres").to_owned();
    let password = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let admin_url = format!("postgres://{user}:{password}@{host}:{port}/postgres");
    Cluster {
        base: format!("postgres://{user}:{password}@{host}:{port}"),
        user,
        host,
        port,
        data: None,
        bin: None,
        admin_url,
    }
}

/// The directory holding initdb, pg_ctl and postgres.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()))
    {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install the postgresql package (.ci/run does), or set FERRY_TEST_PG")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A command run as the postgres user when we are root.
fn as_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Start a cluster; with `pki` (a directory holding `server.crt`, `server.key` and `ca.crt`), one
/// that takes TCP connections over TLS only and checks client certificates against that CA.
fn start(pki: Option<&Path>) -> Cluster {
    let bin = bin_dir();
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("ferry-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data = dir.join("data");
    std::fs::write(dir.join("pw"), PASSWORD).expect("pwfile");
    let mut settings = String::new();
    if let Some(pki) = pki {
        for f in ["server.crt", "server.key", "ca.crt"] {
            std::fs::copy(pki.join(f), dir.join(f)).expect("copy a certificate");
        }
        std::fs::write(
            dir.join("hba.conf"),
            "local all all trust\nhostssl all certuser 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("hba.conf");
        let d = dir.display();
        settings = format!(
            "-c ssl=on -c ssl_cert_file='{d}/server.crt' -c ssl_key_file='{d}/server.key' -c ssl_ca_file='{d}/ca.crt' -c hba_file='{d}/hba.conf'"
        );
    }
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown")
            .success();
        assert!(ok, "chown of {} to postgres failed", dir.display());
    }
    let out = as_owner(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", dir.join("pw").display()))
        .env("HOME", &dir)
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // The watchdog: while this test process lives, so does the server; then it is stopped and
    // its directory removed.
    let me = std::process::id();
    let postgres = bin.join("postgres");
    let owner = if root {
        "setpriv --reuid=postgres --regid=postgres --init-groups --"
    } else {
        ""
    };
    let script = format!(
        "{owner} '{pg}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=60 -c wal_level=logical -c max_replication_slots=40 -c max_wal_senders=40 {settings} > '{dir}/log' 2>&1 &
         pg=$!
         while kill -0 {me} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 0.3; done
         kill -INT $pg 2>/dev/null; wait $pg 2>/dev/null; rm -rf '{dir}'",
        pg = postgres.display(),
        data = data.display(),
        dir = dir.display()
    );
    // Detached on purpose: it outlives the waits of this process and cleans up after it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .spawn()
        .expect("start postgres");
    let admin_url = match pki {
        Some(_) => format!("host={} port={port} user=postgres dbname=postgres", dir.display()),
        None => format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
    };
    let c = Cluster {
        admin_url,
        base: format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}"),
        user: "postgres".into(),
        host: "127.0.0.1".into(),
        port,
        data: Some(data),
        bin: Some(bin),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&c.admin_url, postgres::NoTls) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!(
                "the test PostgreSQL did not start: {e}; log: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            ),
        }
    }
    c
}

impl Cluster {
    /// A new, empty database for one test; its URL.
    pub fn database(&self, hint: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t_{}_{}_{}", hint, std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let mut admin = self.admin();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create database");
        format!("{}/{name}", self.base)
    }

    /// A set-up connection (no TLS) to the database `url` names, one of this cluster's.
    pub fn client(&self, url: &str) -> postgres::Client {
        let db = url.rsplit('/').next().expect("a database name");
        let url = match self.admin_url.strip_suffix("dbname=postgres") {
            Some(socket) => format!("{socket}dbname={db}"),
            None => format!("{}/{db}", self.base),
        };
        postgres::Client::connect(&url, postgres::NoTls).expect("connect")
    }

    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.admin_url, postgres::NoTls).expect("admin connection")
    }
}

/// A connection to a test database.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect")
}

/// A new database holding `big (id bigint PRIMARY KEY, body text)` with `rows` rows, each body
/// `width` bytes; its URL.
pub fn big_table(hint: &str, rows: u32, width: u32) -> String {
    let url = cluster().database(hint);
    connect(&url)
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, body text);
             INSERT INTO big SELECT i, repeat('y', {width}) FROM generate_series(1, {rows}) i;"
        ))
        .unwrap();
    url
}

/// A `ferry-export` caught in the middle of a table: its COPY is underway and it waits on a full
/// pipe, for a test to break something under it.
pub struct MidExport {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl MidExport {
    /// Start `ferry-export ARGS` (stdout and stderr piped) and read `lines` lines of its stream;
    /// the last of them is returned.
    pub fn start(d: &super::Dir, args: &[&str], lines: usize) -> (MidExport, String) {
        let mut child = d
            .cmd("ferry-export", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..lines {
            line.clear();
            out.read_line(&mut line).unwrap();
        }
        (MidExport { child, out }, line)
    }

    /// Read the rest of the stream and wait for the export to end, failing the test (and killing
    /// it) if it has not ended within `secs`: its exit code, its stderr and the rest of the stream.
    pub fn finish(mut self, secs: u64) -> (Option<i32>, String, String) {
        let mut out = self.out;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = out.read_to_end(&mut rest);
            tx.send(rest).unwrap();
        });
        let Ok(rest) = rx.recv_timeout(Duration::from_secs(secs)) else {
            let _ = self.child.kill();
            panic!("the export was still running {secs} s after the fault");
        };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code(), err, String::from_utf8_lossy(&rest).into_owned())
    }
}
