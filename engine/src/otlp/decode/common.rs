//! What the three signals share: the request -> ResourceX -> ScopeX walk, the Resources and
//! Scopes tables, and KeyValue / AnyValue decoding into attribute tables.

use arrow::array::ArrayRef;
use arrow::datatypes::UInt32Type;
use prost::Message;

use super::builders::{Attrs, Bin, Dict, Str, Val, bools, prim, set_str};
use super::wire::{Ctx, I64, Kind, LEN, R, Reader, VARINT, key};

/// One signal's item decoder (spans, metrics, log records), plugged into the common walk.
pub(crate) trait Items<'a> {
    /// Field names for error paths: `resource_spans`, `scope_spans`, `spans`.
    const RESOURCES: &'static str;
    const SCOPES: &'static str;
    const ITEMS: &'static str;
    /// Decodes one item message whose parent is scope row `scope`.
    fn item(&mut self, scope: u32, r: Reader<'a>) -> R<()>;
}

/// The Resources, ResourceAttrs, Scopes and ScopeAttrs tables under construction.
pub(crate) struct Common<'a> {
    pub strict: bool,
    res_present: Vec<bool>,
    res_dropped: Vec<u32>,
    res_schema_url: Str,
    res_entity_refs: Bin,
    res_attrs: Attrs<'a>,
    scope_parent: Vec<u32>,
    scope_present: Vec<bool>,
    scope_name: Dict<'a>,
    scope_version: Dict<'a>,
    scope_dropped: Vec<u32>,
    scope_schema_url: Str,
    scope_attrs: Attrs<'a>,
}

/// The four common tables, each as its columns in schema order.
pub(crate) struct CommonColumns {
    pub resources: Vec<ArrayRef>,
    pub resource_attrs: Vec<ArrayRef>,
    pub scopes: Vec<ArrayRef>,
    pub scope_attrs: Vec<ArrayRef>,
}

impl<'a> Common<'a> {
    pub fn new(strict: bool) -> Self {
        Common {
            strict,
            res_present: Vec::new(),
            res_dropped: Vec::new(),
            res_schema_url: Str::new(),
            res_entity_refs: Bin::new(),
            res_attrs: Attrs::new(),
            scope_parent: Vec::new(),
            scope_present: Vec::new(),
            scope_name: Dict::new(),
            scope_version: Dict::new(),
            scope_dropped: Vec::new(),
            scope_schema_url: Str::new(),
            scope_attrs: Attrs::new(),
        }
    }

