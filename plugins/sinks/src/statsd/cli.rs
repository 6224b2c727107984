//! vAdvisor's `--statsd-host/--statsd-port/--statsd-interval` flags. The agent
//! flattens [`StatsdFlags`] into its command line and applies [`StatsdFlags::overrides`]
//! to the pipeline file: they set the options of the `statsd` sink instance, or create
//! it when `--statsd-host` is given.

use vadvisor_api::InstanceOverride;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct StatsdFlags {
    /// Push to this StatsD host (vAdvisor's flag: turns the `statsd` sink on, overriding
    /// its `host` in the config file).
    #[arg(long, value_name = "HOST")]
    pub statsd_host: Option<String>,

    /// StatsD port (default 8125).
    #[arg(long, value_name = "PORT")]
    pub statsd_port: Option<u16>,

    /// Seconds between StatsD pushes (default 15).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub statsd_interval: Option<u64>,
}

impl StatsdFlags {
    /// The change the flags make to the `statsd` instance; `None` without flags.
    pub fn overrides(&self) -> Option<InstanceOverride> {
        if self.statsd_host.is_none()
            && self.statsd_port.is_none()
            && self.statsd_interval.is_none()
        {
            return None;
        }
        let mut set = serde_json::Map::new();
        if let Some(host) = &self.statsd_host {
            set.insert("host".into(), host.clone().into());
        }
        if let Some(port) = self.statsd_port {
            set.insert("port".into(), port.into());
        }
        if let Some(secs) = self.statsd_interval {
            set.insert("interval".into(), format!("{secs}s").into());
        }
        Some(InstanceOverride {
            id: "statsd".into(),
            kind: "statsd".into(),
            create: self.statsd_host.is_some(),
            enable: self.statsd_host.is_some(),
            set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_one_override_of_the_statsd_instance() {
        assert_eq!(StatsdFlags::default().overrides(), None);
        let o = StatsdFlags {
            statsd_host: Some("stats.example".into()),
            statsd_port: Some(9125),
            statsd_interval: Some(5),
        }
        .overrides()
        .expect("an override");
        assert!(o.create && o.enable);
        assert_eq!(o.set["host"], "stats.example");
        assert_eq!(o.set["port"], 9125);
        assert_eq!(o.set["interval"], "5s");
        let port_only = StatsdFlags {
            statsd_port: Some(1),
            ..Default::default()
        }
        .overrides()
        .expect("an override");
        assert!(!port_only.create && !port_only.enable);
    }
}
