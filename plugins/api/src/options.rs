//! Plugin options: the part of a plugin instance's YAML block that belongs to the
//! plugin. A plugin decodes it into its own typed struct (use
//! `#[serde(deny_unknown_fields)]`); errors carry the path of the offending key so the
//! core can point at the file, line and column.

use serde::de::DeserializeOwned;

/// An error in a plugin's options, located by its key path within the options.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    /// Keys from the options' root to the offending value (empty: the block itself).
    pub path: Vec<String>,
    pub message: String,
}

impl OptionError {
    /// An error about the value at `path` (e.g. `&["port"]`).
    pub fn at(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }

    /// An error about the whole options block.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
        }
    }
}

/// A plugin instance's raw options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginOptions {
    value: serde_json::Value,
}

impl PluginOptions {
    pub fn new(value: serde_json::Value) -> Self {
        Self { value }
    }

    pub fn raw(&self) -> &serde_json::Value {
        &self.value
    }

    /// Decodes the options into the plugin's own type. An empty block decodes as `{}`.
    /// Returns the first error; see [`PluginOptions::decode_all`] for all of them.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, OptionError> {
        self.decode_all()
            .map_err(|mut errors| errors.swap_remove(0))
    }

    /// Decodes the options, reporting every bad key: after each error the offending key
    /// is set aside and decoding is retried (for types with `#[serde(default)]`).
    pub fn decode_all<T: DeserializeOwned>(&self) -> Result<T, Vec<OptionError>> {
        let mut value = match &self.value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v.clone(),
        };
        let mut errors = Vec::new();
        for _ in 0..64 {
            match decode_once::<T>(value.clone()) {
                Ok(v) if errors.is_empty() => return Ok(v),
                Ok(_) => return Err(errors),
                Err(e) => {
                    let removable = !e.path.is_empty() && !e.message.starts_with("missing field");
                    if removable && remove_path(&mut value, &e.path) && !errors.contains(&e) {
                        errors.push(e);
                        continue;
                    }
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                    return Err(errors);
                }
            }
        }
        Err(errors)
    }
}

fn remove_path(value: &mut serde_json::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = value;
    for p in parents {
        cur = match cur {
            serde_json::Value::Object(m) => match m.get_mut(p) {
                Some(v) => v,
                None => return false,
            },
            serde_json::Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i))
            {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        serde_json::Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

fn decode_once<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, OptionError> {
    {
        serde_path_to_error::deserialize(value).map_err(|err| {
            let mut path: Vec<String> = err
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    _ => None,
                })
                .collect();
            let message = err.into_inner().to_string();
            // serde reports an unknown field at its parent; point at the key itself.
            if let Some(field) = unknown_field_name(&message) {
                if path.last() != Some(&field) {
                    path.push(field);
                }
            }
            OptionError { path, message }
        })
    }
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// A change to one sink instance of the pipeline file made from outside the file
/// (a command-line flag a plugin defines). The core applies it without knowing what
/// the options mean.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceOverride {
    /// Instance id (`statsd`).
    pub id: String,
    /// Plugin type, for an instance created here.
    pub kind: String,
    /// Create the instance when the file has none.
    pub create: bool,
    /// Turn the instance on.
    pub enable: bool,
    /// Option values set on the instance, replacing the file's.
    pub set: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Opts {
        port: u16,
        nested: Nested,
    }

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        size: u32,
    }

    #[test]
    fn empty_block_decodes_to_defaults() {
        let o: Opts = PluginOptions::new(serde_json::Value::Null)
            .decode()
            .unwrap();
        assert_eq!(o, Opts::default());
    }

    #[test]
    fn decode_all_reports_every_bad_key() {
        let errs =
            PluginOptions::new(serde_json::json!({"port": "x", "nested": {"sise": 1}, "zz": 1}))
                .decode_all::<Opts>()
                .unwrap_err();
        let paths: Vec<String> = errs.iter().map(|e| e.path.join(".")).collect();
        assert_eq!(errs.len(), 3, "{paths:?}");
        assert!(paths.contains(&"port".to_string()));
        assert!(paths.contains(&"nested.sise".to_string()));
        assert!(paths.contains(&"zz".to_string()));
    }

    #[test]
    fn errors_carry_the_path_and_valid_choices() {
        let err = PluginOptions::new(serde_json::json!({"nested": {"sise": 1}}))
            .decode::<Opts>()
            .unwrap_err();
        assert_eq!(err.path, vec!["nested", "sise"]);
        assert!(err.message.contains("expected `size`"), "{}", err.message);

        let err = PluginOptions::new(serde_json::json!({"port": "x"}))
            .decode::<Opts>()
            .unwrap_err();
        assert_eq!(err.path, vec!["port"]);
        assert!(err.message.contains("expected u16"), "{}", err.message);
    }
}
