//! YAML reading into a node tree that remembers lines, and a small YAML writer.
//!
//! Reading goes through `saphyr-parser` events (see the workspace `Cargo.toml`
//! for why). Every node keeps the line it starts on, so any later error that
//! knows a field path can also name the line. Plain scalars are resolved with
//! the YAML 1.2 core schema (`yes`/`on` stay strings, unlike YAML 1.1).

use std::collections::HashMap;
use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

use crate::path::{Path, Seg};

/// One YAML node with the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub kind: NodeKind,
}

/// The shape of a node. Mappings keep their key order and key lines.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// A YAML syntax problem, with the line it was found on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// A document of a multi-document stream: its root node.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Node,
}

/// What the parser builds: the line-keeping [`Node`] tree (for error
/// messages), or plain JSON values (the fast path for loading).
trait Tree: Clone {
    fn scalar(kind: NodeKind, line: usize) -> Self;
    fn seq(items: Vec<Self>, line: usize) -> Self;
    fn map(entries: Vec<(String, Self)>, line: usize) -> Self;
    /// The text of a scalar used as a mapping key; `None` for collections.
    fn key(self) -> Option<String>;
    /// The entries of a mapping, or the mappings of a sequence (for `<<`).
    fn merge_sources(self) -> Option<Vec<Vec<(String, Self)>>>;
    fn is_null(&self) -> bool;
}

fn scalar_key(kind: NodeKind) -> Option<String> {
    match kind {
        NodeKind::Str(s) => Some(s),
        NodeKind::Int(i) => Some(i.to_string()),
        NodeKind::Bool(b) => Some(b.to_string()),
        NodeKind::Float(f) => Some(f.to_string()),
        NodeKind::Null => Some("null".to_string()),
        NodeKind::Seq(_) | NodeKind::Map(_) => None,
    }
}

