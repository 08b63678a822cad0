//! The action parameter tree: one representation for a JSON body and for
//! flattened `k=v` pairs (GET query, form body, v1).
//!
//! Everything here reads hostile bytes, so every dimension is capped before it
//! costs memory: nesting depth, list length and list indexes (a key such as
//! `ImageIds.99999999999` is refused by its digits, never used to size a
//! vector). Duplicate keys are refused rather than resolved, because the
//! signature covers what the client sent and "last wins" would let two parties
//! read one request differently.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{clip, ApiError};

/// Deepest nesting accepted in a JSON body or a flattened key (objects and
/// lists both count). The deepest real parameter (`TagSpecification.N.Tags.N.Key`)
/// needs 5.
pub const MAX_DEPTH: usize = 32;

/// Longest list accepted; a flattened index must be below it.
pub const MAX_LIST_LEN: usize = 1000;

/// Most `k=v` pairs in one query or form: a 1 MiB form of `a&a&…` would
/// otherwise cost half a million allocations before anything is checked.
pub const MAX_PAIRS: usize = 10_000;

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A JSON string, or any flattened value (flattened values are all text).
    String(String),
    Bool(bool),
    Number(serde_json::Number),
    List(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

/// Where the parameters came from; decides how strictly scalars are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A JSON body: booleans must be JSON booleans.
    Json,
    /// Flattened pairs: every value is text, `true`/`True`/`false`/`False`
    /// are booleans and decimal text is an integer.
    Flat,
}

/// The action parameters of one request (common parameters removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub origin: Origin,
    pub entries: BTreeMap<String, Value>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            origin: Origin::Json,
            entries: BTreeMap::new(),
        }
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parse a JSON body. It must be an object; `null` members are absent.
    /// An empty body counts as `{}`.
    pub fn from_json(body: &[u8]) -> Result<Params, ApiError> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Params::default());
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = ValueSeed { depth: 0 }.deserialize(&mut de).and_then(|v| {
            de.end()?;
            Ok(v)
        });
        match parsed {
            Ok(Some(Value::Object(entries))) => Ok(Params {
                origin: Origin::Json,
                entries,
            }),
            Ok(_) => Err(ApiError::invalid_parameter(
                "The request body must be a JSON object, e.g. {\"ImageIds\": [\"img-xxxxxxxx\"]}.",
                "请求体必须是JSON对象，例如{\"ImageIds\": [\"img-xxxxxxxx\"]}。",
            )),
            Err(e) => Err(ApiError::invalid_parameter(
                format!("The request body is not valid JSON: {e}."),
                format!("请求体不是合法的JSON：{e}。"),
            )),
        }
    }

    /// Build the tree from flattened pairs (`Filters.0.Values.1=…`). Lists
    /// must be dense from index 0.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<Params, ApiError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut root: BTreeMap<String, Node> = BTreeMap::new();
        for (key, value) in pairs {
            insert_flat(&mut root, key, value)?;
        }
        let mut entries = BTreeMap::new();
        for (name, node) in root {
            let v = node.finish(&name)?;
            entries.insert(name, v);
        }
        Ok(Params {
            origin: Origin::Flat,
            entries,
        })
    }
}