    /// Walks an `Export*ServiceRequest` (= `TracesData`/`MetricsData`/`LogsData`).
    pub fn request<D: Items<'a>>(&mut self, d: &mut D, buf: &'a [u8]) -> R<()> {
        let mut r = Reader::new(buf, 0);
        let mut i = 0u32;
        while r.has_more() {
            let k = r.key()?;
            if k == key(1, LEN) {
                let m = r.message()?;
                self.resource_x(d, m).at_idx(D::RESOURCES, i)?;
                i += 1;
            } else {
                r.skip(k, |f| (f == 1).then_some((D::RESOURCES, LEN)))?;
            }
        }
        Ok(())
    }

    fn resource_x<D: Items<'a>>(&mut self, d: &mut D, mut r: Reader<'a>) -> R<()> {
        let rid = self.res_present.len() as u32;
        let mut present = false;
        let mut dropped = 0u32;
        let mut schema_url: &[u8] = &[];
        let mut n_scopes = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => {
                    present = true;
                    let m = r.message()?;
                    self.resource(rid, m, &mut dropped).at("resource")?;
                }
                k if k == key(2, LEN) => {
                    let m = r.message()?;
                    self.scope_x(d, rid, m).at_idx(D::SCOPES, n_scopes)?;
                    n_scopes += 1;
                }
                k if k == key(3, LEN) => set_str(&mut schema_url, r.bytes()?, "schema_url")?,
                _ => r.skip(k, |f| match f {
                    1 => Some(("resource", LEN)),
                    2 => Some((D::SCOPES, LEN)),
                    3 => Some(("schema_url", LEN)),
                    _ => None,
                })?,
            }
        }
        self.res_present.push(present);
        self.res_dropped.push(dropped);
        self.res_schema_url.push(schema_url);
        self.res_entity_refs.close_row();
        Ok(())
    }

    fn resource(&mut self, rid: u32, mut r: Reader<'a>, dropped: &mut u32) -> R<()> {
        let mut n_attrs = 0u32;
        let mut n_refs = 0u32;
        while r.has_more() {
            let start = r.pos();
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.res_attrs, rid, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, VARINT) => *dropped = r.varint()? as u32,
                k if k == key(3, LEN) => {
                    let m = r.bytes()?;
                    // Rare; validate with prost so invalid UTF-8 inside is rejected as prost
                    // would. Stored as the original field bytes (key + length + payload) so
                    // the encoder writes them back unchanged.
                    opentelemetry_proto::tonic::common::v1::EntityRef::decode(m)
                        .map_err(|e| super::wire::err(Kind::Nested(e.to_string()), None))
                        .at_idx("entity_refs", n_refs)?;
                    self.res_entity_refs.extend(r.since(start));
                    n_refs += 1;
                }
                _ => r.skip(k, resource_fields)?,
            }
        }
        Ok(())
    }

    fn scope_x<D: Items<'a>>(&mut self, d: &mut D, rid: u32, mut r: Reader<'a>) -> R<()> {
        let sid = self.scope_present.len() as u32;
        let mut present = false;
        let mut name: &'a [u8] = &[];
        let mut version: &'a [u8] = &[];
        let mut dropped = 0u32;
        let mut schema_url: &[u8] = &[];
        let mut n_items = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(2, LEN) => {
                    let m = r.message()?;
                    d.item(sid, m).at_idx(D::ITEMS, n_items)?;
                    n_items += 1;
                }
                k if k == key(1, LEN) => {
                    present = true;
                    let m = r.message()?;
                    self.scope(sid, m, &mut name, &mut version, &mut dropped)
                        .at("scope")?;
                }
                k if k == key(3, LEN) => set_str(&mut schema_url, r.bytes()?, "schema_url")?,
                _ => r.skip(k, |f| match f {
                    1 => Some(("scope", LEN)),
                    2 => Some((D::ITEMS, LEN)),
                    3 => Some(("schema_url", LEN)),
                    _ => None,
                })?,
            }
        }
        self.scope_parent.push(rid);
        self.scope_present.push(present);
        self.scope_name.push(name).at("name").at("scope")?;
        self.scope_version.push(version).at("version").at("scope")?;
        self.scope_dropped.push(dropped);
        self.scope_schema_url.push(schema_url);
        Ok(())
    }

    fn scope(
        &mut self,
        sid: u32,
        mut r: Reader<'a>,
        name: &mut &'a [u8],
        version: &mut &'a [u8],
        dropped: &mut u32,
    ) -> R<()> {
        let mut n_attrs = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => set_str(name, r.bytes()?, "name")?,
                k if k == key(2, LEN) => set_str(version, r.bytes()?, "version")?,
                k if k == key(3, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.scope_attrs, sid, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(4, VARINT) => *dropped = r.varint()? as u32,
                _ => r.skip(k, scope_fields)?,
            }
        }
        Ok(())
    }

    pub fn finish(self) -> R<CommonColumns> {
        let resources = vec![
            bools(&self.res_present),
            prim::<UInt32Type>(self.res_dropped),
            self.res_schema_url.finish()?,
            self.res_entity_refs.finish(),
        ];
        let scopes = vec![
            prim::<UInt32Type>(self.scope_parent),
            bools(&self.scope_present),
            self.scope_name.finish()?,
            self.scope_version.finish()?,
            prim::<UInt32Type>(self.scope_dropped),
            self.scope_schema_url.finish()?,
        ];
        Ok(CommonColumns {
            resources,
            resource_attrs: self.res_attrs.finish()?,
            scopes,
            scope_attrs: self.scope_attrs.finish()?,
        })
    }
}

fn resource_fields(f: u32) -> Option<(&'static str, u32)> {
    match f {
        1 => Some(("attributes", LEN)),
        2 => Some(("dropped_attributes_count", VARINT)),
        3 => Some(("entity_refs", LEN)),
        _ => None,
    }
}

fn scope_fields(f: u32) -> Option<(&'static str, u32)> {
    match f {
        1 => Some(("name", LEN)),
        2 => Some(("version", LEN)),
        3 => Some(("attributes", LEN)),
        4 => Some(("dropped_attributes_count", VARINT)),
        _ => None,
    }
}

/// `KeyValue`'s declared fields, for attributes and for the key-values of nested kvlists.
pub(super) fn key_value_fields(f: u32) -> Option<(&'static str, u32)> {
    match f {
        1 => Some(("key", LEN)),
        2 => Some(("value", LEN)),
        3 => Some(("key_strindex", VARINT)),
        _ => None,
    }
}