impl Tree for Node {
    fn scalar(kind: NodeKind, line: usize) -> Self {
        Node { line, kind }
    }
    fn seq(items: Vec<Self>, line: usize) -> Self {
        Node {
            line,
            kind: NodeKind::Seq(items),
        }
    }
    fn map(entries: Vec<(String, Self)>, line: usize) -> Self {
        Node {
            line,
            kind: NodeKind::Map(entries),
        }
    }
    fn key(self) -> Option<String> {
        scalar_key(self.kind)
    }
    fn merge_sources(self) -> Option<Vec<Vec<(String, Self)>>> {
        match self.kind {
            NodeKind::Map(m) => Some(vec![m]),
            NodeKind::Seq(items) => Some(
                items
                    .into_iter()
                    .filter_map(|n| match n.kind {
                        NodeKind::Map(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        self.kind == NodeKind::Null
    }
}

impl Tree for Value {
    fn scalar(kind: NodeKind, _: usize) -> Self {
        match kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(b),
            NodeKind::Int(i) => Value::Number(i.into()),
            NodeKind::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            NodeKind::Str(s) => Value::String(s),
            NodeKind::Seq(_) | NodeKind::Map(_) => Value::Null,
        }
    }
    fn seq(items: Vec<Self>, _: usize) -> Self {
        Value::Array(items)
    }
    fn map(entries: Vec<(String, Self)>, _: usize) -> Self {
        Value::Object(entries.into_iter().collect())
    }
    fn key(self) -> Option<String> {
        match self {
            Value::String(s) => Some(s),
            Value::Null => Some("null".to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Array(_) | Value::Object(_) => None,
        }
    }
    fn merge_sources(self) -> Option<Vec<Vec<(String, Self)>>> {
        match self {
            Value::Object(m) => Some(vec![m.into_iter().collect()]),
            Value::Array(items) => Some(
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Object(m) => Some(m.into_iter().collect()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        self.is_null()
    }
}

struct MapFrame<T> {
    line: usize,
    anchor: usize,
    /// Nodes in it so far, itself included (aliases counted expanded).
    size: usize,
    /// In order; an entry a key written out overrode is `None`. With each,
    /// whether `<<` brought it in (keys written out may override those).
    entries: Vec<Option<(String, T, bool)>>,
    /// Where each key is in `entries`, once there are more than
    /// [`SMALL_MAP`] (fewer are searched in place: most mappings have a
    /// handful of keys, and hashing each costs more than comparing): one
    /// lookup per key, so a mapping of n keys costs n, not n².
    index: Option<HashMap<String, usize>>,
    /// The key read, waiting for its value.
    pending: Option<String>,
}

/// The most keys a mapping has before its keys are indexed.
const SMALL_MAP: usize = 8;

impl<T> MapFrame<T> {
    fn new(line: usize, anchor: usize) -> MapFrame<T> {
        MapFrame {
            line,
            anchor,
            size: 1,
            entries: Vec::new(),
            index: None,
            pending: None,
        }
    }

    /// Where `key` is, and whether `<<` brought it in.
    fn find(&self, key: &str) -> Option<(usize, bool)> {
        let at = match &self.index {
            Some(index) => index.get(key).copied(),
            None => self
                .entries
                .iter()
                .position(|e| e.as_ref().is_some_and(|(k, _, _)| k == key)),
        }?;
        let merged = self.entries[at].as_ref().is_some_and(|(_, _, m)| *m);
        Some((at, merged))
    }

    fn remove(&mut self, at: usize) {
        if let (Some((key, _, _)), Some(index)) = (self.entries[at].take(), self.index.as_mut()) {
            index.remove(&key);
        }
    }

    fn insert(&mut self, key: String, value: T, merged: bool) {
        if let Some(index) = self.index.as_mut() {
            index.insert(key.clone(), self.entries.len());
        }
        self.entries.push(Some((key, value, merged)));
        if self.index.is_none() && self.entries.len() > SMALL_MAP {
            self.index = Some(
                self.entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| Some((e.as_ref()?.0.clone(), i)))
                    .collect(),
            );
        }
    }

    fn into_entries(self) -> Vec<(String, T)> {
        self.entries
            .into_iter()
            .flatten()
            .map(|(k, v, _)| (k, v))
            .collect()
    }
}

enum Frame<T> {
    /// Line, anchor, items, size (as [`MapFrame::size`]).
    Seq(usize, usize, Vec<T>, usize),
    Map(MapFrame<T>),
}

/// What aliases may expand to, as Kubernetes' YAML reader (go-yaml) allows:
/// a document may hold any number of nodes it writes out, but the share of
/// nodes copied from aliases is capped, tighter the bigger the document,
/// so a few hundred bytes of nested aliases (a "billion laughs") cannot
/// expand into gigabytes.
#[derive(Debug, Default)]
struct AliasBudget {
    /// Nodes in the document so far, aliases counted expanded.
    decoded: usize,
    /// Nodes copied from aliases.
    expanded: usize,
}

impl AliasBudget {
    /// go-yaml's allowed ratio of expanded to decoded nodes: 99 % up to
    /// 400,000 nodes, falling to 10 % at 4,000,000.
    fn allowed_ratio(decoded: usize) -> f64 {
        const LOW: f64 = 400_000.0;
        const HIGH: f64 = 4_000_000.0;
        let d = decoded as f64;
        if d <= LOW {
            0.99
        } else if d >= HIGH {
            0.10
        } else {
            0.99 - 0.89 * (d - LOW) / (HIGH - LOW)
        }
    }

    /// Counts a node written out.
    fn node(&mut self) {
        self.decoded += 1;
    }

    /// Counts an alias to a node of `size` nodes, before it is copied.
    fn alias(&mut self, size: usize, line: usize) -> Result<(), SyntaxError> {
        self.decoded = self.decoded.saturating_add(size);
        self.expanded = self.expanded.saturating_add(size);
        let ratio = self.expanded as f64 / self.decoded as f64;
        if self.expanded > 100 && self.decoded > 1000 && ratio > Self::allowed_ratio(self.decoded) {
            return Err(SyntaxError {
                line,
                message: format!(
                    "document contains excessive aliasing: aliases would copy {} nodes into a document of {}; \
                     write the repeated parts out, or use fewer nested aliases",
                    self.expanded, self.decoded
                ),
            });
        }
        Ok(())
    }
}

/// Parses every document of a YAML (or JSON) stream, keeping lines.
///
/// # Errors
/// A syntax error, a non-scalar mapping key, a duplicate key or an unknown
/// alias, each with its line.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    Ok(parse::<Node>(text)?
        .into_iter()
        .map(|root| Document { root })
        .collect())
}

/// Parses every document into JSON values, without line information: the
/// fast path when nothing needs reporting. Same errors as [`parse_documents`].
///
/// # Errors
/// As [`parse_documents`].
pub fn parse_values(text: &str) -> Result<Vec<Value>, SyntaxError> {
    parse::<Value>(text)
}

fn parse<T: Tree>(text: &str) -> Result<Vec<T>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame<T>> = Vec::new();
    // Each anchored node, with its size in nodes.
    let mut anchors: HashMap<usize, (T, usize)> = HashMap::new();
    let mut budget = AliasBudget::default();
    let mut root: Option<T> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let line = span.start.line();
        let (node, size) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                anchors.clear();
                budget = AliasBudget::default();
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                // An empty document (e.g. a trailing `---`) is skipped, like kubectl does.
                if let Some(root) = root.take().filter(|r| !r.is_null()) {
                    docs.push(root);
                }
                continue;
            }
            Event::Alias(id) => {
                let (node, size) = anchors.get(&id).ok_or_else(|| SyntaxError {
                    line,
                    message: "alias refers to an unknown anchor".to_string(),
                })?;
                budget.alias(*size, line)?;
                (node.clone(), *size)
            }
            Event::Scalar(value, style, anchor, tag) => {
                budget.node();
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let node = T::scalar(resolve_scalar(&value, style, tag.as_deref(), line)?, line);
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), 1));
                }
                (node, 1)
            }
            Event::SequenceStart(anchor, _) => {
                budget.node();
                stack.push(Frame::Seq(line, anchor, Vec::new(), 1));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                budget.node();
                stack.push(Frame::Map(MapFrame::new(line, anchor)));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, size) = match stack.pop() {
                    Some(Frame::Seq(start, anchor, items, size)) => {
                        (T::seq(items, start), anchor, size)
                    }
                    Some(Frame::Map(m)) => {
                        let (line, anchor, size) = (m.line, m.anchor, m.size);
                        (T::map(m.into_entries(), line), anchor, size)
                    }
                    None => {
                        return Err(SyntaxError {
                            line,
                            message: "unbalanced collection".into(),
                        });
                    }
                };
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), size));
                }
                (node, size)
            }
        };
        push_node(&mut stack, &mut root, node, size, line)?;
    }
    Ok(docs)
}

