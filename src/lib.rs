//! The vadvisor core: configuration, pipeline assembly, scheduler, HTTP server and the
//! agent's life cycle. A custom agent binary with extra plugins calls [`main_with`]
//! with a registry that holds the built-ins plus its own.

pub mod app;
pub mod auth;
pub mod builtins;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod connections;
pub mod deadline_join;
pub mod healthcheck;
pub mod http;
pub mod limits;
pub mod memory_trim;
pub mod metrics_doc;
pub mod parse_errors;
pub mod pipeline;
pub mod pipeline_thread;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod tls;
pub mod web_config;
pub mod write_timeout;
pub mod yaml;

use clap::Parser;
use vadvisor_api::Registry;

/// How long an idle blocking thread (libvirt and SQLite calls) is kept for the next call.
/// Longer than the host collector's default 5 s interval, so its thread is reused
/// rather than made anew for every run (a tick's bulk call needs no blocking thread).
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(11);

/// The agent's HTTP runtime: two worker threads serve requests and streams — one thread
/// alone could not keep 100 event streams flowing in the load test (tests/load.rs). The
/// scheduler, sinks and event sources run on the pipeline thread
/// ([`pipeline_thread`]). libvirt and SQLite calls never run on either but on blocking
/// threads, made on demand and ended after [`BLOCKING_KEEP_ALIVE`] idle. The thread
/// count does not grow with the host's cores. (Measured in docs/performance.md.)
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("vadvisor-blocking")
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
}

/// Parses the command line, sets up logging and runs the agent with `registry`.
/// Returns the process exit code: 0, 1 on a runtime failure, 2 on an invalid config.
pub fn main_with(registry: Registry) -> i32 {
    // Before any thread starts: malloc's thresholds fixed so that a thread's arena does
    // not keep freed response bodies resident (vadvisor_libvirt::ffi::keep_free_heap_small).
    let heap_thresholds_fixed = vadvisor_libvirt::ffi::keep_free_heap_small();
    let args = cli::Args::parse();
    let default_level = if args.verbose {
        "vadvisor=debug,info"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VADVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    tracing::debug!(
        fixed = heap_thresholds_fixed,
        trim_threshold = vadvisor_libvirt::ffi::HEAP_TRIM_THRESHOLD,
        mmap_threshold = vadvisor_libvirt::ffi::HEAP_MMAP_THRESHOLD,
        "malloc thresholds (fixed=false: the environment sets them, or the C library is not glibc)"
    );

    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let pipeline = match pipeline_thread::PipelineThread::start(BLOCKING_KEEP_ALIVE) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot start the pipeline thread: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(app::run(args, registry, pipeline.handle().clone()));
    // Its tasks have finished or are dropped now; blocking work still running there is
    // waited for at most half a second.
    drop(pipeline);
    // Do not wait for blocking threads stuck in libvirt calls or for stuck connections.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(app::Exit::Ok) => 0,
        Ok(app::Exit::Config(errors)) => {
            eprintln!("{errors}");
            2
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