/// Decodes one `KeyValue` into an attribute table row with parent `parent`.
#[inline]
pub(crate) fn key_value<'a>(
    attrs: &mut Attrs<'a>,
    parent: u32,
    index: u32,
    mut r: Reader<'a>,
    strict: bool,
) -> R<()> {
    if !strict && let Some((k, s)) = plain_string_attribute(r.all()) {
        attrs.key.push_at(index, k).at("key")?;
        attrs.parent.push(parent);
        attrs.vals.push(Val::Str(s));
        return Ok(());
    }
    let mut k: &'a [u8] = &[];
    let mut v = Val::Absent;
    while r.has_more() {
        let t = r.key()?;
        if t == key(1, LEN) {
            set_str(&mut k, r.bytes()?, "key")?;
        } else if t == key(2, LEN) {
            let m = r.message()?;
            if matches!(v, Val::Absent) {
                v = Val::Empty;
            }
            v = any_value(m, v).at("value")?;
        } else if t == key(3, VARINT) {
            // `key_strindex` is profiles-only: read (its wire type is checked, as by prost)
            // and ignored.
            r.varint()?;
        } else {
            r.skip(t, key_value_fields)?;
        }
    }
    attrs.key.push_at(index, k).at("key")?;
    attrs.parent.push(parent);
    attrs.vals.push(v);
    Ok(())
}

/// The usual encoding of a string attribute: `key`, then `value` holding only
/// `string_value`, every length one byte (key and value under 128 bytes). Returns the key and
/// the string, which is what the general loop in [`key_value`] makes of these bytes; `None`
/// for any other layout (which the general loop then decodes).
#[inline(always)]
pub(super) fn plain_string_attribute(b: &[u8]) -> Option<(&[u8], &[u8])> {
    const KEY: u8 = key(1, LEN) as u8;
    const VALUE: u8 = key(2, LEN) as u8;
    const STRING_VALUE: u8 = key(1, LEN) as u8;
    let [KEY, key_len, ref rest @ ..] = *b else {
        return None;
    };
    if key_len >= 0x80 {
        return None;
    }
    let (k, rest) = rest.split_at_checked(key_len as usize)?;
    let [VALUE, value_len, STRING_VALUE, str_len, ref s @ ..] = *rest else {
        return None;
    };
    let one_byte_lengths = value_len < 0x80 && str_len < 0x80;
    (one_byte_lengths && value_len as usize == s.len() + 2 && str_len as usize == s.len())
        .then_some((k, s))
}

pub(crate) fn any_value_fields(f: u32) -> Option<(&'static str, u32)> {
    match f {
        1 => Some(("string_value", LEN)),
        2 => Some(("bool_value", VARINT)),
        3 => Some(("int_value", VARINT)),
        4 => Some(("double_value", I64)),
        5 => Some(("array_value", LEN)),
        6 => Some(("kvlist_value", LEN)),
        7 => Some(("bytes_value", LEN)),
        8 => Some(("string_value_strindex", VARINT)),
        _ => None,
    }
}

/// Decodes an `AnyValue` message into `v`. A later oneof field replaces an earlier one, as in
/// prost. `array_value`/`kvlist_value` keep the whole message's bytes and are validated with
/// prost (rare; prost also enforces its recursion limit on deeply nested values).
/// Takes and returns the value by value (not `&mut`) so it stays in registers on the hot
/// path; the input value is what a previous occurrence of the same field left (merge).
#[inline(always)]
pub(crate) fn any_value<'a>(mut r: Reader<'a>, mut v: Val<'a>) -> R<Val<'a>> {
    let whole = r.all();
    // An array or kvlist a later oneof field replaced must still be valid, as prost checks
    // every occurrence (found by fuzzing).
    let mut nested = false;
    while r.has_more() {
        let t = r.key()?;
        match t {
            t if t == key(1, LEN) => {
                let s = r.bytes()?;
                v = Val::Str(s);
            }
            t if t == key(2, VARINT) => v = Val::Bool(r.varint()? != 0),
            t if t == key(3, VARINT) => v = Val::Int(r.varint()? as i64),
            t if t == key(4, I64) => v = Val::Double(r.f64()?),
            t if t == key(5, LEN) => {
                r.bytes()?;
                v = Val::Array(whole);
                nested = true;
            }
            t if t == key(6, LEN) => {
                r.bytes()?;
                v = Val::Map(whole);
                nested = true;
            }
            t if t == key(7, LEN) => v = Val::Bytes(r.bytes()?),
            t if t == key(8, VARINT) => {
                // `string_value_strindex` is profiles-only; the spec says to treat the value
                // as absent for other signals, so the AnyValue becomes empty.
                r.varint()?;
                v = Val::Empty;
            }
            _ => r.skip(t, any_value_fields)?,
        }
    }
    if let Val::Array(b) | Val::Map(b) = v {
        if super::nested::check(Reader::new(b, r.base()))? {
            v = Val::NeedsRepair {
                bytes: b,
                map: matches!(v, Val::Map(_)),
            };
        }
    } else if nested {
        // The walk covers every field of the message, the replaced one included; its strings
        // are not stored, so nothing is repaired.
        super::nested::check(Reader::new(whole, r.base()))?;
    }
    Ok(v)
}
