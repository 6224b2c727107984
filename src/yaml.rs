//! YAML → JSON with locations. The config file is parsed once with serde-saphyr into a
//! tree whose every key and value carries its line and column; the tree becomes a
//! `serde_json::Value` for typed decoding, and a [`Locations`] index maps any key path
//! back to the file position for error messages.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A 1-based position in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

fn pos(loc: &serde_saphyr::Location) -> Position {
    Position {
        line: loc.line(),
        column: loc.column(),
    }
}

/// Positions of keys and values by key path (`["sinks", "rest", "retention"]`).
#[derive(Debug, Default)]
pub struct Locations {
    keys: HashMap<Vec<String>, Position>,
    values: HashMap<Vec<String>, Position>,
}

impl Locations {
    /// Where the key at `path` is written (falls back to its closest ancestor).
    pub fn key(&self, path: &[String]) -> Position {
        self.lookup(&self.keys, path)
    }

    /// Where the value at `path` is written (falls back to its closest ancestor).
    pub fn value(&self, path: &[String]) -> Position {
        self.lookup(&self.values, path)
    }

    fn lookup(&self, map: &HashMap<Vec<String>, Position>, path: &[String]) -> Position {
        let mut p = path.to_vec();
        loop {
            if let Some(pos) = map.get(&p).or_else(|| self.values.get(&p)) {
                return *pos;
            }
            if p.pop().is_none() {
                return Position { line: 1, column: 1 };
            }
        }
    }
}

enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML syntax error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// A parsed document: the JSON value, where everything is, and duplicate-key problems.
pub type Parsed = (Value, Locations, Vec<(Position, String)>);

/// Parses YAML text into JSON plus the locations of every key and value. Duplicate keys
/// are reported as errors (third element) rather than silently overwritten.
pub fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    if text.trim().is_empty() {
        return Ok((
            Value::Object(Default::default()),
            Locations::default(),
            Vec::new(),
        ));
    }
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
        let position = e.location().map(|l| pos(&l)).unwrap_or_default();
        let message = e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .to_string();
        SyntaxError { position, message }
    })?;
    let mut locs = Locations::default();
    let mut dups = Vec::new();
    let mut path = Vec::new();
    locs.values.insert(Vec::new(), pos(&root.referenced));
    let value = match convert(root.value, &mut path, &mut locs, &mut dups) {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    Ok((value, locs, dups))
}

fn convert(
    node: Node,
    path: &mut Vec<String>,
    locs: &mut Locations,
    dups: &mut Vec<(Position, String)>,
) -> Value {
    match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(i.to_string());
                    locs.values.insert(path.clone(), pos(&item.referenced));
                    let v = convert(item.value, path, locs, dups);
                    path.pop();
                    v
                })
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                let name = key.value.0;
                path.push(name.clone());
                if map.contains_key(&name) {
                    dups.push((pos(&key.referenced), format!("duplicate key `{name}`")));
                }
                locs.keys.insert(path.clone(), pos(&key.referenced));
                locs.values.insert(path.clone(), pos(&value.referenced));
                let v = convert(value.value, path, locs, dups);
                path.pop();
                map.insert(name, v);
            }
            Value::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn converts_and_locates() {
        let text = "libvirt:\n  uri: test:///default\nsinks:\n  rest:\n    max_samples: 10\n  statsd/b: {port: 8125}\n";
        let (v, locs, dups) = parse(text).unwrap();
        assert!(dups.is_empty());
        assert_eq!(v["sinks"]["rest"]["max_samples"], 10);
        assert_eq!(v["sinks"]["statsd/b"]["port"], 8125);
        assert_eq!(
            locs.key(&p(&["sinks", "rest", "max_samples"])),
            Position { line: 5, column: 5 }
        );
        assert_eq!(
            locs.value(&p(&["sinks", "rest", "max_samples"])),
            Position {
                line: 5,
                column: 18
            }
        );
        assert_eq!(locs.key(&p(&["sinks", "statsd/b", "port"])).line, 6);
        // Unknown paths fall back to the closest ancestor.
        assert_eq!(
            locs.key(&p(&["sinks", "rest", "nothing"])),
            Position { line: 4, column: 3 }
        );
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.position.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn empty_file_is_an_empty_map() {
        let (v, _, _) = parse("# only a comment\n").unwrap();
        assert_eq!(v, serde_json::json!({}));
    }
}
