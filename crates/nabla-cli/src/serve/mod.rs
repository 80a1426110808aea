//! `nabla serve`: the playground (watch a network learn) and the backprop inspector, served
//! from the binary (the page's files are compiled in; nothing is fetched from the network).
//!
//! Every run is a [`session`] thread that owns its [`Trainer`](nabla::train::Trainer); the
//! HTTP handlers only send it messages and stream its snapshots (server-sent events).

pub mod request;
pub mod session;
pub mod view;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::args::ServeArgs;
use request::{RunRequest, MAX_BATCH, MAX_CSV_BYTES, MAX_LAYERS, MAX_POINTS, MAX_WIDTH};
use session::{Action, Msg};

/// The largest request body (a CSV of [`MAX_CSV_BYTES`] in JSON, with room for escapes).
pub const MAX_BODY: usize = 2 * MAX_CSV_BYTES;
/// A run nobody watches (no event stream) and nobody asked anything of for this long is closed.
const IDLE: Duration = Duration::from_secs(120);

/// An error answer: a status and one line, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(e: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::BAD_REQUEST, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let msg = self.1.replace('\n', " ");
        (self.0, Json(json!({ "error": msg }))).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// One open run, as the handlers see it.
struct Handle {
    /// Taken when the run is closed: its thread then ends, and so do its event streams.
    tx: Mutex<Option<Sender<Msg>>>,
    snapshots: watch::Receiver<Arc<String>>,
    last_seen: Mutex<Instant>,
    streams: AtomicUsize,
}

/// The server's state.
struct App {
    /// Open runs by id, and slots reserved by runs being created.
    sessions: Mutex<(HashMap<String, Arc<Handle>>, usize)>,
    /// Run ids are unguessable: another page cannot drive a run it did not make.
    ids: Mutex<nabla::Rng>,
    max_sessions: usize,
    shutdown: watch::Receiver<bool>,
    /// A private (0700) directory for uploaded CSV files while they are read and models while
    /// they are downloaded.
    scratch: std::path::PathBuf,
    /// Numbers the files written there.
    files: AtomicU64,
    /// The `Host` values a request may carry (loopback only; empty: any).
    hosts: Vec<String>,
}

type Shared = Arc<App>;

impl App {
    fn get(&self, id: &str) -> ApiResult<Arc<Handle>> {
        let found = lock(&self.sessions).0.get(id).cloned();
        let h = found.ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no run {id} (it was reset, closed, or idle for {} s)",
                    IDLE.as_secs()
                ),
            )
        })?;
        *lock(&h.last_seen) = Instant::now();
        Ok(h)
    }

    /// Closes runs nobody has watched or asked anything of for [`IDLE`].
    fn reap(&self) {
        lock(&self.sessions).0.retain(|_, h| {
            let keep = h.streams.load(Ordering::SeqCst) > 0 || lock(&h.last_seen).elapsed() < IDLE;
            if !keep {
                h.close();
            }
            keep
        });
    }

    /// Reserves a slot for a new run, or answers busy.
    fn reserve(&self) -> ApiResult<()> {
        self.reap();
        let mut s = lock(&self.sessions);
        if s.0.len() + s.1 >= self.max_sessions {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: {} runs are open (the limit of this server, --max-sessions); close a \
                     tab or wait {} s for an idle run to be closed",
                    self.max_sessions,
                    IDLE.as_secs()
                ),
            ));
        }
        s.1 += 1;
        Ok(())
    }

    /// Fills a reserved slot with `handle` (or frees it); returns the run's id.
    fn settle(&self, handle: Option<Arc<Handle>>) -> String {
        let id = format!("{:016x}", lock(&self.ids).next_u64());
        let mut s = lock(&self.sessions);
        s.1 -= 1;
        if let Some(h) = handle {
            s.0.insert(id.clone(), h);
        }
        id
    }
}

