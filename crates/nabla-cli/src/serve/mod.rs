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
    tx: Mutex<Sender<Msg>>,
    snapshots: watch::Receiver<Arc<String>>,
    last_seen: Mutex<Instant>,
    streams: AtomicUsize,
}

/// The server's state.
struct App {
    sessions: Mutex<HashMap<u64, Arc<Handle>>>,
    next_id: AtomicU64,
    max_sessions: usize,
    shutdown: watch::Receiver<bool>,
    scratch: std::path::PathBuf,
}

type Shared = Arc<App>;

impl App {
    fn get(&self, id: &str) -> ApiResult<Arc<Handle>> {
        let found = id
            .parse::<u64>()
            .ok()
            .and_then(|k| lock(&self.sessions).get(&k).cloned());
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
        lock(&self.sessions).retain(|_, h| {
            h.streams.load(Ordering::SeqCst) > 0 || lock(&h.last_seen).elapsed() < IDLE
        });
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

/// The router of every page and endpoint (for tests: serve it on any listener).
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
    app.reap();
    if lock(&app.sessions).len() >= app.max_sessions {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} runs are open (the limit of this server, --max-sessions); close a tab \
                 or wait {} s for an idle run to be closed",
                app.max_sessions,
                IDLE.as_secs()
            ),
        ));
    }
    let id = app.next_id.fetch_add(1, Ordering::SeqCst);
    let csv_path = app.scratch.join(format!("run-{id}.csv"));
    let rate = req.steps_per_second;
    // Loading and checking the data is blocking work: off the async workers.
    let made = tokio::task::spawn_blocking(move || -> Result<_> {
        let resolved = request::resolve(&req, &csv_path)?;
        let _ = std::fs::remove_file(&csv_path);
        let mut info = view::describe(&resolved)?;
        info["command"] = json!(resolved.command);
        let (tx, rx) = session::spawn(resolved, rate)?;
        Ok((info, tx, rx))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (mut info, tx, snapshots) = made.map_err(ApiError::bad)?;
    info["id"] = json!(id.to_string());
    let handle = Arc::new(Handle {
        tx: Mutex::new(tx),
        snapshots,
        last_seen: Mutex::new(Instant::now()),
        streams: AtomicUsize::new(0),
    });
    lock(&app.sessions).insert(id, handle);
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn close(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.get(&id)?;
    lock(&app.sessions).retain(|k, _| k.to_string() != id);
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
    lock(&h.tx).send(make(tx)).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?.map_err(ApiError::bad)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    action: Action,
}

async fn control(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let req: ControlRequest = json_body(&headers, body).await?;
    let state = ask(&app, &id, |r| Msg::Control(req.action, r)).await?;
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
    let scratch = std::env::temp_dir().join(format!("nabla-serve-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = Arc::new(App {
        sessions: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        max_sessions: args.max_sessions,
        shutdown: stop_rx,
        scratch: scratch.clone(),
    });
    let url = format!("http://{bound}/");
    println!("nabla serve: {url} (Ctrl-C to stop)");
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
        // stdout may be gone (a closed pipe): not worth a panic.
        let _ = writeln!(std::io::stdout(), "nabla serve: stopping");
        let _ = stop_tx.send(true);
    };
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the server failed")?;
    lock(&app.sessions).clear();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
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