/// Split `application/x-www-form-urlencoded` text (a query or a form body)
/// into decoded pairs: `+` is a space, `%XX` a byte, the result must be UTF-8.
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` has an
/// empty value.
pub fn parse_form(raw: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for segment in raw.split(|&b| b == b'&') {
        if segment.is_empty() {
            continue;
        }
        if out.len() >= MAX_PAIRS {
            return Err(ApiError::invalid_parameter(
                format!("The query or form carries more than {MAX_PAIRS} parameters."),
                format!("查询串或表单的参数超过{MAX_PAIRS}个。"),
            ));
        }
        let (k, v) = match segment.iter().position(|&b| b == b'=') {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, &segment[segment.len()..]),
        };
        let key = form_decode(k)?;
        if key.is_empty() {
            return Err(ApiError::invalid_parameter(
                "The query or form contains a parameter with an empty name.",
                "查询串或表单中有参数名为空。",
            ));
        }
        let value = form_decode(v)?;
        out.push((key, value));
    }
    Ok(out)
}

fn form_decode(raw: &[u8]) -> Result<String, ApiError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| {
        ApiError::invalid_parameter(
            "The query or form contains bytes that are not UTF-8 after URL decoding.",
            "查询串或表单在URL解码后不是合法的UTF-8。",
        )
    })
}

/// A flattened tree under construction. Lists keep their indexes in a map
/// until the end, so a hostile index costs one entry, never a vector slot.
enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
    Seq(BTreeMap<usize, Node>),
}

enum Segment<'a> {
    Name(&'a str),
    Index(usize),
}

fn parse_segment<'a>(key: &str, seg: &'a str) -> Result<Segment<'a>, ApiError> {
    let key = clip(key);
    if seg.is_empty() {
        return Err(ApiError::invalid_parameter(
            format!("The parameter name `{key}` has an empty component."),
            format!("参数名`{key}`中有空的部分。"),
        ));
    }
    if !seg.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Segment::Name(seg));
    }
    // Canonical indexes only ("01" would alias "1"), and never more digits
    // than the cap needs, so the parse cannot overflow.
    let too_large = || {
        ApiError::invalid_parameter(
            format!(
                "The list index in `{key}` is too large: a list holds at most {MAX_LIST_LEN} items, indexed from 0."
            ),
            format!("参数`{key}`的数组下标过大：数组最多{MAX_LIST_LEN}个元素，下标从0开始。"),
        )
    };
    if seg.len() > 1 && seg.starts_with('0') {
        return Err(ApiError::invalid_parameter(
            format!("The list index in `{key}` has a leading zero."),
            format!("参数`{key}`的数组下标不能有前导零。"),
        ));
    }
    if seg.len() > 4 {
        return Err(too_large());
    }
    let index: usize = seg.parse().map_err(|_| too_large())?;
    if index >= MAX_LIST_LEN {
        return Err(too_large());
    }
    Ok(Segment::Index(index))
}

fn insert_flat(root: &mut BTreeMap<String, Node>, key: &str, value: &str) -> Result<(), ApiError> {
    // One segment past the cap is enough to refuse; never split further.
    let segs: Vec<&str> = key.split('.').take(MAX_DEPTH + 1).collect();
    if segs.len() > MAX_DEPTH {
        return Err(ApiError::invalid_parameter(
            format!(
                "The parameter name `{}` is nested more than {MAX_DEPTH} levels deep.",
                clip(key)
            ),
            format!("参数名`{}`嵌套超过{MAX_DEPTH}层。", clip(key)),
        ));
    }
    let shown = clip(key);
    let first = match parse_segment(key, segs[0])? {
        Segment::Name(n) => n,
        Segment::Index(_) => {
            return Err(ApiError::invalid_parameter(
                format!("The parameter name `{shown}` must start with a name, not a list index."),
                format!("参数名`{shown}`必须以名称开头，而不是数组下标。"),
            ))
        }
    };
    let conflict = || {
        ApiError::invalid_parameter(
            format!(
                "The parameter `{shown}` conflicts with another parameter: a name is given twice, or used both as a value and as a list/object."
            ),
            format!("参数`{shown}`与其他参数冲突：重复传入，或同时作为值和数组/对象使用。"),
        )
    };
    let rest = &segs[1..];
    if rest.is_empty() {
        if root.contains_key(first) {
            return Err(conflict());
        }
        root.insert(first.to_string(), Node::Leaf(value.to_string()));
        return Ok(());
    }
    let mut node = root
        .entry(first.to_string())
        .or_insert_with(|| empty_for(rest[0]));
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let next = if last { None } else { Some(rest[i + 1]) };
        let make = || match next {
            None => Node::Leaf(value.to_string()),
            Some(n) => empty_for(n),
        };
        let child = match (parse_segment(key, seg)?, node) {
            (Segment::Name(n), Node::Map(m)) => {
                if last && m.contains_key(n) {
                    return Err(conflict());
                }
                m.entry(n.to_string()).or_insert_with(make)
            }
            (Segment::Index(ix), Node::Seq(s)) => {
                if last && s.contains_key(&ix) {
                    return Err(conflict());
                }
                s.entry(ix).or_insert_with(make)
            }
            _ => return Err(conflict()),
        };
        if !last && matches!(child, Node::Leaf(_)) {
            return Err(conflict());
        }
        node = child;
    }
    Ok(())
}

fn empty_for(seg: &str) -> Node {
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        Node::Seq(BTreeMap::new())
    } else {
        Node::Map(BTreeMap::new())
    }
}

impl Node {
    /// Turn the construction tree into values; `path` names this node in
    /// errors. Recursion is bounded by [`MAX_DEPTH`], checked on insert.
    fn finish(self, path: &str) -> Result<Value, ApiError> {
        // Paths are only needed to name a gap, so a leaf (the common child)
        // gets none: building one per leaf would cost key length × leaves.
        let child_path = |v: &Node, seg: &dyn fmt::Display| match v {
            Node::Leaf(_) => String::new(),
            _ => format!("{path}.{seg}"),
        };
        match self {
            Node::Leaf(s) => Ok(Value::String(s)),
            Node::Map(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let child = child_path(&v, &k);
                    out.insert(k, v.finish(&child)?);
                }
                Ok(Value::Object(out))
            }
            Node::Seq(s) => {
                let mut out = Vec::with_capacity(s.len());
                for (expected, (ix, v)) in s.into_iter().enumerate() {
                    if ix != expected {
                        let path = clip(path);
                        return Err(ApiError::invalid_parameter(
                            format!(
                                "The list `{path}` is not dense: `{path}.{expected}` is missing (indexes must run 0, 1, 2, … without gaps)."
                            ),
                            format!(
                                "数组`{path}`的下标不连续：缺少`{path}.{expected}`（下标须从0开始连续）。"
                            ),
                        ));
                    }
                    let child = child_path(&v, &ix);
                    out.push(v.finish(&child)?);
                }
                Ok(Value::List(out))
            }
        }
    }
}

/// Deserializes JSON into [`Value`] with a depth cap and duplicate-key
/// refusal; `None` stands for JSON `null` (absent).
struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed { depth })? {
            if out.len() >= MAX_LIST_LEN {
                return Err(de::Error::custom(format!(
                    "a list holds at most {MAX_LIST_LEN} items"
                )));
            }
            match item {
                Some(v) => out.push(v),
                None => return Err(de::Error::custom("null is not allowed inside a list")),
            }
        }
        Ok(Some(Value::List(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let mut out = BTreeMap::new();
        let mut seen_null: std::collections::BTreeSet<String> = Default::default();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) || seen_null.contains(&key) {
                return Err(de::Error::custom(format!("duplicate key `{}`", clip(&key))));
            }
            match map.next_value_seed(ValueSeed { depth })? {
                Some(v) => {
                    out.insert(key, v);
                }
                None => {
                    seen_null.insert(key);
                }
            }
        }
        Ok(Some(Value::Object(out)))
    }
}
