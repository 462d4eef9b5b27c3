//! `ferry serve`: the migration's runs, progress and metrics over HTTP, for dashboards,
//! Prometheus and the applications that drive ferry. Every call needs a bearer token from the
//! config file; with no config the server answers none (401) and listens on loopback only.

mod alerts;
mod app;
mod auth;
mod data;
mod error;
mod exports;
mod imports;
mod jobs;
mod runs;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Error, ErrorKind, ExitStatus, Result};

use self::auth::{Config, Scope, Tokens};

const SERVE_EXAMPLES: &str = "\
Examples:
  # A token for Prometheus and the dashboard (printed once; the config keeps only its hash)
  ferry serve --new-token grafana --scope read >> ferry-serve.toml
  ferry serve --new-token user-42 --scope export --entity users:id=42 --store app >> ferry-serve.toml
  ferry serve --config ferry-serve.toml                  # http://127.0.0.1:8080
  ferry serve --config ferry-serve.toml --listen 0.0.0.0:9100 --state /srv/moves/state.db

  H=\"Authorization: Bearer $TOKEN\" URL=http://127.0.0.1:8080
  curl -H \"$H\" $URL/api/v1/runs                  # every run, as ferry status --json
  curl -H \"$H\" $URL/api/v1/runs/RUN_ID           # one run, its batches and errors
  curl -H \"$H\" $URL/metrics                      # Prometheus

  # One user's data as a stream file (scope export): start it, watch it, download it
  curl -H \"$H\" -H 'Content-Type: application/json' \\
    -d '{\"store\": \"app\", \"root\": \"users:id=42\", \"follow_fks\": true}' $URL/api/v1/export
  curl -H \"$H\" $URL/api/v1/export/EXPORT_ID
  curl -H \"$H\" -C - -o user-42.ndjson $URL/api/v1/export/EXPORT_ID/download
  # Import it elsewhere, keeping rows already there; compare a file with the database
  curl -H \"$H\" -F file=@user-42.ndjson \"$URL/api/v1/import?store=app&on_conflict=skip\"
  curl -H \"$H\" --data-binary @user-42.ndjson \"$URL/api/v1/compare?store=app\"

Endpoints: GET /api/v1/runs (every run, as ferry status --json gives it), GET /api/v1/runs/ID
(one run with its batches and errors), GET /api/v1/runs/ID/events (its progress as Server-Sent
Events, until an end event), POST /api/v1/runs/ID/rollback (scope rollback: the plan, or with
{\"confirm\": true} done), GET /metrics (Prometheus; scope read), GET /healthz (no
token); POST /api/v1/export ({\"store\", \"root\", \"follow_fks\"} or {\"store\", \"tables\"}: 202
and the export's record), GET /api/v1/export/ID, GET /api/v1/export/ID/download (the stream,
HTTP Range honoured; 409 until complete); POST /api/v1/import?store=NAME[&on_conflict=skip|
overwrite][&create=true][&dry_run=true] (the stream as the body or a form's file field: 202 and
the import's record, or the plan), GET /api/v1/import/ID; POST /api/v1/validate[?export=ID] (a
stream on its own) and POST /api/v1/compare?store=NAME (against the store): 200, the verdict. Errors are JSON: {\"error\": {\"status\", \"code\",
\"message\"}}; 401 without a known token, 403 outside its scopes or entities, 429 beyond max_runs.
Each export is audited (.ferry/serve-audit.ndjson) and kept in .ferry/exports/ beside the state.

ferry-serve.toml:
  listen = \"127.0.0.1:8080\"        # optional
  state = \".ferry/state.db\"        # optional
  max_runs = 4                     # exports, imports and checks at once [default: 4]
  max_upload_bytes = 1073741824    # the largest stream an import takes [default: 1 GiB]
  [stores]                         # what requests may name; never an address from a request
  app = \"sqlite:app.db\"            # or postgres://app@db/app (password: PGPASSWORD)
  [[token]]
  name = \"grafana\"
  sha256 = \"...\"                   # the token's SHA-256, hex
  scopes = [\"read\"]                # read, export, import, rollback, admin
  [[token]]
  name = \"user-42\"
  sha256 = \"...\"
  scopes = [\"export\"]
  entities = [\"users:id=42\"]       # this token exports this user's data and nothing else,
  stores = [\"app\"]                 # from this store only
  [alerts]                         # a JSON post when a run ends, stalls, or a validation differs
  webhook = \"https://hooks.example/T0/B0\"
  stall_seconds = 600              # no progress for this long is a stall [default: 600]
  slack = false                    # true: Slack's {\"text\": ...} body

The server runs until Ctrl-C or SIGTERM, then exits 0.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = SERVE_EXAMPLES)]
pub struct ServeArgs {
    /// Address and port to listen on [default: the config's, else 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The server's configuration: its tokens (hashed), and optionally listen and state
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The state file whose runs are served [default: the config's, else .ferry/state.db]
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Make a token named NAME: print it once, with the lines to add to the config file
    /// (nothing is served)
    #[arg(long, value_name = "NAME")]
    pub new_token: Option<String>,
    /// The new token's scopes (repeat it)
    #[arg(long, value_enum, requires = "new_token", default_value = "read")]
    pub(crate) scope: Vec<Scope>,
    /// Limit the new token to exporting this entity, TABLE:COLUMN=VALUE (repeat it)
    #[arg(long, value_name = "ROOT", requires = "new_token")]
    pub entity: Vec<String>,
    /// Limit the new token to this store, by its name under [stores] (repeat it)
    #[arg(long, value_name = "NAME", requires = "new_token")]
    pub store: Vec<String>,
}

pub(super) fn run_serve(args: &ServeArgs) -> Result<ExitStatus> {
    if let Some(name) = &args.new_token {
        return print_new_token(name, &args.scope, &args.entity, &args.store);
    }
    let config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let listen = args
        .listen
        .clone()
        .or(config.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| Error::usage(format!("--listen {listen:?}: write ADDRESS:PORT, e.g. 127.0.0.1:8080")))?;
    let state = args
        .state
        .clone()
        .or(config.state.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_PATH));
    let tokens = Tokens::new(&config.tokens);
    if tokens.len() == 0 {
        crate::human::say(&format!(
            "ferry serve: no tokens configured{}: every call but /healthz will be refused (401); ferry serve --new-token NAME makes one",
            args.config
                .as_ref()
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default()
        ));
    }
    if !addr.ip().is_loopback() {
        crate::human::say(&format!(
            "ferry serve: listening on {addr}, beyond this machine, over plain HTTP: tokens cross the network readable; put TLS in front"
        ));
    }
    crate::interrupt::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-serve")
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("starting the server: {e}")))?;
    let home = state
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let stores = config
        .stores
        .iter()
        .map(|(name, a)| Ok((name.clone(), crate::address::Address::parse(a)?)))
        .collect::<Result<_>>()?;
    let exports = jobs::Jobs::open(home.join("exports"))?;
    let imports = jobs::Jobs::open(home.join("imports"))?;
    let cut = exports.failed_on_open + imports.failed_on_open;
    if cut > 0 {
        crate::human::say(&format!(
            "ferry serve: {cut} jobs were running when the server last stopped: marked failed (GET /api/v1/export/ID or /api/v1/import/ID says so; ask for them again)"
        ));
    }
    let audit_path = home.join("serve-audit.ndjson");
    let audit = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&audit_path)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("opening the audit log {}: {e}", audit_path.display()),
            )
        })?;
    let max_runs = config.max_runs.unwrap_or(4);
    let alert_config = config.alerts.clone();
    let app = app::App {
        tokens,
        state: state.clone(),
        stores,
        exports,
        imports,
        max_upload: config.max_upload_bytes.unwrap_or(1 << 30),
        slots: Arc::new(tokio::sync::Semaphore::new(max_runs)),
        max_runs,
        audit: std::sync::Mutex::new(audit),
        import_locks: Default::default(),
        alerts: None,
    };
    rt.block_on(async move {
        let mut app = app;
        app.alerts = alert_config.map(|a| alerts::start(a, state.clone()));
        let app = Arc::new(app);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::usage(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, format!("listening on {addr}: {e}")))?;
        crate::human::say(&format!(
            "ferry serve: listening on http://{bound} (runs of {}; {} tokens)",
            state.display(),
            app.tokens.len()
        ));
        axum::serve(listener, routes(app))
            .with_graceful_shutdown(stopped())
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("serving on {bound}: {e}")))
    })?;
    Ok(ExitStatus::Ok)
}