impl Handle {
    /// Ends the run's thread (it sees its message channel close).
    fn close(&self) {
        lock(&self.tx).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The page and its files, compiled into the binary.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
];

async fn asset(path: Option<Path<String>>) -> ApiResult<Response> {
    let name = path.map_or_else(|| "index.html".to_string(), |Path(p)| p);
    let (_, mime, bytes) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no file /assets/{name}")))?;
    Ok(([(header::CONTENT_TYPE, *mime)], *bytes).into_response())
}

/// Refuses requests for another host name (DNS rebinding) and requests that another site's
/// page sends (a foreign `Origin`).
fn foreign(app: &App, headers: &HeaderMap) -> Option<ApiError> {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = get(header::HOST).unwrap_or_default();
    if !app.hosts.is_empty() && !app.hosts.iter().any(|h| h == host) {
        let msg = format!(
            "refused: this server answers only to {}, not to Host '{host}'",
            app.hosts.join(" or ")
        );
        return Some(ApiError(StatusCode::FORBIDDEN, msg));
    }
    match get(header::ORIGIN) {
        Some(origin) if origin != format!("http://{host}") => Some(ApiError(
            StatusCode::FORBIDDEN,
            format!("refused: a page from {origin} may not use this server"),
        )),
        _ => None,
    }
}

async fn same_origin(
    State(app): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(e) = foreign(&app, req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

/// The router of every page and endpoint.
fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(|| asset(None)))
        .route("/assets/{*path}", get(|p: Path<String>| asset(Some(p))))
        .route("/api/options", get(options))
        .route("/api/sessions", post(create))
        .route("/api/sessions/{id}", axum::routing::delete(close))
        .route("/api/sessions/{id}/control", post(control))
        .route("/api/sessions/{id}/events", get(events))
        .route("/api/sessions/{id}/checkpoint", get(checkpoint))
        .route("/api/sessions/{id}/inspect", post(inspect))
        .route("/api/sessions/{id}/inspect/step", post(inspect_step))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page or endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            same_origin,
        ))
        .with_state(app)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let too_big = |n: String| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {n} bytes; the limit is {} MiB",
                MAX_BODY >> 20
            ),
        )
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_type {
        // Also keeps other sites' pages out: a cross-site form cannot send this type.
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as JSON with Content-Type: application/json".into(),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > MAX_BODY) {
        return Err(too_big(n.to_string()));
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_big("more than the limit".into()))?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::bad(format!("malformed request: {inner}"))
        } else {
            ApiError::bad(format!("{path}: {inner}"))
        }
    })
}

async fn options() -> Json<Value> {
    Json(json!({
        "datasets": ["spiral", "moons", "circles", "xor", "sine", "csv"],
        "activations": ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softplus"],
        "losses": ["cross_entropy", "mse", "l1", "huber"],
        "optimizers": ["adam", "adamw", "sgd"],
        "limits": {
            "max_width": MAX_WIDTH, "max_layers": MAX_LAYERS, "max_points": MAX_POINTS,
            "max_batch": MAX_BATCH, "max_csv_bytes": MAX_CSV_BYTES, "max_body_bytes": MAX_BODY,
        },
    }))
}

async fn create(State(app): State<Shared>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let req: RunRequest = json_body(&headers, body).await?;
    app.reserve()?;
    let made = make_run(&app, req).await;
    let handle = made.as_ref().ok().map(|(_, h)| h.clone());
    let id = app.settle(handle);
    let (mut info, _) = made?;
    info["id"] = json!(id);
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Loads the data, checks the settings and starts the run's thread.
async fn make_run(app: &App, req: RunRequest) -> ApiResult<(Value, Arc<Handle>)> {
    let n = app.files.fetch_add(1, Ordering::SeqCst);
    let csv_path = app.scratch.join(format!("upload-{n}.csv"));
    let save_path = app.scratch.join(format!("model-{n}.safetensors"));
    let shown = csv_path.display().to_string();
    // Loading and checking the data is blocking work: off the async workers.
    let made = tokio::task::spawn_blocking(move || -> Result<_> {
        let resolved = request::resolve(&req, &csv_path);
        let _ = std::fs::remove_file(&csv_path);
        let resolved = resolved?;
        let mut info = view::describe(&resolved)?;
        info["command"] = json!(resolved.command);
        let rate = request::step_time(req.steps_per_second)?;
        let (tx, rx) = session::spawn(resolved, rate, save_path)?;
        Ok((info, tx, rx))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Errors about the uploaded file name it as the page does.
    let (info, tx, snapshots) =
        made.map_err(|e| ApiError::bad(format!("{e:#}").replace(&shown, "the uploaded CSV")))?;
    let handle = Arc::new(Handle {
        tx: Mutex::new(Some(tx)),
        snapshots,
        last_seen: Mutex::new(Instant::now()),
        streams: AtomicUsize::new(0),
    });
    Ok((info, handle))
}

async fn close(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.get(&id)?.close();
    lock(&app.sessions).0.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Sends `make(reply)` to run `id` and waits for its answer.
async fn ask<T>(
    app: &App,
    id: &str,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> Msg,
) -> ApiResult<T> {
    let h = app.get(id)?;
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError(StatusCode::GONE, format!("run {id} has stopped"));
    lock(&h.tx)
        .as_ref()
        .ok_or_else(gone)?
        .send(make(tx))
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?.map_err(ApiError::bad)
}

/// What `POST …/control` asks.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ControlAction {
    Start,
    Pause,
    Step,
    Reset,
    /// Change the step rate (`steps_per_second`) of a run without restarting it.
    Speed,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    action: ControlAction,
    steps_per_second: Option<f64>,
}

async fn control(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let req: ControlRequest = json_body(&headers, body).await?;
    let action = match req.action {
        ControlAction::Start => Action::Start,
        ControlAction::Pause => Action::Pause,
        ControlAction::Step => Action::Step,
        ControlAction::Reset => Action::Reset,
        ControlAction::Speed => {
            let t = request::step_time(req.steps_per_second).map_err(ApiError::bad)?;
            let state = ask(&app, &id, |r| Msg::Speed(t, r)).await?;
            return Ok(Json(json!({ "state": state })));
        }
    };
    let state = ask(&app, &id, |r| Msg::Control(action, r)).await?;
    Ok(Json(json!({ "state": state })))
}

async fn checkpoint(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<Response> {
    let bytes = ask(&app, &id, Msg::Save).await?;
    let name = format!("attachment; filename=\"playground-{id}.safetensors\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        bytes,
    )
        .into_response())
}

async fn inspect(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(ask(&app, &id, Msg::Inspect).await?))
}

async fn inspect_step(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(ask(&app, &id, Msg::InspectStep).await?))
}

/// Counts a run's open event streams while alive.
struct Watching(Arc<Handle>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
        *lock(&self.0.last_seen) = Instant::now();
    }
}

