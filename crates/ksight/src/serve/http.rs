//! The HTTP side of `serve`: every connection, whoever opens it, is bounded.
//!
//! - at most `max_connections` open; when full, the connection idle the longest is closed
//!   so a new scrape is still served (a new one is refused only when every other is busy);
//! - a request's headers must arrive within `read_header_timeout`, which (hyper ≥ 1.6) also
//!   runs while a kept-alive connection waits for its next request: an idle connection lasts
//!   no longer;
//! - a response write that makes no progress for `write_timeout` ends the connection (a
//!   client that never reads);
//! - at most `max_requests` scrapes wait for the collector thread; more get 503 at once.
//!
//! Any listener added later (TLS, systemd sockets) goes through `serve_connections`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tower::ServiceExt;
use tracing::{info, warn};

use super::auth::{Authenticator, Verdict};
use super::reload::Watched;
use super::web_config::WebConfig;
use super::worker::ScrapeRequest;
use crate::metrics::encode::Format;

/// The bounds of the HTTP side (flags of `serve`).
#[derive(Clone, Copy, Debug)]
pub struct WebLimits {
    pub max_requests: usize,
    pub max_connections: usize,
    pub read_header_timeout: Duration,
    pub write_timeout: Duration,
}

/// The paths served (flags of `serve`).
#[derive(Clone, Debug)]
pub struct Routes {
    pub telemetry_path: String,
}

/// `--web.telemetry-path`: an absolute path other than `/` (the landing page).
pub fn parse_telemetry_path(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && text.len() > 1
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid telemetry path {text:?} (an absolute path such as /metrics, not /)"
        ))
    }
}

/// How long a scrape may wait for the collector thread before it gets 503.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct AppState {
    tx: mpsc::Sender<ScrapeRequest>,
    waiting: Arc<AtomicUsize>,
    max_requests: usize,
}

/// Serves until SIGINT/SIGTERM (Ok) or until the collector thread ends (`worker_gone`
/// fires: Err), whichever comes first.
pub fn serve(
    listeners: Vec<std::net::TcpListener>,
    routes: Routes,
    web: WebState,
    tx: mpsc::Sender<ScrapeRequest>,
    limits: WebLimits,
    worker_gone: oneshot::Receiver<()>,
) -> Result<()> {
    for listener in &listeners {
        listener.set_nonblocking(true)?;
    }
    if let Some(file) = &web.file {
        file.start_reloader()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut bound = Vec::new();
        for listener in listeners {
            let listener = TcpListener::from_std(listener)?;
            info!(address = %listener.local_addr()?, path = routes.telemetry_path, "serving");
            bound.push(listener);
        }
        let state = AppState {
            tx,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_requests: limits.max_requests,
        };
        let landing_page = landing(&routes.telemetry_path);
        let app = Router::new()
            .route("/", get(move || std::future::ready(landing_page.clone())))
            .route(&routes.telemetry_path, get(metrics))
            .with_state(state);
        tokio::select! {
            result = serve_connections(bound, app, limits, web) => result,
            () = shutdown_signal() => Ok(()),
            _ = worker_gone => anyhow::bail!("the collector thread stopped"),
        }
    })
}

/// What every connection of every listener shares.
struct Shared {
    app: Router,
    limits: WebLimits,
    connections: Connections,
    web: WebState,
}

/// The web config (TLS, users, headers), if any, and the basic-auth checks against it.
pub struct WebState {
    pub file: Option<Watched>,
    pub auth: Authenticator,
}

impl WebState {
    fn config(&self) -> Arc<WebConfig> {
        match &self.file {
            Some(file) => file.current(),
            None => Arc::new(WebConfig::plain()),
        }
    }
}

/// Accepts on every listener forever, serving each connection under `limits` (one count of
/// connections for all of them) and the web config.
async fn serve_connections(
    listeners: Vec<TcpListener>,
    app: Router,
    limits: WebLimits,
    web: WebState,
) -> Result<()> {
    let shared = Arc::new(Shared {
        app,
        limits,
        connections: Connections::default(),
        web,
    });
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, shared.clone()));
    }
    // The loops never end; if every one did (no listener), there is nothing to serve.
    while loops.join_next().await.is_some() {}
    anyhow::bail!("no listener left")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.connections.make_room(shared.limits.max_connections) {
            continue; // every connection is busy: this one is refused (dropped)
        }
        let (id, close) = shared.connections.register();
        tokio::spawn(serve_one(stream, shared.clone(), id, close));
    }
}

/// One connection: TLS first when the web config has it (the handshake bounded by the
/// header-read timeout), then HTTP/1.1.
async fn serve_one(stream: TcpStream, shared: Arc<Shared>, id: u64, close: Arc<Notify>) {
    let limits = shared.limits;
    let config = shared.web.config();
    let peer = stream
        .peer_addr()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    let connection = ConnectionInfo {
        config: config.clone(),
        id,
        peer,
    };
    let io = WriteTimeout::new(stream, limits.write_timeout);
    match config.tls.clone() {
        None => serve_http(io, &shared, connection, close).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = tokio::time::timeout(limits.read_header_timeout, acceptor.accept(io));
            if let Ok(Ok(stream)) = handshake.await {
                serve_http(stream, &shared, connection, close).await;
            }
        }
    }
    shared.connections.remove(id);
}