/// Every route, and the handler answering it.
fn routes(app: Arc<app::App>) -> axum::Router {
    use axum::routing::{get, post};
    use data::{compare, download, export_status, import_status, start_export, start_import, validate};
    use runs::{metrics_text, rollback, run, run_events, runs};
    axum::Router::new()
        .route("/healthz", get(app::healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/events", get(run_events))
        .route("/api/v1/runs/{id}/rollback", post(rollback))
        .route("/api/v1/export", post(start_export))
        .route("/api/v1/export/{id}", get(export_status))
        .route("/api/v1/export/{id}/download", get(download))
        .route("/api/v1/import", post(start_import))
        .route("/api/v1/import/{id}", get(import_status))
        .route("/api/v1/validate", post(validate))
        .route("/api/v1/compare", post(compare))
        .fallback(app::not_found)
        .method_not_allowed_fallback(app::method_not_allowed)
        .with_state(app)
}

/// Resolves once Ctrl-C or SIGTERM asks the process to stop.
async fn stopped() {
    while !crate::interrupt::requested() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn print_new_token(name: &str, scopes: &[Scope], entities: &[String], stores: &[String]) -> Result<ExitStatus> {
    if name.is_empty() || name.contains(['"', '\\', '\n']) {
        return Err(Error::usage(format!(
            "--new-token {name:?}: a name without quotes, backslashes or line breaks"
        )));
    }
    if let Some(s) = stores.iter().find(|s| s.is_empty() || s.contains(['"', '\\', '\n'])) {
        return Err(Error::usage(format!(
            "--store {s:?}: a store's name under [stores], without quotes, backslashes or line breaks"
        )));
    }
    for e in entities {
        crate::stage::entity::Root::parse(e)
            .ok()
            .filter(|_| !e.contains(['"', '\\', '\n']))
            .ok_or_else(|| Error::usage(format!("--entity {e:?}: write TABLE:COLUMN=VALUE, e.g. users:id=42")))?;
    }
    let (token, hash) = auth::new_token();
    let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{}\"", s.as_str())).collect();
    crate::human::say(&format!(
        "ferry serve: the token for {name:?} (shown once; give it as Authorization: Bearer TOKEN):\n{token}\nthe lines for the config file are on stdout"
    ));
    let mut lines = vec![
        String::new(),
        "[[token]]".into(),
        format!("name = \"{name}\""),
        format!("sha256 = \"{hash}\""),
        format!("scopes = [{}]", scopes.join(", ")),
    ];
    for (key, values) in [("entities", entities), ("stores", stores)] {
        if !values.is_empty() {
            let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
            lines.push(format!("{key} = [{}]", quoted.join(", ")));
        }
    }
    let mut out = crate::protocol::StreamWriter::stdout()?;
    for line in lines {
        out.write_line(line.as_bytes(), crate::protocol::Kind::Other)?;
    }
    out.flush()?;
    Ok(ExitStatus::Ok)
}
