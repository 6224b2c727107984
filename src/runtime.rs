//! The running pipeline, and how a new pipeline file is applied to it (SIGHUP,
//! `POST /-/reload`): the new file is validated and its new or changed instances built
//! and started first; on any error nothing changes and the located errors are returned.
//! Only then are removed and changed instances stopped and the new ones started.
//! Unchanged sinks keep running (their REST history, event history and open streams
//! survive); unchanged collectors keep their objects (the scheduler restarts only when
//! the set of polled collectors changed). The HTTP routes and the web config (users, TLS
//! certificates) are swapped in one step.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vadvisor_api::{Bus, Health, HttpRoutes, Hypervisor, Registry, SinkInput, SourceContext};

use crate::config::{AgentConfig, ConfigErrors, Instance};
use crate::pipeline::{self, BuildEnv};
use crate::scheduler::{self, LiveCollector, PolledInstance};

/// How long a stopped instance may take to finish before it is left behind.
const STOP_GRACE: Duration = Duration::from_millis(2500);

struct RunningSink {
    inst: Instance,
    routes: HttpRoutes,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningSource {
    inst: Instance,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The HTTP side a reload rebuilds: the router served right now, and the TLS settings.
pub struct HttpSide {
    /// Swapped as a whole on reload; every request uses the router current when it
    /// arrives.
    pub router: Arc<RwLock<Router>>,
    /// Present when the server speaks TLS: new certificates are sent here.
    pub tls: Option<tokio::sync::watch::Sender<Arc<tokio_rustls::rustls::ServerConfig>>>,
    /// Builds the router on every apply.
    pub make_router: MakeRouter,
}

/// Builds the full router from the sinks' routes and a config (its web config file).
pub type MakeRouter = Box<dyn Fn(HttpRoutes, &AgentConfig) -> Result<Router, String> + Send + Sync>;

/// The pipeline as it runs.
pub struct Runtime {
    registry: Registry,
    hv: Arc<dyn Hypervisor>,
    bus: Bus,
    health: Arc<Health>,
    live: Arc<LiveCollector>,
    shutdown: CancellationToken,
    config: Option<AgentConfig>,
    sinks: Vec<RunningSink>,
    sources: Vec<RunningSource>,
    polled: Vec<(Instance, PolledInstance)>,
    scheduler: Option<(CancellationToken, Vec<JoinHandle<()>>)>,
    http: Option<HttpSide>,
    /// Where the scheduler, the sinks and the event sources run (the pipeline thread).
    spawner: tokio::runtime::Handle,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub kept: usize,
}

fn wants_restart(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.libvirt != new.libvirt {
        keys.push("libvirt");
    }
    let (o, n) = (&old.http, &new.http);
    if o.listen != n.listen
        || o.write_timeout != n.write_timeout
        || o.header_timeout != n.header_timeout
        || o.idle_timeout != n.idle_timeout
        || o.max_connections != n.max_connections
    {
        keys.push("http (except web_config_file and enable_reload)");
    }
    keys
}

impl Runtime {
    pub fn new(
        registry: Registry,
        hv: Arc<dyn Hypervisor>,
        bus: Bus,
        health: Arc<Health>,
        shutdown: CancellationToken,
        spawner: tokio::runtime::Handle,
    ) -> Self {
        let live = LiveCollector::new(hv.clone(), Vec::new());
        Self {
            registry,
            hv,
            bus,
            health,
            live,
            shutdown,
            config: None,
            sinks: Vec::new(),
            sources: Vec::new(),
            polled: Vec::new(),
            scheduler: None,
            http: None,
            spawner,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the HTTP side once the server is set up; later applies rebuild its router.
    pub fn set_http(&mut self, http: HttpSide) {
        self.http = Some(http);
    }

    /// The sinks' routes merged, in config order.
    pub fn routes(&self) -> HttpRoutes {
        let mut all = HttpRoutes::new();
        for s in &self.sinks {
            // Conflicts were ruled out when the sink was built.
            let _ = all.merge(s.routes.clone());
        }
        all
    }

    /// Applies `config`: builds and starts what is new or changed, then stops what is
    /// gone or changed. On error nothing changes.
    pub async fn apply(&mut self, config: AgentConfig) -> Result<Changes, ConfigErrors> {
        if let Some(old) = &self.config {
            let keys = wants_restart(old, &config);
            if !keys.is_empty() {
                tracing::warn!(sections = ?keys, "these settings changed but take effect only after a restart; the running values stay");
            }
        }
        let env = BuildEnv {
            hypervisor: self.hv.clone(),
            health: self.health.clone(),
        };
        let same = |old: &[Instance], inst: &Instance| old.iter().any(|o| o == inst);
        let old_sources: Vec<Instance> = self.sources.iter().map(|s| s.inst.clone()).collect();
        let old_polled: Vec<Instance> = self.polled.iter().map(|(i, _)| i.clone()).collect();

        // 1. Build every new or changed enabled instance (no I/O).
        let mut diags = Vec::new();
        let mut new_polled = Vec::new();
        let mut new_sources = Vec::new();
        for inst in config.collectors.iter().filter(|i| i.enabled) {
            if same(&old_polled, inst) || same(&old_sources, inst) {
                continue;
            }
            match pipeline::build_collector(&config, &self.registry, &env, inst, &mut diags) {
                Some(pipeline::BuiltCollector::Polled(p)) => new_polled.push((inst.clone(), p)),
                Some(pipeline::BuiltCollector::Push(s)) => new_sources.push((inst.clone(), s)),
                None => {}
            }
        }
        // The polled set after the change: unchanged ones keep their objects.
        let mut polled: Vec<(Instance, PolledInstance)> = Vec::new();
        for inst in config.collectors.iter().filter(|i| i.enabled) {
            if let Some((i, p)) = self.polled.iter().find(|(i, _)| i == inst) {
                polled.push((i.clone(), p.clone()));
            } else if let Some((i, p)) = new_polled.iter().find(|(i, _)| i == inst) {
                polled.push((i.clone(), p.clone()));
            }
        }
        let polled_changed = polled.len() != self.polled.len()
            || polled.iter().zip(&self.polled).any(|(a, b)| a.0 != b.0);

        let mut new_sinks = Vec::new();
        let mut routes = HttpRoutes::new();
        for inst in config.sinks.iter().filter(|i| i.enabled) {
            if let Some(s) = self.sinks.iter().find(|s| s.inst == *inst) {
                if let Err(e) = routes.merge(s.routes.clone()) {
                    diags.push(config.diagnostic(&inst.path, &[], e));
                }
                continue;
            }
            if let Some((sink, own)) = pipeline::build_sink(
                &config,
                &self.registry,
                &env,
                inst,
                self.live.clone(),
                &mut diags,
            ) {
                if let Err(e) = routes.merge(own.clone()) {
                    diags.push(config.diagnostic(&inst.path, &[], e));
                }
                new_sinks.push((inst.clone(), sink, own));
            }
        }
        if !diags.is_empty() {
            return Err(pipeline::errors(&config, diags));
        }
        // 2. Open what the new sinks need; any failure leaves everything as it was.
        for (inst, sink, _) in &mut new_sinks {
            if let Err(e) = sink.start().await {
                diags.push(config.diagnostic(&inst.path, &e.path, e.message));
            }
        }
        if !diags.is_empty() {
            return Err(pipeline::errors(&config, diags));
        }
        // The new router, before anything stops (a web config error keeps everything).
        let router = match &self.http {
            Some(http) => Some((http.make_router)(routes, &config).map_err(|message| {
                pipeline::errors(&config, vec![config.diagnostic(&[], &[], message)])
            })?),
            None => None,
        };

        // 3. Commit: stop what is gone or changed.
        let mut changes = Changes::default();
        let mut stopping = Vec::new();
        let keep_sinks: Vec<bool> = self
            .sinks
            .iter()
            .map(|s| config.sinks.iter().any(|i| i.enabled && *i == s.inst))
            .collect();
        let mut kept_sinks = Vec::new();
        for (s, keep) in std::mem::take(&mut self.sinks).into_iter().zip(keep_sinks) {
            if keep {
                kept_sinks.push(s);
            } else {
                changes.stopped.push(format!("sinks.{}", s.inst.id));
                s.stop.cancel();
                stopping.push(s.task);
            }
        }
        let mut kept_sources = Vec::new();
        for s in std::mem::take(&mut self.sources) {
            if config.collectors.iter().any(|i| i.enabled && *i == s.inst) {
                kept_sources.push(s);
            } else {
                changes.stopped.push(format!("collectors.{}", s.inst.id));
                s.stop.cancel();
                stopping.push(s.task);
            }
        }
        for inst in old_polled
            .iter()
            .filter(|i| !polled.iter().any(|(p, _)| p == *i))
        {
            changes.stopped.push(format!("collectors.{}", inst.id));
        }
        changes.kept = kept_sinks.len()
            + kept_sources.len()
            + polled.iter().filter(|(i, _)| same(&old_polled, i)).count();
        // A changed sink's replacement may use the same file or port: let the old one
        // finish first (bounded).
        let _ = tokio::time::timeout(STOP_GRACE, futures::future::join_all(stopping)).await;

        // 4. Start the new sinks (before anything new publishes), then the sources.
        self.sinks = kept_sinks;
        for (inst, sink, own) in new_sinks {
            let id: Arc<str> = Arc::from(inst.id.as_str());
            let stop = self.shutdown.child_token();
            let input = SinkInput {
                id: id.clone(),
                records: self.bus.subscribe(self.health.sink(&id)),
                shutdown: stop.clone(),
            };
            let task = self.spawner.spawn(async move {
                if let Err(e) = sink.run(input).await {
                    tracing::error!(sink = %id, error = %e, "sink stopped with an error");
                }
            });
            changes.started.push(format!("sinks.{}", inst.id));
            self.sinks.push(RunningSink {
                inst,
                routes: own,
                stop,
                task,
            });
        }
        // Config order, so routes and logs are stable.
        self.sinks.sort_by_key(|s| {
            config
                .sinks
                .iter()
                .position(|i| i.id == s.inst.id)
                .unwrap_or(usize::MAX)
        });
        self.sources = kept_sources;
        for (inst, source) in new_sources {
            let id: Arc<str> = Arc::from(inst.id.as_str());
            let stop = self.shutdown.child_token();
            let cx = SourceContext {
                id: id.clone(),
                hypervisor: self.hv.clone(),
                bus: self.bus.clone(),
                shutdown: stop.clone(),
            };
            let task = self.spawner.spawn(async move {
                if let Err(e) = source.run(cx).await {
                    tracing::error!(collector = %id, error = %e, "event source stopped with an error");
                }
            });
            changes.started.push(format!("collectors.{}", inst.id));
            self.sources.push(RunningSource { inst, stop, task });
        }
        // 5. The polled collectors: one scheduler for the whole set, restarted when the
        //    set changed; unchanged collectors keep their objects (and their state).
        if polled_changed || self.scheduler.is_none() {
            for (inst, _) in &polled {
                if !same(&old_polled, inst) {
                    changes.started.push(format!("collectors.{}", inst.id));
                }
            }
            if let Some((stop, tasks)) = self.scheduler.take() {
                stop.cancel();
                let _ = tokio::time::timeout(STOP_GRACE, futures::future::join_all(tasks)).await;
            }
            let set: Vec<PolledInstance> = polled.iter().map(|(_, p)| p.clone()).collect();
            self.live.replace_instances(set.clone());
            let stop = self.shutdown.child_token();
            let tasks = scheduler::spawn(
                &self.spawner,
                set,
                self.live.bulk(),
                self.bus.clone(),
                self.health.clone(),
                stop.clone(),
            );
            self.scheduler = Some((stop, tasks));
        }
        self.polled = polled;

        // 6. The HTTP side.
        if let (Some(http), Some(router)) = (&self.http, router) {
            *http.router.write().unwrap_or_else(|e| e.into_inner()) = router;
        }
        self.config = Some(config);
        Ok(changes)
    }

    /// Re-reads the web config's TLS certificates into the running server (when it
    /// speaks TLS); errors keep the old ones.
    pub fn reload_tls(&self, web_config_file: Option<&std::path::Path>) -> Result<(), String> {
        let Some(sender) = self.http.as_ref().and_then(|h| h.tls.as_ref()) else {
            return Ok(());
        };
        let Some(path) = web_config_file else {
            return Err("TLS was on at start and the web config file is gone: keeping the certificates (restart to turn TLS off)".into());
        };
        let web = crate::web_config::load(path).map_err(|e| e.to_string())?;
        match &web.tls_server_config {
            Some(t) => {
                sender.send_replace(crate::tls::server_config(t)?);
                Ok(())
            }
            None => Err(
                "TLS was on at start: keeping the certificates (restart to turn TLS off)".into(),
            ),
        }
    }

    /// Every task of the pipeline, to wait for at shutdown.
    pub fn into_tasks(self) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<JoinHandle<()>> = self.sinks.into_iter().map(|s| s.task).collect();
        tasks.extend(self.sources.into_iter().map(|s| s.task));
        if let Some((_, t)) = self.scheduler {
            tasks.extend(t);
        }
        tasks
    }
}