fn push_node<T: Tree>(
    stack: &mut [Frame<T>],
    root: &mut Option<T>,
    node: T,
    size: usize,
    line: usize,
) -> Result<(), SyntaxError> {
    let m = match stack.last_mut() {
        None => {
            *root = Some(node);
            return Ok(());
        }
        Some(Frame::Seq(_, _, items, seq_size)) => {
            items.push(node);
            *seq_size = seq_size.saturating_add(size);
            return Ok(());
        }
        Some(Frame::Map(m)) => m,
    };
    m.size = m.size.saturating_add(size);
    match m.pending.take() {
        None => {
            let key = node.key().ok_or_else(|| SyntaxError {
                line,
                message: "mapping keys must be scalars".into(),
            })?;
            if key != "<<" {
                crate::diag::cost::add(1);
                match m.find(&key) {
                    // A key written out overrides one brought in by `<<`.
                    Some((i, true)) => m.remove(i),
                    Some(_) => {
                        return Err(SyntaxError {
                            line,
                            message: format!("duplicate key {:?}", crate::diag::clip(&key, 200)),
                        });
                    }
                    None => {}
                }
            }
            m.pending = Some(key);
        }
        Some(key) if key == "<<" => {
            // Merge key: copy entries that the mapping does not set itself.
            let sources = node.merge_sources().ok_or_else(|| SyntaxError {
                line,
                message: "merge key `<<` needs a mapping".into(),
            })?;
            for source in sources {
                for (k, v) in source {
                    crate::diag::cost::add(1);
                    if m.find(&k).is_none() {
                        m.insert(k, v, true);
                    }
                }
            }
        }
        Some(key) => m.insert(key, node, false),
    }
    Ok(())
}

