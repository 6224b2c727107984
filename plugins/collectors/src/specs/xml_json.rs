//! Domain XML → JSON with vAdvisor's rules (vadvisor-reference §6), its data losses fixed.
//!
//! The document is read with quick-xml's streaming [`NsReader`] into a small element
//! tree, which is then turned into JSON:
//!
//! - the result is `{"<root tag>": {...}}`; an element is an object of its attributes
//!   (strings) and its children (keys = tag names); non-blank text is `"value"`;
//!   empty elements are `{}`; namespaced names are in Clark notation `{uri}local`;
//! - the attributes `index`, `port`, `startport` and `vram`, and the text of `<memory>`
//!   and `<currentMemory>`, are integers (kept as strings when they are not integers);
//! - `<devices>` is a list of `{"family": "<tag>", ...}`; its `<emulator>` is hoisted
//!   into the object that holds `devices`; `<clock>` is the list of its children's
//!   objects (the timers).
//!
//! Differences from vAdvisor, all additive or lossless (documented in docs/api.md):
//!
//! 1. Repeated sibling elements become a JSON list in document order instead of the
//!    last one overwriting the others (`"boot": [{"dev": "hd"}, {"dev": "cdrom"}]`).
//!    A single element keeps the object shape.
//! 2. `<clock>`'s own attributes, which vAdvisor drops, are kept beside the list as
//!    `"clock_attributes": {"offset": "utc"}`; `"clock"` keeps vAdvisor's list shape.
//! 3. A child element named like an attribute of its parent keeps vAdvisor's shape (the
//!    key holds the child) and the attribute moves to `"@<name>"` instead of being lost
//!    (graphics `listen='127.0.0.1'` + `<listen .../>` → `"@listen": "127.0.0.1"`). The
//!    same holds for text vs. an attribute named `value`, and for a device attribute or
//!    child named `family`. `@` cannot start an XML name, so these keys never collide.
//! 4. Text is the concatenation of all the element's own text pieces (vAdvisor kept the
//!    last chunk the parser delivered, which could cut text at entity references).
//! 5. Malformed XML is an error instead of an exception; nesting deeper than
//!    [`MAX_DEPTH`] is refused; nothing panics.

use std::collections::HashSet;
use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::{NsReader, XmlVersion};
use serde_json::{Map, Value};

/// Deepest element nesting accepted (libvirt's domain XML stays below 20).
pub const MAX_DEPTH: usize = 256;

/// Attributes whose value is an integer anywhere in the tree.
const INT_ATTRIBUTES: [&str; 4] = ["index", "port", "startport", "vram"];
/// Elements whose text is an integer.
const INT_TEXT: [&str; 2] = ["memory", "currentMemory"];

/// Why a document could not be converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlJsonError(pub String);

impl fmt::Display for XmlJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid domain XML: {}", self.0)
    }
}

impl std::error::Error for XmlJsonError {}

fn err(message: impl Into<String>) -> XmlJsonError {
    XmlJsonError(message.into())
}

/// One element as read from the document.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

/// Converts a domain XML document to vAdvisor's JSON shape (see the module docs).
pub fn convert(xml: &str) -> Result<Value, XmlJsonError> {
    let root = parse(xml)?;
    let mut top = Obj::default();
    add_child(&mut top, &root);
    Ok(Value::Object(top.map))
}

fn parse(xml: &str) -> Result<Node, XmlJsonError> {
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| err(format!("{e} (at byte {})", reader.error_position())))?;
        match event {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                return Err(err(format!(
                    "element <{}> after the root element",
                    e.name().as_ref()
                )));
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                stack.push(open(&reader, &e)?);
            }
            Event::Empty(e) => {
                let node = open(&reader, &e)?;
                attach(&mut stack, &mut root, node);
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| err("end tag without a start tag"))?;
                attach(&mut stack, &mut root, node);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("unknown entity &{};", r.xml10_content())))?,
                    Err(e) => return Err(err(format!("bad character reference: {e}"))),
                };
                push_text(&mut stack, &text)?;
            }
            Event::Eof => break,
            // Declarations, comments, processing instructions, DOCTYPE: not content.
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(err(format!("element <{}> is not closed", open.name)));
    }
    root.ok_or_else(|| err("no root element"))
}

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], text: &str) -> Result<(), XmlJsonError> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(err("text outside the root element")),
    }
}

