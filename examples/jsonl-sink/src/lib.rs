//! An example third-party sink: writes every sample and lifecycle event it receives as
//! one JSON object per line to a file (`{"ts":…,"uuid":…,"name":…,"metric":…,
//! "labels":{…},"value":…}`), rendering any collector from its metric declarations.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use vadvisor_api::{async_trait, Batch, OptionError, Record, Registry, Sink, SinkInput};

/// Options: `path` of the file lines are appended to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlOptions {
    pub path: PathBuf,
}

pub struct JsonlSink {
    path: PathBuf,
}

/// Registers the `jsonl` sink type.
pub fn register(registry: &mut Registry) {
    registry.add_sink(
        "jsonl",
        "Every sample and event as a JSON line in a file",
        |o: JsonlOptions, _cx| {
            if o.path.as_os_str().is_empty() {
                return Err(OptionError::at(&["path"], "must not be empty"));
            }
            Ok(Box::new(JsonlSink { path: o.path }))
        },
    );
}

/// The lines for one batch.
pub fn batch_lines(batch: &Batch) -> String {
    let ts = batch
        .at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut out = String::new();
    for ds in &batch.domains {
        for s in &ds.samples {
            let Some(desc) = batch.metrics.get(s.metric as usize) else {
                continue;
            };
            let labels: serde_json::Map<String, serde_json::Value> = desc
                .labels
                .iter()
                .zip(&s.labels)
                .map(|(k, v)| (k.to_string(), v.to_string().into()))
                .collect();
            let line = serde_json::json!({
                "ts": ts, "uuid": &*ds.domain.uuid, "name": &*ds.domain.name, "metric": desc.name,
                "labels": labels, "value": desc.unit.convert(s.value, desc.unit.base()),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    out
}

#[async_trait]
impl Sink for JsonlSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        loop {
            let record = tokio::select! {
                _ = input.shutdown.cancelled() => break,
                r = input.records.recv() => r,
            };
            let text = match record {
                Some(Record::Batch(b)) => batch_lines(&b),
                Some(Record::Event(e)) => {
                    format!(
                        "{}\n",
                        serde_json::json!({"event": e.event, "detail": e.detail, "uuid": &*e.domain.uuid})
                    )
                }
                Some(Record::Spec(_)) => continue,
                None => break,
            };
            file.write_all(text.as_bytes())
                .await
                .map_err(|e| format!("write {}: {e}", self.path.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;
    use vadvisor_api::{DomainRef, DomainSamples, MetricDesc, Sample, Unit};

    #[test]
    fn one_line_per_sample_in_base_units() {
        const M: &[MetricDesc] =
            &[MetricDesc::gauge("vm_mem_bytes", "h", Unit::Kibibytes).labels(&["kind"])];
        let mut ds = DomainSamples::new(DomainRef::new("u1", "vm1"));
        ds.samples
            .push(Sample::labelled(0, vec![Arc::from("rss")], 2.0));
        let batch = Batch {
            collector: "c".into(),
            metrics: M.into(),
            at: SystemTime::now(),
            domains: vec![ds],
            host: vec![],
        };
        let text = batch_lines(&batch);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["value"], 2048.0);
        assert_eq!(v["labels"]["kind"], "rss");
        assert_eq!(v["name"], "vm1");
    }
}