fn resolve_scalar(
    value: &str,
    style: ScalarStyle,
    tag: Option<&str>,
    line: usize,
) -> Result<NodeKind, SyntaxError> {
    let bad = |what: &str| SyntaxError {
        line,
        message: format!("{value:?} is not a valid {what}"),
    };
    match tag {
        Some("!!str") => return Ok(NodeKind::Str(value.to_string())),
        Some("!!int") => return value.parse().map(NodeKind::Int).map_err(|_| bad("!!int")),
        Some("!!float") => {
            return parse_float(value)
                .map(NodeKind::Float)
                .ok_or_else(|| bad("!!float"));
        }
        Some("!!bool") => {
            return match value {
                "true" | "True" | "TRUE" => Ok(NodeKind::Bool(true)),
                "false" | "False" | "FALSE" => Ok(NodeKind::Bool(false)),
                _ => Err(bad("!!bool")),
            };
        }
        Some("!!null") => return Ok(NodeKind::Null),
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(NodeKind::Str(value.to_string()));
    }
    Ok(match value {
        "" | "~" | "null" | "Null" | "NULL" => NodeKind::Null,
        "true" | "True" | "TRUE" => NodeKind::Bool(true),
        "false" | "False" | "FALSE" => NodeKind::Bool(false),
        _ => {
            if let Some(i) = parse_int(value) {
                NodeKind::Int(i)
            } else if let Some(f) = looks_float(value).then(|| parse_float(value)).flatten() {
                NodeKind::Float(f)
            } else {
                NodeKind::Str(value.to_string())
            }
        }
    })
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        // A leading zero makes an octal number to Kubernetes' reader (go-yaml,
        // YAML 1.1): `defaultMode: 0400` is 256 there, and must be here too.
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn looks_float(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
        || (t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b == b'.'))
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['-', '+']);
    let neg = s.starts_with('-');
    let v = match t {
        ".inf" | ".Inf" | ".INF" => f64::INFINITY,
        ".nan" | ".NaN" | ".NAN" => f64::NAN,
        _ => t.parse().ok()?,
    };
    Some(if neg { -v } else { v })
}

impl Node {
    /// Converts the node into a JSON value for serde.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::Number((*i).into()),
            NodeKind::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.clone(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// The line of the deepest node on `path` (the nearest known ancestor's
    /// line when the path goes past what the document holds).
    pub fn line_of(&self, path: &Path) -> usize {
        let mut node = self;
        for seg in path.segs() {
            let next = match (seg, &node.kind) {
                (Seg::Key(k), NodeKind::Map(entries)) => {
                    entries.iter().find(|(e, _)| *e == *k).map(|(_, v)| v)
                }
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.line
    }
}

/// Writes a JSON value as block-style YAML (used for generated CRDs and `-o yaml`).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (k, v) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&quote_if_needed(k));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // First entry on the dash line, the rest indented under it.
                let mut first = true;
                for (k, val) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&quote_if_needed(k));
                    out.push(':');
                    write_value_after_key(out, val, indent + 2);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(out, a, indent + 2);
            }
            other => {
                out.push(' ');
                write_scalar_block(out, other, indent + 2);
            }
        }
    }
}

fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, indent);
        }
        other => {
            out.push(' ');
            write_scalar_block(out, other, indent + 2);
        }
    }
}

