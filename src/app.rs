//! The agent's life cycle: read and validate the config, start the libvirt backend,
//! sinks, push sources, scheduler and HTTP server, then shut down gracefully on SIGTERM
//! or SIGINT. Also `--check-config` and `--print-default-config`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vadvisor_api::{Bus, FakeHypervisor, Health, Hypervisor, Registry};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};

use crate::cli::Args;
use crate::config::{
    self, AgentConfig, ConfigErrors, KnownKinds, DEFAULT_CONFIG, DEFAULT_CONFIG_PATH,
};
use crate::pipeline::{self, BuildEnv};
use crate::runtime::{HttpSide, Runtime};

/// How the process should end.
pub enum Exit {
    Ok,
    /// The config is invalid (exit code 2).
    Config(ConfigErrors),
}

fn kinds(registry: &Registry) -> KnownKinds {
    KnownKinds {
        collectors: registry.collector_kinds(),
        sinks: registry.sink_kinds(),
    }
}

/// Reads the config text: the given file, else the default path, else the built-in
/// defaults. Returns the text and the name used in messages. A file that cannot be
/// read, is a directory or is not text is a [`ConfigErrors`] naming it (exit code 2).
pub fn read_config(path: Option<&Path>) -> anyhow::Result<(String, String)> {
    match path {
        Some(p) => {
            let file = p.display().to_string();
            let fail = |message: String| ConfigErrors {
                file: file.clone(),
                diagnostics: vec![config::Diagnostic {
                    position: Default::default(),
                    path: String::new(),
                    message,
                }],
            };
            if p.is_dir() {
                return Err(fail("is a directory, not a config file".into()).into());
            }
            let bytes =
                std::fs::read(p).map_err(|e| fail(format!("cannot read the config file: {e}")))?;
            let text = String::from_utf8(bytes)
                .ok()
                .filter(|t| !t.contains('\0'))
                .ok_or_else(|| {
                    fail("is not a text file (binary or not UTF-8); expected YAML".into())
                })?;
            Ok((text, file))
        }
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            read_config(Some(Path::new(DEFAULT_CONFIG_PATH)))
        }
        None => Ok((
            DEFAULT_CONFIG.to_string(),
            "<built-in defaults>".to_string(),
        )),
    }
}

/// [`read_config`], with its config errors as an [`Exit`].
fn read_config_or_exit(path: Option<&Path>) -> anyhow::Result<Result<(String, String), Exit>> {
    match read_config(path) {
        Ok(r) => Ok(Ok(r)),
        Err(e) => match e.downcast::<ConfigErrors>() {
            Ok(errors) => Ok(Err(Exit::Config(errors))),
            Err(e) => Err(e),
        },
    }
}

/// Loads and validates a config, applying the command-line overrides. Pure: every
/// plugin instance's options are checked, nothing is built or opened.
pub fn load(
    text: &str,
    file: &str,
    registry: &Registry,
    args: &Args,
) -> Result<AgentConfig, ConfigErrors> {
    let (mut config, mut diagnostics) = config::load_partial(text, file, &kinds(registry))?;
    if let Some(uri) = &args.libvirt_uri {
        if let Err(message) = config::check_libvirt_uri(uri) {
            return Err(ConfigErrors {
                file: "--libvirt-uri".into(),
                diagnostics: vec![config::Diagnostic {
                    position: Default::default(),
                    path: String::new(),
                    message,
                }],
            });
        }
        config.libvirt.uri = uri.clone();
    }
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(port) = args.port {
        config.http.listen.set_port(port);
    }
    if let Some(path) = &args.web_config_file {
        config.http.web_config_file = Some(path.clone());
    }
    if let Some(o) = args.statsd.overrides() {
        apply_override(&mut config, o);
    }
    diagnostics.extend(pipeline::validate(&config, registry));
    if !diagnostics.is_empty() {
        diagnostics.sort_by_key(|d| (d.position.line, d.position.column));
        return Err(ConfigErrors {
            file: config.file.clone(),
            diagnostics,
        });
    }
    if let Some(path) = &config.http.web_config_file {
        let web = crate::web_config::load(path)?;
        if let Some(tls) = &web.tls_server_config {
            crate::tls::server_config(tls).map_err(|message| ConfigErrors {
                file: path.display().to_string(),
                diagnostics: vec![config::Diagnostic {
                    position: Default::default(),
                    path: "tls_server_config".into(),
                    message,
                }],
            })?;
        }
    }
    Ok(config)
}