async fn events(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let h = app.get(&id)?;
    h.streams.fetch_add(1, Ordering::SeqCst);
    let rx = h.snapshots.clone();
    let state = (rx, app.shutdown.clone(), Watching(h), true);
    let stream = futures_util::stream::unfold(state, |(mut rx, mut stop, w, first)| async move {
        if !first {
            tokio::select! {
                changed = rx.changed() => changed.ok()?,
                _ = stop.changed() => return None,
            }
        }
        let data = rx.borrow_and_update().clone();
        let event = Event::default().event("update").data(data.as_str());
        Some((Ok(event), (rx, stop, w, false)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Runs `nabla serve` until Ctrl-C.
pub fn run(args: &ServeArgs) -> Result<()> {
    let loopback = matches!(args.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    let addr: SocketAddr = format!(
        "{}:{}",
        args.host.replace("localhost", "127.0.0.1"),
        args.port
    )
    .parse()
    .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
    .with_context(|| format!("--host {}: not an IP address", args.host))?;
    if args.max_sessions == 0 {
        anyhow::bail!("--max-sessions 0: allow at least one run");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(serve(addr, loopback, args))
}

async fn serve(addr: SocketAddr, loopback: bool, args: &ServeArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let scratch = private_dir()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let port = bound.port();
    let hosts = if loopback {
        vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]
    } else {
        Vec::new()
    };
    let app = Arc::new(App {
        sessions: Mutex::new((HashMap::new(), 0)),
        ids: Mutex::new(nabla::Rng::new(random_seed())),
        max_sessions: args.max_sessions,
        shutdown: stop_rx.clone(),
        scratch: scratch.clone(),
        files: AtomicU64::new(0),
        hosts,
    });
    let url = format!("http://{bound}/");
    // stdout may be a closed pipe: not worth a panic.
    let _ = writeln!(std::io::stdout(), "nabla serve: {url} (Ctrl-C to stop)");
    let _ = std::io::stdout().flush();
    if !loopback {
        eprintln!(
            "warning: listening on {bound}, not only this machine: anyone who can reach it can \
             start training runs here"
        );
    }
    if args.open {
        open_browser(&url);
    }
    let reaper = app.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            reaper.reap();
        }
    });
    let shutdown = async move {
        stop_signal().await;
        let _ = writeln!(std::io::stdout(), "nabla serve: stopping");
        let _ = stop_tx.send(true);
        // A second Ctrl-C does not wait for anything.
        tokio::spawn(async {
            stop_signal().await;
            std::process::exit(130);
        });
    };
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(shutdown);
    let mut stopping = stop_rx;
    // Connections that do not finish within 5 s of the signal are dropped.
    let deadline = async move {
        let _ = stopping.wait_for(|&s| s).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    tokio::select! {
        r = server => r.context("the server failed")?,
        _ = deadline => {}
    }
    for h in lock(&app.sessions).0.values() {
        h.close();
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A fresh directory only this user can read, for uploads.
fn private_dir() -> Result<std::path::PathBuf> {
    let base = std::env::temp_dir();
    for k in 0..100u64 {
        let dir = base.join(format!(
            "nabla-serve-{}-{:x}",
            std::process::id(),
            random_seed() ^ k
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        match b.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("cannot create a private directory in {}", base.display())
}

/// 64 random bits from the system (the clock and process id where there is none).
fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener).arg(url).spawn() {
        eprintln!("warning: could not open a browser ({opener}: {e}); open {url} yourself");
    }
}