fn write_scalar_block(out: &mut String, v: &Value, indent: usize) {
    if let Value::String(s) = v
        && s.contains('\n')
        && !s.starts_with([' ', '\t'])
        && !s.chars().any(|c| c.is_control() && c != '\n')
    {
        // Literal block keeps scripts readable.
        let chomp = if s.ends_with("\n\n") {
            "+"
        } else if s.ends_with('\n') {
            ""
        } else {
            "-"
        };
        let _ = writeln!(out, "|{chomp}");
        for line in s.trim_end_matches('\n').split('\n') {
            if !line.is_empty() {
                out.push_str(&" ".repeat(indent));
                out.push_str(line);
            }
            out.push('\n');
        }
        if chomp == "+" {
            for _ in 0..s.len() - s.trim_end_matches('\n').len() - 1 {
                out.push('\n');
            }
        }
        return;
    }
    out.push_str(&scalar(v));
    out.push('\n');
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote_if_needed(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn quote_if_needed(s: &str) -> String {
    let plain_kind = resolve_scalar(s, ScalarStyle::Plain, None, 0);
    // YAML 1.1 readers (kubectl's among them) take these as booleans.
    let yaml11_bool = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "yes" | "n" | "no" | "on" | "off"
    );
    let needs = s.is_empty()
        || yaml11_bool
        || !matches!(plain_kind, Ok(NodeKind::Str(_)))
        || s.starts_with([
            ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"',
            '%', '@', '`',
        ])
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(|c| c.is_control());
    if needs {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let docs =
            parse_documents("a: yes\nb: 10\nc: 1.5\nd: '1'\ne: ~\nf: true\ng: 0x1f\n").unwrap();
        let v = docs[0].root.to_json();
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], 10);
        assert_eq!(v["c"], 1.5);
        assert_eq!(v["d"], "1");
        assert_eq!(v["e"], Value::Null);
        assert_eq!(v["f"], true);
        assert_eq!(v["g"], 31);
    }

    /// Regression: `defaultMode: 0400`, the way Kubernetes' documents write
    /// modes, was read as the decimal 400 (0o620: group-writable files)
    /// where kubectl's YAML 1.1 reader reads the octal 0o400.
    #[test]
    fn regression_a_mode_written_0400_was_read_as_decimal() {
        let docs = parse_documents(
            "defaultMode: 0400\nmode: 0o755\nb: -0644\nzero: 0\nnine: 09\nq: '0400'\n",
        )
        .unwrap();
        let v = docs[0].root.to_json();
        assert_eq!(v["defaultMode"], 0o400);
        assert_eq!(v["mode"], 0o755);
        assert_eq!(v["b"], -0o644);
        assert_eq!(v["zero"], 0);
        // Not octal digits: the decimal, as before; quoted: the text.
        assert_eq!(v["nine"], 9);
        assert_eq!(v["q"], "0400");
    }

    #[test]
    fn lines_are_found_by_path() {
        let docs = parse_documents(
            "---\na: 1\n---\nspec:\n  tasks:\n    - name: x\n    - name: y\n      runAfter: [z]\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let p: Path = "spec.tasks[1].runAfter[0]".parse().unwrap();
        assert_eq!(docs[1].root.line_of(&p), 8);
        let p: Path = "spec.tasks[1].missing".parse().unwrap();
        assert_eq!(docs[1].root.line_of(&p), 7);
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_lines() {
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
    }

    /// Regression: a flow sequence closed at its key's column after quoted
    /// items (the style of Tekton's examples: `args: [` … `]`) was refused
    /// with `invalid indentation`; kubectl (go-yaml) reads it. Indentation
    /// counts only outside flow collections.
    #[test]
    fn regression_a_flow_sequence_closed_at_its_keys_column_is_refused() {
        let text = "steps:\n  - name: echo\n    args: [\n      \"echo\",\n      \"$(params.x)\",\n    ]\n    env: {\n  \"A\": '1',\n}\n    image: busybox\nafter:\n  [\n\"x\", y\n]\n";
        let docs = parse_documents(text).unwrap();
        let v = docs[0].root.to_json();
        assert_eq!(
            v,
            serde_json::json!({
                "steps": [{"name": "echo", "args": ["echo", "$(params.x)"],
                           "env": {"A": "1"}, "image": "busybox"}],
                "after": ["x", "y"],
            })
        );
        // Lines after the flow collections are still right.
        let image = docs[0]
            .root
            .line_of(&crate::path::Path::root().key("steps").idx(0).key("image"));
        assert_eq!(image, 10);
        // Block context still counts indentation.
        let e = parse_documents("a:\n  b: 1\n c: 2\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse_documents("a:\n  - x\n - y\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    /// Nine levels of nine aliases each: 600 bytes that expand to 9^9
    /// nodes.
    fn alias_bomb(levels: usize) -> String {
        let names: Vec<char> = ('a'..='z').take(levels).collect();
        let mut text = format!("{}: &{} [x, x, x, x, x, x, x, x, x]\n", names[0], names[0]);
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(", ");
            text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        text
    }

    /// Regression: a 600-byte document of nested aliases exhausted memory
    /// (seven levels peaked at 856 MB). Aliases are expanded only as far
    /// as Kubernetes' reader allows.
    #[test]
    fn regression_a_yaml_alias_bomb_exhausts_memory() {
        let bomb = alias_bomb(9);
        assert!(bomb.len() < 700, "{}", bomb.len());
        for e in [
            parse_values(&bomb).unwrap_err(),
            parse_documents(&bomb).err().unwrap(),
        ] {
            assert!(e.message.contains("excessive aliasing"), "{}", e.message);
        }
        // A few levels, as real files use anchors, are fine.
        let small = alias_bomb(3);
        let v = parse_values(&small).unwrap();
        assert_eq!(v[0]["c"].as_array().unwrap().len(), 9);
        assert_eq!(v[0]["c"][8][8][8], "x");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let docs = parse_documents("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let v = docs[0].root.to_json();
        assert_eq!(v["other"]["x"], 1);
        assert_eq!(v["other"]["y"], 3);
    }

    #[test]
    fn writer_round_trips() {
        let value = serde_json::json!({
            "a": "yes", "b": "10", "c": [1, {"d": "x: y", "e": []}], "f": {},
            "script": "#!/bin/sh\necho hi\n", "g": "-x", "h": "", "i": null, "j": [[1, 2], "k"]
        });
        let text = to_yaml(&value);
        let back = parse_documents(&text).unwrap()[0].root.to_json();
        assert_eq!(back, value, "{text}");
        assert!(
            text.contains("a: \"yes\""),
            "quoted for YAML 1.1 readers: {text}"
        );
    }
}
