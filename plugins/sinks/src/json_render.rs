//! Renders samples into vAdvisor's nested JSON sample shape, driven only by each
//! metric's declared JSON path and unit — so third-party collectors appear in the REST
//! API without any change here. Values are prepared once (converted, placed) when a
//! batch arrives and kept in that compact form; JSON text is written from them by
//! [`crate::json_write`]. [`place`], the `serde_json::Value` renderer that defined the
//! output, is kept for tests as the reference the writer must match byte for byte.

use std::collections::HashMap;
#[cfg(test)]
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};

#[cfg(test)]
use serde_json::{Map, Value};
#[cfg(test)]
use vadvisor_api::metric::JsonSegment;
use vadvisor_api::{JsonPath, Labels, MetricDesc, Sample};

/// A value ready to be placed in JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonScalar {
    Int(i64),
    Float(f64),
    Str(&'static str),
}

#[cfg(test)]
impl JsonScalar {
    fn to_value(&self) -> Value {
        match *self {
            JsonScalar::Int(i) => Value::from(i),
            JsonScalar::Float(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            JsonScalar::Str(s) => Value::from(s),
        }
    }
}

/// One sample in its compact, placeable form. Preparing, cloning and dropping one
/// touches at most one reference count (its labels').
#[derive(Clone, Debug)]
pub struct PreparedValue {
    pub(crate) path: &'static JsonPath,
    /// Label values for the path's list segments, in order: the sample's own labels
    /// (shared, not copied) when they are in that order already, as they nearly
    /// always are.
    pub(crate) keys: Labels,
    pub(crate) value: JsonScalar,
}

/// A declared JSON path, parsed once for the whole process. Declarations are
/// `'static` text, so the parsed paths kept are bounded by the metrics the program
/// declares, however many stores and live renders prepare values.
fn interned_path(raw: &'static str) -> Option<&'static JsonPath> {
    type Paths = Mutex<HashMap<&'static str, Option<&'static JsonPath>>>;
    static PATHS: OnceLock<Paths> = OnceLock::new();
    let mut paths = PATHS
        .get_or_init(Paths::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    *paths.entry(raw).or_insert_with(|| {
        JsonPath::parse(raw)
            .ok()
            .map(|path| &*Box::leak(Box::new(path)))
    })
}

/// Converts samples to [`PreparedValue`]s.
#[derive(Default)]
pub struct Preparer;

impl Preparer {
    pub fn new() -> Self {
        Self
    }

    fn path(&self, raw: &'static str) -> Option<&'static JsonPath> {
        interned_path(raw)
    }

    /// The parsed JSON paths of `metrics`, by metric index, each with where its list
    /// labels sit among the metric's labels: looked up once per batch, not once per
    /// value. A path naming a label the metric does not declare places nothing.
    pub fn plan(&self, metrics: &[MetricDesc]) -> PathPlan {
        PathPlan(
            metrics
                .iter()
                .map(|desc| match desc.json {
                    Some(json) => std::iter::once(json.path)
                        .chain(desc.json_also)
                        .filter_map(|raw| self.path(raw))
                        .filter_map(|path| {
                            let positions = path
                                .labels()
                                .map(|label| desc.labels.iter().position(|l| *l == label))
                                .collect::<Option<LabelPositions>>()?;
                            Some((path, positions))
                        })
                        .collect(),
                    None => Vec::new(),
                })
                .collect(),
        )
    }

    /// Prepares the samples that have a JSON placement; others are skipped.
    pub fn prepare(
        &self,
        metrics: &[MetricDesc],
        samples: &[Sample],
        out: &mut Vec<PreparedValue>,
    ) {
        prepare_with(&self.plan(metrics), metrics, samples, out);
    }
}

/// [`Preparer::plan`]'s answer: the JSON paths of each metric of one batch, each with
/// the positions of its list labels among the metric's labels.
pub struct PathPlan(Vec<Vec<(&'static JsonPath, LabelPositions)>>);

/// Where a path's list labels sit among its metric's labels (paths have at most two).
type LabelPositions = smallvec::SmallVec<[usize; 2]>;

/// [`Preparer::prepare`] with the batch's paths already looked up.
pub fn prepare_with(
    plan: &PathPlan,
    metrics: &[MetricDesc],
    samples: &[Sample],
    out: &mut Vec<PreparedValue>,
) {
    for sample in samples {
        let index = sample.metric as usize;
        let (Some(desc), Some(paths)) = (metrics.get(index), plan.0.get(index)) else {
            continue;
        };
        let Some(json) = desc.json else { continue };
        let value = scalar(desc, json.unit, sample.value);
        for (path, positions) in paths {
            let Some(keys) = keys_of(&sample.labels, positions) else {
                continue;
            };
            out.push(PreparedValue {
                path,
                keys,
                value: value.clone(),
            });
        }
    }
}

/// The labels at `positions`, in that order: `labels` itself (shared) when they are
/// all of them in order; `None` when one is missing.
fn keys_of(labels: &Labels, positions: &[usize]) -> Option<Labels> {
    if positions.is_empty() {
        return Some(Labels::NONE);
    }
    let in_order =
        positions.len() == labels.len() && positions.iter().enumerate().all(|(i, &p)| i == p);
    if in_order {
        return Some(labels.clone());
    }
    positions
        .iter()
        .map(|&i| labels.get(i).cloned())
        .collect::<Option<Vec<_>>>()
        .map(Labels::from)
}

fn scalar(desc: &MetricDesc, unit: vadvisor_api::Unit, raw: f64) -> JsonScalar {
    if !desc.states.is_empty() {
        let name = if raw >= 0.0 {
            desc.states.get(raw as usize).copied()
        } else {
            None
        };
        return JsonScalar::Str(name.unwrap_or("Unknown"));
    }
    let v = desc.unit.convert(raw, unit);
    if unit.is_integral() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        JsonScalar::Int(v as i64)
    } else {
        JsonScalar::Float(v)
    }
}

/// Places prepared values into `root` (a JSON object).
#[cfg(test)]
pub fn place(root: &mut Map<String, Value>, values: &[PreparedValue]) {
    for v in values {
        place_one(root, &v.path.segments, &v.keys, v.value.to_value());
    }
}

#[cfg(test)]
fn place_one(
    obj: &mut Map<String, Value>,
    segments: &[JsonSegment],
    keys: &[Arc<str>],
    value: Value,
) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match first {
        JsonSegment::Key(k) if rest.is_empty() => {
            obj.insert(k.clone(), value);
        }
        JsonSegment::Key(k) => {
            let child = obj
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                place_one(m, rest, keys, value);
            }
        }
        JsonSegment::Item {
            list, key, numeric, ..
        } => {
            let Some((label_value, other_keys)) = keys.split_first() else {
                return;
            };
            let key_value = if *numeric {
                label_value
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(&**label_value))
            } else {
                Value::from(&**label_value)
            };
            let arr = obj
                .entry(list.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !arr.is_array() {
                *arr = Value::Array(Vec::new());
            }
            let Value::Array(items) = arr else { return };
            let pos = items
                .iter()
                .position(|it| it.get(key.as_str()) == Some(&key_value));
            let idx = match pos {
                Some(i) => i,
                None => {
                    let mut m = Map::new();
                    m.insert(key.clone(), key_value);
                    items.push(Value::Object(m));
                    items.len() - 1
                }
            };
            if let Some(Value::Object(m)) = items.get_mut(idx) {
                place_one(m, rest, other_keys, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::Unit;

    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
            .json("cpu.usage.cpu_time", Unit::Milliseconds),
        MetricDesc::counter("vm_vcpu_time_seconds_total", "h", Unit::Nanoseconds)
            .labels(&["vcpu"])
            .json(
                "cpu.per_cpu_usage[index=#vcpu].vcpu_time",
                Unit::Milliseconds,
            ),
        MetricDesc::gauge("vm_vcpu_state", "h", Unit::None)
            .labels(&["vcpu"])
            .json("cpu.per_cpu_usage[index=#vcpu].state", Unit::None)
            .states(&["Offline", "Running", "Blocked"]),
        MetricDesc::counter("vm_disk_read_bytes_total", "h", Unit::Bytes)
            .labels(&["device"])
            .json("diskio[name=device].rd_bytes", Unit::Bytes),
        MetricDesc::gauge("vm_no_json", "h", Unit::Count),
    ];

    #[test]
    fn renders_vadvisor_shape() {
        let p = Preparer::new();
        let l = |s: &str| vec![Arc::<str>::from(s)];
        let samples = vec![
            Sample::new(0, 123_456_789_012.0),
            Sample::labelled(1, l("0"), 50_000_000_000.0),
            Sample::labelled(2, l("0"), 1.0),
            Sample::labelled(1, l("1"), 40_000_000_000.0),
            Sample::labelled(2, l("1"), 7.0),
            Sample::labelled(3, l("vda"), 409_600.0),
            Sample::labelled(3, l("hda"), 0.0),
            Sample::new(4, 1.0),
        ];
        let mut prepared = Vec::new();
        p.prepare(METRICS, &samples, &mut prepared);
        assert_eq!(
            prepared.len(),
            7,
            "the metric without JSON placement is skipped"
        );
        let mut root = Map::new();
        place(&mut root, &prepared);
        let v = Value::Object(root);
        assert_eq!(
            v,
            serde_json::json!({
                "cpu": {
                    "usage": {"cpu_time": 123456.789012},
                    "per_cpu_usage": [
                        {"index": 0, "vcpu_time": 50000.0, "state": "Running"},
                        {"index": 1, "vcpu_time": 40000.0, "state": "Unknown"}
                    ]
                },
                "diskio": [{"name": "vda", "rd_bytes": 409600}, {"name": "hda", "rd_bytes": 0}]
            })
        );
    }
}
