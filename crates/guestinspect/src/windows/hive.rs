//! A bounded reader for Windows registry hive files (REGF), enough to look
//! keys up by path and read their string and DWORD values.
//!
//! Written here rather than taken from `nt-hive` (GPL-2.0-or-later, which the
//! project's Apache-2.0 licence cannot absorb). The format: a 4 KiB base
//! block ("regf", root cell offset at 0x24, hive-bins data size at 0x28),
//! then hive bins holding cells; a cell is an i32 size (negative when
//! allocated) and its data. Keys are "nk" cells with a subkey list ("lf",
//! "lh", "li", or an "ri" of those) and a value list of "vk" cells.
//!
//! Every offset is checked against the hive-bins area, every count against
//! the cell that holds it; an "ri" may only point at leaf lists (one level,
//! as Windows writes them), so a lookup does a bounded amount of work.
//! Base-block checksums and sequence numbers are not enforced: Windows
//! itself opens such hives (recovering from its logs), and nothing more
//! than a handful of values is read.

use crate::fs::FsError;
use diskformat::bytes::{u16_le, u32_le};

const BASE_BLOCK: usize = 4096;
const KEY_COMP_NAME: u16 = 0x20;
const VALUE_COMP_NAME: u16 = 0x1;
const REG_SZ: u32 = 1;
const REG_EXPAND_SZ: u32 = 2;
const REG_DWORD: u32 = 4;
/// Values longer than this live in "db" big-data cells, which nothing read
/// here needs.
const MAX_PLAIN_DATA: usize = 16344;

fn corrupt(msg: impl Into<String>) -> FsError {
    FsError::Corrupt(format!("registry hive: {}", msg.into()))
}

/// A parsed hive over its file bytes.
pub struct Hive<'a> {
    /// The hive-bins area: cell offsets are relative to its start.
    bins: &'a [u8],
    root: u32,
}

/// A key node ("nk" cell).
#[derive(Clone, Copy)]
pub struct Key<'a> {
    hive: &'a Hive<'a>,
    cell: &'a [u8],
    /// The name's bytes, found inside the cell when the key is read, and
    /// whether they are Latin-1 (else UTF-16LE).
    name: &'a [u8],
    compressed: bool,
}

/// A value's data, for the types inspection reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Dword(u32),
    /// Another type (or big data), by its type number.
    Other(u32),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_dword(&self) -> Option<u32> {
        match self {
            Value::Dword(d) => Some(*d),
            _ => None,
        }
    }
}

impl<'a> Hive<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Hive<'a>, FsError> {
        if bytes.len() < BASE_BLOCK || &bytes[..4] != b"regf" {
            return Err(corrupt("no regf signature"));
        }
        let root = u32_le(bytes, 0x24)?;
        let size = u32_le(bytes, 0x28)? as usize;
        let bins = bytes
            .get(BASE_BLOCK..BASE_BLOCK.saturating_add(size))
            .ok_or_else(|| corrupt("hive bins size beyond the file"))?;
        if bins.len() < 4096 || &bins[..4] != b"hbin" {
            return Err(corrupt("no hive bin"));
        }
        Ok(Hive { bins, root })
    }

    /// The data of the allocated cell at `offset`.
    fn cell(&self, offset: u32) -> Result<&'a [u8], FsError> {
        let at = offset as usize;
        let raw = u32_le(self.bins, at)? as i32;
        if raw >= 0 {
            return Err(corrupt(format!("cell {offset:#x} is free")));
        }
        let size = raw.unsigned_abs() as usize;
        if size < 8 {
            return Err(corrupt(format!("cell {offset:#x} too small")));
        }
        at.checked_add(size)
            .and_then(|end| self.bins.get(at + 4..end))
            .ok_or_else(|| corrupt(format!("cell {offset:#x} beyond the hive")))
    }

    pub fn root(&'a self) -> Result<Key<'a>, FsError> {
        Key::at(self, self.root)
    }
}