/// What a connection's requests share: the web config it started with, its id, its peer.
#[derive(Clone)]
struct ConnectionInfo {
    config: Arc<WebConfig>,
    id: u64,
    peer: std::net::IpAddr,
}

async fn serve_http<I>(io: I, shared: &Arc<Shared>, connection: ConnectionInfo, close: Arc<Notify>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let for_requests = shared.clone();
    let service =
        hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
            let (shared, connection) = (for_requests.clone(), connection.clone());
            async move {
                shared.connections.set_busy(connection.id, true);
                let response = answer(&shared, &connection, request).await;
                shared.connections.set_busy(connection.id, false);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = close.notified() => {
            // Finish a response in progress (bounded by the write timeout), then close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.write_timeout, conn).await;
        }
    }
}

/// One request: authenticated, then routed; the operator's headers on every answer.
async fn answer(
    shared: &Shared,
    connection: &ConnectionInfo,
    request: axum::http::Request<hyper::body::Incoming>,
) -> Response {
    let config = &connection.config;
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let verdict = shared
        .web
        .auth
        .check(config, authorization.as_deref(), connection.peer)
        .await;
    let mut response = match verdict {
        Verdict::Allowed => shared.app.clone().oneshot(request).await.into_response(),
        Verdict::Denied => {
            let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"ksight\"")];
            (StatusCode::UNAUTHORIZED, challenge, "Unauthorized\n").into_response()
        }
        Verdict::Busy => {
            let retry = [(header::RETRY_AFTER, "1")];
            let text = "too many password checks pending\n";
            (StatusCode::TOO_MANY_REQUESTS, retry, text).into_response()
        }
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// The open connections: busy (a request in progress) or idle since when.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Connection>>,
    next_id: AtomicUsize,
}

struct Connection {
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Connection>> {
        // A panic while holding this lock leaves a consistent map: keep using it.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let close = Arc::new(Notify::new());
        let connection = Connection {
            idle_since: Some(Instant::now()),
            close: close.clone(),
        };
        self.lock().insert(id, connection);
        (id, close)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.idle_since = (!busy).then(Instant::now);
        }
    }

    /// Below `max` open connections, true. At `max`, closes the one idle the longest and
    /// stops counting it (it goes within a write timeout), then true; false when all are busy.
    fn make_room(&self, max: usize) -> bool {
        let mut open = self.lock();
        if open.len() < max {
            return true;
        }
        let oldest_idle = open
            .iter()
            .filter_map(|(id, c)| c.idle_since.map(|since| (since, *id)))
            .min();
        match oldest_idle {
            Some((_, id)) => {
                if let Some(c) = open.remove(&id) {
                    c.close.notify_one();
                }
                true
            }
            None => false,
        }
    }
}

/// A stream whose writes fail with TimedOut after `timeout` without progress.
struct WriteTimeout {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a Pending write or flush: Ready(Err) once the stall has lasted `timeout`.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.check_stall(cx).map(Err),
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received, detaching");
}

/// The landing page, linking the telemetry path (checked to need no HTML escaping: no
/// quote, angle bracket or ampersand can be in it... except `&`, escaped here).
fn landing(telemetry_path: &str) -> Html<String> {
    let href = telemetry_path
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Html(format!(
        "<!doctype html><html><head><title>ksight</title></head><body><h1>ksight</h1>\
         <p>Linux kernel metrics with eBPF.</p><p><a href=\"{href}\">Metrics</a></p>\
         <p>version {}</p></body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Counts a waiting scrape for as long as it lives (a client that goes away drops it).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let waiting = Waiting(state.waiting.clone());
    if state.waiting.fetch_add(1, Ordering::SeqCst) >= state.max_requests {
        drop(waiting);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes waiting (--web.max-requests)\n",
        )
            .into_response();
    }
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    let format = Format::from_accept(text(header::ACCEPT));
    let gzip = crate::metrics::format::accepts_gzip(text(header::ACCEPT_ENCODING));
    let (reply_tx, reply_rx) = oneshot::channel();
    let request = ScrapeRequest {
        format,
        gzip,
        reply: reply_tx,
    };
    if state.tx.send(request).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "collectors stopped\n").into_response();
    }
    let reply = tokio::time::timeout(SCRAPE_DEADLINE, reply_rx).await;
    drop(waiting);
    match reply {
        Ok(Ok(body)) => {
            let mut response =
                ([(header::CONTENT_TYPE, format.content_type())], body.bytes).into_response();
            if body.gzip {
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
                headers.insert(
                    header::VARY,
                    header::HeaderValue::from_static("Accept-Encoding"),
                );
            }
            response
        }
        Ok(Err(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "scrape timed out\n").into_response(),
    }
}
