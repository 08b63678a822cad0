//! A small, bounded parser for LVM2's text metadata (the VG config kept in
//! the metadata area): `key = value` pairs and `name { ... }` sections,
//! values being integers, strings, or lists of them. Depth, item count and
//! string length are capped so that hostile metadata cannot make it recurse
//! or allocate without limit.

use std::collections::BTreeMap;

const MAX_DEPTH: usize = 16;
const MAX_ITEMS: usize = 200_000;
const MAX_LIST: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Section(Section),
}

/// A section's entries in file order (names may repeat only in broken
/// files; lookups take the first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    pub entries: Vec<(String, Value)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// Sub-sections in file order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("LVM metadata, byte {pos}: {msg}")]
pub struct ParseError {
    pub pos: usize,
    pub msg: String,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    items: usize,
}

/// Parse a whole metadata text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section, ParseError> {
    let mut p = Parser {
        s: text,
        pos: 0,
        items: 0,
    };
    let top = p.section_body(0)?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(p.err("unexpected '}' at top level"));
    }
    Ok(top)
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> ParseError {
        ParseError {
            pos: self.pos,
            msg: msg.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+') {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// Entries until '}' or the end of input.
    fn section_body(&mut self, depth: usize) -> Result<Section, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("sections nested too deeply"));
        }
        let mut sec = Section::default();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(b'}') => return Ok(sec),
                _ => {}
            }
            self.items += 1;
            if self.items > MAX_ITEMS {
                return Err(self.err("too many items"));
            }
            let name = self.ident()?;
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let sub = self.section_body(depth + 1)?;
                    self.skip_ws();
                    if self.peek() != Some(b'}') {
                        return Err(self.err("missing '}'"));
                    }
                    self.pos += 1;
                    sec.entries.push((name, Value::Section(sub)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_ws();
                    let v = self.value(true)?;
                    sec.entries.push((name, v));
                }
                _ => return Err(self.err("expected '=' or '{'")),
            }
        }
    }

    fn value(&mut self, allow_list: bool) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') if allow_list => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') if !items.is_empty() => {
                            self.pos += 1;
                            continue;
                        }
                        None => return Err(self.err("unterminated list")),
                        _ => {}
                    }
                    if items.len() >= MAX_LIST {
                        return Err(self.err("list too long"));
                    }
                    self.items += 1;
                    if self.items > MAX_ITEMS {
                        return Err(self.err("too many items"));
                    }
                    items.push(self.value(false)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || c == b'.' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        if text.contains('.') {
            text.parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.err("bad number"))
        } else {
            text.parse::<i64>()
                .map(Value::Int)
                .map_err(|_| self.err("number out of range"))
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err(self.err("unterminated string")),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// Convenience for tests and callers: a section's sub-sections by name.
pub fn sections_by_name(sec: &Section) -> BTreeMap<&str, &Section> {
    sec.sections().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vg() {
        let t = br#"vg0 {
id = "abc"
extent_size = 8192 # 4 MiB
status = ["RESIZEABLE", "READ"]
physical_volumes {
pv0 { id = "x-y" pe_start = 2048 }
}
logical_volumes {
root { segment_count = 1
segment1 { start_extent = 0 extent_count = 10 type = "striped" stripe_count = 1 stripes = [ "pv0", 0 ] } }
}
}
contents = "Text Format Volume Group"
version = 1
"#;
        let top = parse(t).unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.int("extent_size"), Some(8192));
        let seg = vg
            .section("logical_volumes")
            .and_then(|l| l.section("root"))
            .and_then(|r| r.section("segment1"))
            .unwrap();
        assert_eq!(
            seg.list("stripes"),
            Some(&[Value::Str("pv0".into()), Value::Int(0)][..])
        );
        assert_eq!(top.int("version"), Some(1));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut t = Vec::new();
        for _ in 0..100 {
            t.extend_from_slice(b"a {");
        }
        assert!(parse(&t).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"a = [ \"x\" ").is_err());
        assert!(parse(b"a = }").is_err());
        assert!(parse(b"= 1").is_err());
        assert!(parse(b"a = 99999999999999999999999").is_err());
    }
}