impl<'a> Key<'a> {
    fn at(hive: &'a Hive<'a>, offset: u32) -> Result<Key<'a>, FsError> {
        let cell = hive.cell(offset)?;
        if cell.get(..2) != Some(b"nk") {
            return Err(corrupt(format!("cell {offset:#x} is not a key")));
        }
        // The fixed part is 76 bytes; the name must fit in the cell.
        let flags = u16_le(cell, 2)?;
        let name_len = usize::from(u16_le(cell, 72)?);
        let raw = cell
            .get(76..76 + name_len)
            .ok_or_else(|| corrupt("key name beyond its cell"))?;
        Ok(Key {
            hive,
            cell,
            name: raw,
            compressed: flags & KEY_COMP_NAME != 0,
        })
    }

    pub fn name(&self) -> String {
        decode_name(self.name, self.compressed)
    }

    /// The subkey named `name` (case-insensitive, as Windows compares).
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'a>>, FsError> {
        let count = u32_le(self.cell, 20)?;
        if count == 0 {
            return Ok(None);
        }
        let list = self.hive.cell(u32_le(self.cell, 28)?)?;
        let sig = list.get(..2).ok_or_else(|| corrupt("subkey list"))?;
        if sig == b"ri" {
            for off in offsets(list, 4)? {
                let leaf = self.hive.cell(off)?;
                if leaf.get(..2) == Some(b"ri") {
                    return Err(corrupt("nested index root"));
                }
                if let Some(k) = self.find_in_leaf(leaf, name)? {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        } else {
            self.find_in_leaf(list, name)
        }
    }

    fn find_in_leaf(&self, list: &'a [u8], name: &str) -> Result<Option<Key<'a>>, FsError> {
        let stride = match list.get(..2) {
            Some(b"lf") | Some(b"lh") => 8,
            Some(b"li") => 4,
            _ => return Err(corrupt("unknown subkey list")),
        };
        for off in offsets(list, stride)? {
            let key = Key::at(self.hive, off)?;
            if names_equal(&key.name(), name) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Follow a backslash-separated path of subkeys.
    pub fn subpath(&self, path: &str) -> Result<Option<Key<'a>>, FsError> {
        let mut key = *self;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match key.subkey(part)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// The value named `name` (case-insensitive).
    pub fn value(&self, name: &str) -> Result<Option<Value>, FsError> {
        let count = u32_le(self.cell, 36)? as usize;
        if count == 0 {
            return Ok(None);
        }
        let list = self.hive.cell(u32_le(self.cell, 40)?)?;
        if count > list.len() / 4 {
            return Err(corrupt("value count beyond its list"));
        }
        for i in 0..count {
            let vk = self.hive.cell(u32_le(list, i * 4)?)?;
            if vk.get(..2) != Some(b"vk") {
                return Err(corrupt("value list points at a non-value"));
            }
            let name_len = usize::from(u16_le(vk, 2)?);
            let flags = u16_le(vk, 16)?;
            let raw_name = vk
                .get(20..20 + name_len)
                .ok_or_else(|| corrupt("value name beyond its cell"))?;
            if names_equal(&decode_name(raw_name, flags & VALUE_COMP_NAME != 0), name) {
                return self.value_data(vk).map(Some);
            }
        }
        Ok(None)
    }

    fn value_data(&self, vk: &'a [u8]) -> Result<Value, FsError> {
        let size_field = u32_le(vk, 4)?;
        let ty = u32_le(vk, 12)?;
        // High bit: up to 4 bytes stored in the offset field itself.
        let data: &[u8] = if size_field & 0x8000_0000 != 0 {
            let len = (size_field & 0x7fff_ffff) as usize;
            vk.get(8..8 + len.min(4))
                .ok_or_else(|| corrupt("inline value"))?
        } else {
            let len = size_field as usize;
            if len > MAX_PLAIN_DATA {
                return Ok(Value::Other(ty));
            }
            let cell = self.hive.cell(u32_le(vk, 8)?)?;
            cell.get(..len)
                .ok_or_else(|| corrupt("value data beyond its cell"))?
        };
        Ok(match ty {
            REG_SZ | REG_EXPAND_SZ => Value::String(utf16z(data)),
            REG_DWORD if data.len() == 4 => Value::Dword(u32_le(data, 0)?),
            _ => Value::Other(ty),
        })
    }
}

/// The u32 offsets of a list cell: a u16 count at 2, entries from 4 with
/// `stride` bytes each (the first four being the offset).
fn offsets(list: &[u8], stride: usize) -> Result<Vec<u32>, FsError> {
    let count = usize::from(u16_le(list, 2)?);
    if 4 + count * stride > list.len() {
        return Err(corrupt("list count beyond its cell"));
    }
    (0..count)
        .map(|i| u32_le(list, 4 + i * stride).map_err(FsError::from))
        .collect()
}

/// Compressed names are Latin-1, others UTF-16LE.
fn decode_name(raw: &[u8], compressed: bool) -> String {
    if compressed {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        utf16z(raw)
    }
}

fn utf16z(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map_while(|c| u16_le(c, 0).ok().filter(|&u| u != 0))
        .collect();
    String::from_utf16_lossy(&units)
}

fn names_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.chars()
            .zip(b.chars())
            .all(|(x, y)| x.to_uppercase().eq(y.to_uppercase()))
}