/// Applies a plugin's command-line override to its sink instance (creating the
/// instance when asked to and the file has none).
fn apply_override(config: &mut AgentConfig, o: vadvisor_api::InstanceOverride) {
    let existing = config.sinks.iter().position(|s| s.id == o.id);
    let index = match existing {
        Some(i) => i,
        None if o.create => {
            config.sinks.push(config::Instance {
                id: o.id.clone(),
                kind: o.kind.clone(),
                interval: Duration::from_secs(15),
                timeout: Duration::from_secs(15),
                options: vadvisor_api::PluginOptions::new(serde_json::json!({})),
                path: vec!["sinks".into(), o.id.clone()],
                enabled: true,
            });
            config.sinks.len() - 1
        }
        None => {
            tracing::warn!(sink = %o.id, "command-line flags for the `{}` sink have no effect: the config has no such sink and the flags do not create one", o.id);
            return;
        }
    };
    let inst = &mut config.sinks[index];
    let mut options = match inst.options.raw() {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    options.extend(o.set);
    if o.enable {
        inst.enabled = true;
    }
    inst.options = vadvisor_api::PluginOptions::new(serde_json::Value::Object(options));
}

fn settings(config: &AgentConfig) -> LibvirtSettings {
    LibvirtSettings {
        uri: config.libvirt.uri.clone(),
        call_timeout: config.libvirt.call_timeout,
        max_concurrent_calls: config.libvirt.max_concurrent_calls,
        reconnect_min: config.libvirt.reconnect_min,
        reconnect_max: config.libvirt.reconnect_max,
        hedge_after: config.libvirt.hedge_after,
        bulk_shards: config.libvirt.bulk_shards,
        stats_transport: config.libvirt.stats_transport,
        ..LibvirtSettings::default()
    }
}

/// Runs the agent until SIGTERM/SIGINT.
/// The scheduler, sinks and event sources run on `pipeline` (the pipeline thread's
/// runtime); HTTP and everything else on the runtime this is called on.
pub async fn run(
    args: Args,
    registry: Registry,
    pipeline: tokio::runtime::Handle,
) -> anyhow::Result<Exit> {
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(Exit::Ok);
    }
    if args.hash_password {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .context("cannot read the password from standard input")?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!("empty password");
        }
        if password.len() > crate::auth::MAX_PASSWORD_BYTES {
            anyhow::bail!(
                "the password has {} bytes; bcrypt only uses the first {} (a longer one would be silently truncated)",
                password.len(),
                crate::auth::MAX_PASSWORD_BYTES
            );
        }
        println!("{}", bcrypt::hash(password, 10).context("bcrypt")?);
        return Ok(Exit::Ok);
    }
    if args.print_metrics_reference {
        print!("{}", crate::metrics_doc::render(&registry));
        return Ok(Exit::Ok);
    }
    if let Some(path) = &args.check_config {
        let (text, file) = match read_config_or_exit(Some(path))? {
            Ok(r) => r,
            Err(exit) => return Ok(exit),
        };
        // Validated, then built once against an in-memory hypervisor (HTTP paths,
        // metric declarations); nothing is opened or started.
        let checked = load(&text, &file, &registry, &args).and_then(|config| {
            let env = BuildEnv {
                hypervisor: Arc::new(FakeHypervisor::new()),
                health: Health::new(),
            };
            pipeline::build(&config, &registry, &env).map(|_| ())
        });
        return Ok(match checked {
            Ok(()) => {
                println!("{file}: configuration is valid");
                Exit::Ok
            }
            Err(e) => Exit::Config(e),
        });
    }
    let (text, file) = match read_config_or_exit(args.config.as_deref())? {
        Ok(r) => r,
        Err(exit) => return Ok(exit),
    };
    let config = match load(&text, &file, &registry, &args) {
        Ok(c) => c,
        Err(e) => return Ok(Exit::Config(e)),
    };
    if let Some(url) = &args.healthcheck {
        let url = if url.is_empty() {
            crate::healthcheck::default_url(config.http.listen.port())
        } else {
            url.clone()
        };
        return match crate::healthcheck::probe(&url, Duration::from_secs(3)) {
            Ok(()) => Ok(Exit::Ok),
            Err(e) => Err(anyhow::anyhow!("unhealthy: {e}")),
        };
    }
    tracing::info!(config = %file, uri = %config.libvirt.uri, listen = %config.http.listen, "starting vadvisor");

    let shutdown = CancellationToken::new();
    let libvirt = LibvirtHypervisor::start(settings(&config));
    let hv: Arc<dyn Hypervisor> = libvirt.clone();
    let bus = Bus::new(1024);
    let health = Health::new();

    // TLS or not is decided here, once; certificates may change on reload.
    let web = match &config.http.web_config_file {
        Some(path) => crate::web_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => crate::web_config::WebConfig::default(),
    };
    let tls = match &web.tls_server_config {
        Some(t) => Some(crate::tls::server_config(t).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let listener = listen(config.http.listen)
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    tracing::info!(address = %config.http.listen, tls = tls.is_some(), basic_auth = !web.basic_auth_users.is_empty(), "HTTP server listening");
    let bound = listener.local_addr().unwrap_or(config.http.listen);
    if tls.is_none() {
        crate::healthcheck::record_address(bound);
    }
    // The TLS settings travel through a watch channel so a reload can replace them.
    let (tls_sender, tls) = match tls {
        Some(t) => {
            let (tx, rx) = tokio::sync::watch::channel(t);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };

    // Give the first connection a moment so the first tick does not log a spurious failure.
    if !libvirt.wait_connected(Duration::from_secs(2)).await {
        tracing::warn!(uri = %config.libvirt.uri, "libvirt is not reachable yet; collecting as soon as it is");
    }
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadReply>(4);
    let router_slot = Arc::new(std::sync::RwLock::new(axum::Router::new()));
    let make_router = {
        let (hv, health) = (hv.clone(), health.clone());
        move |routes: vadvisor_api::HttpRoutes, config: &AgentConfig| {
            let web = match &config.http.web_config_file {
                Some(path) => crate::web_config::load(path).map_err(|e| e.to_string())?,
                None => crate::web_config::WebConfig::default(),
            };
            let auth = (!web.basic_auth_users.is_empty()).then(|| {
                crate::auth::BasicAuth::with_health(
                    web.basic_auth_users.clone(),
                    Some(health.clone()),
                )
            });
            let core = reload_route(config.http.enable_reload, reload_tx.clone());
            Ok(crate::http::router(
                routes,
                hv.clone(),
                health.clone(),
                auth,
                core,
            ))
        }
    };
    let mut runtime = Runtime::new(
        registry,
        hv.clone(),
        bus.clone(),
        health.clone(),
        shutdown.clone(),
        pipeline,
    );
    runtime.set_http(HttpSide {
        router: router_slot.clone(),
        tls: tls_sender,
        make_router: Box::new(make_router),
    });
    let write_timeout = config.http.write_timeout;
    let limits = crate::connections::Limits {
        header_timeout: config.http.header_timeout,
        idle_timeout: config.http.idle_timeout,
        max_connections: crate::limits::max_connections(config.http.max_connections),
    };
    if let Err(e) = runtime.apply(config).await {
        return Ok(Exit::Config(e));
    }

    // Every request goes to the router current when it arrives (reloads swap it).
    let dynamic = axum::Router::new().fallback_service(tower::service_fn(
        move |req: axum::extract::Request| {
            let router = router_slot
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            async move { tower::ServiceExt::oneshot(router, req).await }
        },
    ));
    let tracker = crate::connections::Tracker::new(limits, health.clone());
    let all_closed = tracker.all_closed();
    let server = tokio::spawn(crate::server::serve(
        listener,
        dynamic,
        tracker,
        tls,
        write_timeout,
        shutdown.clone(),
    ));

    let memory_trim = tokio::spawn(crate::memory_trim::run(all_closed, shutdown.clone()));

    let mut signals = Signals::new();
    loop {
        tokio::select! {
            _ = next(&mut signals.term) => break,
            _ = next(&mut signals.int) => break,
            _ = next(&mut signals.hup) => {
                let _ = reload(&mut runtime, &args).await;
            }
            Some(reply) = reload_rx.recv() => {
                let result = reload(&mut runtime, &args).await;
                let _ = reply.send(result);
            }
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    let tasks = runtime.into_tasks();
    let drain = async {
        for t in tasks {
            let _ = t.await;
        }
        let _ = server.await;
        let _ = memory_trim.await;
    };
    // Streams end and StatsD flushes at once; what is still running after 2.5 s (a
    // client that stopped reading, a hung libvirt call) is dropped with the runtime.
    if tokio::time::timeout(Duration::from_millis(2500), drain)
        .await
        .is_err()
    {
        tracing::warn!("some tasks or connections did not finish within 2.5 s; exiting anyway");
    }
    libvirt.shutdown();
    crate::healthcheck::forget_address(bound);
    Ok(Exit::Ok)
}

/// Where `POST /-/reload` sends its request: the reload's outcome comes back on it.
type ReloadReply = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Re-reads the pipeline file and applies it; on error the running pipeline stays and
/// the located errors are logged (and returned).
async fn reload(runtime: &mut Runtime, args: &Args) -> Result<String, String> {
    tracing::info!("reloading the configuration");
    let result = match read_config(args.config.as_deref()) {
        Err(e) => Err(format!("{e:#}")),
        Ok((text, file)) => match load(&text, &file, runtime.registry(), args) {
            Err(e) => Err(e.to_string()),
            Ok(config) => {
                let web_config_file = config.http.web_config_file.clone();
                match runtime.apply(config).await {
                    Err(e) => Err(e.to_string()),
                    Ok(changes) => {
                        if let Err(e) = runtime.reload_tls(web_config_file.as_deref()) {
                            tracing::warn!(error = %e, "TLS certificates not reloaded");
                        }
                        Ok(format!(
                            "started: [{}]; stopped: [{}]; unchanged: {}",
                            changes.started.join(", "),
                            changes.stopped.join(", "),
                            changes.kept
                        ))
                    }
                }
            }
        },
    };
    match &result {
        Ok(summary) => tracing::info!(%summary, "configuration reloaded"),
        Err(errors) => {
            for line in errors.lines() {
                tracing::error!("{line}");
            }
            tracing::error!("configuration reload failed: the running pipeline is kept");
        }
    }
    result
}

/// `POST /-/reload`: a reload like SIGHUP's, when `http.enable_reload` is on.
fn reload_route(enabled: bool, tx: tokio::sync::mpsc::Sender<ReloadReply>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let answer = |status: StatusCode, message: String| {
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("error"),
            "message": message,
            "status": status.as_u16(),
        });
        (status, axum::Json(body)).into_response()
    };
    axum::Router::new().route(
        "/-/reload",
        axum::routing::post(move || {
            let tx = tx.clone();
            async move {
                if !enabled {
                    return answer(
                        StatusCode::FORBIDDEN,
                        "reloading over HTTP is off: set http.enable_reload: true (SIGHUP always reloads)".into(),
                    );
                }
                let (reply, outcome) = tokio::sync::oneshot::channel();
                if tx.send(reply).await.is_err() {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down".into());
                }
                match outcome.await {
                    Ok(Ok(summary)) => axum::Json(serde_json::json!({"status": "ok", "message": summary}))
                        .into_response(),
                    Ok(Err(errors)) => answer(StatusCode::BAD_REQUEST, errors),
                    Err(_) => answer(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down".into()),
                }
            }
        }),
    )
}

/// The next delivery of a signal (never, when it could not be registered).
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// SIGTERM/SIGINT stop the agent; SIGHUP reloads it.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }
}

/// Binds the HTTP listener with a backlog of 1024 (the kernel caps it at somaxconn), so
/// a burst of connections waits in the queue instead of having its SYNs dropped.
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}