/// `{uri}local` for a namespaced name, `local` otherwise.
fn clark(
    resolved: ResolveResult<'_>,
    local: &str,
    qname: QName<'_>,
) -> Result<String, XmlJsonError> {
    match resolved {
        ResolveResult::Unbound => Ok(local.to_string()),
        ResolveResult::Bound(ns) => Ok(format!("{{{}}}{local}", ns.as_ref())),
        ResolveResult::Unknown(prefix) => Err(err(format!(
            "`{}` uses the undeclared namespace prefix `{prefix}`",
            qname.as_ref()
        ))),
    }
}

fn open(reader: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Result<Node, XmlJsonError> {
    let resolver = reader.resolver();
    let (ns, local) = resolver.resolve_element(e.name());
    let name = clark(ns, local.as_ref(), e.name())?;
    let mut attributes = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|e| err(format!("bad attribute in <{name}>: {e}")))?;
        let key = attr.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (ns, local) = resolver.resolve_attribute(attr.key);
        let key = clark(ns, local.as_ref(), attr.key)?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| err(format!("bad value of {key} in <{name}>: {e}")))?;
        attributes.push((key, value.into_owned()));
    }
    Ok(Node {
        name,
        attributes,
        children: Vec::new(),
        text: String::new(),
    })
}

/// An integer when `s` is one (Python's `int()` accepts surrounding blanks too).
fn integer(s: &str) -> Option<Value> {
    let t = s.trim();
    t.parse::<i64>()
        .map(Value::from)
        .or_else(|_| t.parse::<u64>().map(Value::from))
        .ok()
}

fn attribute_value(key: &str, value: &str) -> Value {
    if INT_ATTRIBUTES.contains(&key) {
        if let Some(n) = integer(value) {
            return n;
        }
    }
    Value::String(value.to_string())
}

/// An object under construction that knows which keys hold attributes and which hold
/// lists of repeated siblings.
#[derive(Default)]
struct Obj {
    map: Map<String, Value>,
    attributes: HashSet<String>,
    lists: HashSet<String>,
}

impl Obj {
    fn attribute(&mut self, key: &str, value: Value) {
        self.attributes.insert(key.to_string());
        self.map.insert(key.to_string(), value);
    }

    /// Adds a child (or text) under `key`: an attribute of that name moves to `@key`;
    /// a second child of that name turns the key into a list.
    fn child(&mut self, key: &str, value: Value) {
        if self.attributes.remove(key) {
            if let Some(attr) = self.map.remove(key) {
                self.map.insert(format!("@{key}"), attr);
            }
        }
        let repeated = self.lists.contains(key);
        match self.map.get_mut(key) {
            None => {
                self.map.insert(key.to_string(), value);
            }
            Some(Value::Array(items)) if repeated => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
                self.lists.insert(key.to_string());
            }
        }
    }
}

fn element(node: &Node) -> Map<String, Value> {
    let mut obj = Obj::default();
    for (key, value) in &node.attributes {
        obj.attribute(key, attribute_value(key, value));
    }
    if !node.text.trim().is_empty() {
        let value = match INT_TEXT
            .contains(&node.name.as_str())
            .then(|| integer(&node.text))
            .flatten()
        {
            Some(n) => n,
            None => Value::String(node.text.clone()),
        };
        obj.child("value", value);
    }
    for child in &node.children {
        add_child(&mut obj, child);
    }
    obj.map
}

fn attributes_only(node: &Node) -> Map<String, Value> {
    node.attributes
        .iter()
        .map(|(k, v)| (k.clone(), attribute_value(k, v)))
        .collect()
}

/// A direct child of `<devices>`: its object plus `"family": "<tag>"`.
fn device(node: &Node) -> Value {
    let mut map = element(node);
    if let Some(own) = map.remove("family") {
        map.insert("@family".to_string(), own);
    }
    map.insert("family".to_string(), Value::String(node.name.clone()));
    Value::Object(map)
}

fn add_child(parent: &mut Obj, child: &Node) {
    match child.name.as_str() {
        "devices" => {
            // `<devices>`' own attributes and text are dropped, as in vAdvisor (libvirt
            // defines none).
            let mut list = Vec::with_capacity(child.children.len());
            for d in &child.children {
                if d.name == "emulator" {
                    parent.child("emulator", Value::Object(element(d)));
                } else {
                    list.push(device(d));
                }
            }
            parent.child("devices", Value::Array(list));
        }
        "clock" => {
            let timers = child
                .children
                .iter()
                .map(|t| Value::Object(element(t)))
                .collect();
            parent.child("clock", Value::Array(timers));
            if !child.attributes.is_empty() {
                parent.child("clock_attributes", Value::Object(attributes_only(child)));
            }
        }
        name => parent.child(name, Value::Object(element(child))),
    }
}

#[cfg(test)]
mod tests;
