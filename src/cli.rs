//! Command-line flags: vAdvisor's own (`--port`, `-v`) plus the config file and the
//! overrides that take precedence over it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser, Clone, Default)]
#[command(
    name = "vadvisor",
    version,
    about = "Monitors every VM on a libvirt host and exports what it sees"
)]
pub struct Args {
    /// Pipeline file (default /etc/vadvisor/config.yaml; built-in defaults when absent).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate FILE and exit: 0 when valid, 2 with every error otherwise.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,

    /// Print the built-in default config (config.example.yaml) and exit.
    #[arg(long)]
    pub print_default_config: bool,

    /// Print the metric reference (docs/metrics.md) generated from the collectors'
    /// declarations and exit.
    #[arg(long)]
    pub print_metrics_reference: bool,

    /// libvirt URI (overrides `libvirt.uri`); always opened read-only.
    #[arg(long, value_name = "URI")]
    pub libvirt_uri: Option<String>,

    /// HTTP listen address (overrides `http.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TLS and basic-auth file in Prometheus exporter-toolkit's format (overrides
    /// `http.web_config_file`).
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,

    /// Read a password on standard input, print its bcrypt hash (for
    /// `basic_auth_users`) and exit.
    #[arg(long)]
    pub hash_password: bool,

    /// HTTP port on the configured address (vAdvisor's flag; overrides the port of `http.listen`).
    #[arg(long)]
    pub port: Option<u16>,

    /// vAdvisor's `--statsd-*` flags, defined by the StatsD sink.
    #[command(flatten)]
    pub statsd: vadvisor_sinks::statsd::cli::StatsdFlags,

    /// Probe a running agent's /healthz and exit 0 (healthy) or 1 (for container
    /// HEALTHCHECKs). Default URL: the address the running agent recorded in
    /// /run/vadvisor/http-address, else http://127.0.0.1:<port of http.listen>/healthz.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub healthcheck: Option<String>,

    /// Debug logging.
    #[arg(short, long)]
    pub verbose: bool,
}
