//! `ExportLogsServiceRequest` -> Logs, LogAttrs (plus the common Resources/Scopes tables).

use arrow::array::ArrayRef;
use arrow::datatypes::{Int32Type, UInt32Type, UInt64Type};

use super::builders::{AnyCols, Attrs, Dict, FixedBin, Val, check_id, prim, set_str};
use super::common::{Items, any_value, key_value};
use super::wire::{Ctx, I32, I64, LEN, R, Reader, VARINT, key};

pub(crate) struct Logs<'a> {
    strict: bool,
    parent: Vec<u32>,
    time: Vec<u64>,
    observed_time: Vec<u64>,
    severity_number: Vec<i32>,
    severity_text: Dict<'a>,
    dropped_attrs: Vec<u32>,
    flags: Vec<u32>,
    trace_id: FixedBin<16>,
    span_id: FixedBin<8>,
    event_name: Dict<'a>,
    body: AnyCols,
    attrs: Attrs<'a>,
}

fn log_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("time_unix_nano", I64),
        2 => ("severity_number", VARINT),
        3 => ("severity_text", LEN),
        5 => ("body", LEN),
        6 => ("attributes", LEN),
        7 => ("dropped_attributes_count", VARINT),
        8 => ("flags", I32),
        9 => ("trace_id", LEN),
        10 => ("span_id", LEN),
        11 => ("observed_time_unix_nano", I64),
        12 => ("event_name", LEN),
        _ => return None,
    })
}

impl<'a> Items<'a> for Logs<'a> {
    const RESOURCES: &'static str = "resource_logs";
    const SCOPES: &'static str = "scope_logs";
    const ITEMS: &'static str = "log_records";

    #[inline]
    fn item(&mut self, scope: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.parent.len() as u32;
        let (mut time, mut observed) = (0u64, 0u64);
        let mut severity_number = 0i32;
        let mut severity_text: &'a [u8] = &[];
        // No body message at all is `Absent`; a body message with no value set is `Empty`.
        let mut body = Val::Absent;
        let (mut dropped, mut flags) = (0u32, 0u32);
        let mut trace_id: &[u8] = &[];
        let mut span_id: &[u8] = &[];
        let mut event_name: &'a [u8] = &[];
        let mut n_attrs = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(6, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(1, I64) => time = r.fixed64()?,
                k if k == key(11, I64) => observed = r.fixed64()?,
                k if k == key(2, VARINT) => severity_number = r.varint()? as i32,
                k if k == key(3, LEN) => set_str(&mut severity_text, r.bytes()?, "severity_text")?,
                k if k == key(5, LEN) => {
                    let m = r.message()?;
                    let prev = if matches!(body, Val::Absent) {
                        Val::Empty
                    } else {
                        body
                    };
                    body = any_value(m, prev).at("body")?;
                }
                k if k == key(7, VARINT) => dropped = r.varint()? as u32,
                k if k == key(8, I32) => flags = r.fixed32()?,
                k if k == key(9, LEN) => trace_id = r.bytes()?,
                k if k == key(10, LEN) => span_id = r.bytes()?,
                k if k == key(12, LEN) => set_str(&mut event_name, r.bytes()?, "event_name")?,
                _ => r.skip(k, log_fields)?,
            }
        }
        check_id::<16>(trace_id, "trace_id")?;
        check_id::<8>(span_id, "span_id")?;
        self.severity_text.push(severity_text).at("severity_text")?;
        self.event_name.push(event_name).at("event_name")?;
        self.parent.push(scope);
        self.time.push(time);
        self.observed_time.push(observed);
        self.severity_number.push(severity_number);
        self.dropped_attrs.push(dropped);
        self.flags.push(flags);
        self.trace_id.push(trace_id);
        self.span_id.push(span_id);
        self.body.push(body);
        Ok(())
    }
}

impl<'a> Logs<'a> {
    pub fn new(strict: bool) -> Self {
        Logs {
            strict,
            parent: Vec::new(),
            time: Vec::new(),
            observed_time: Vec::new(),
            severity_number: Vec::new(),
            severity_text: Dict::new(),
            dropped_attrs: Vec::new(),
            flags: Vec::new(),
            trace_id: FixedBin::new(),
            span_id: FixedBin::new(),
            event_name: Dict::new(),
            body: AnyCols::new(),
            attrs: Attrs::new(),
        }
    }

    /// Logs and LogAttrs columns.
    pub fn finish(self) -> R<[Vec<ArrayRef>; 2]> {
        let mut logs = vec![
            prim::<UInt32Type>(self.parent),
            prim::<UInt64Type>(self.time),
            prim::<UInt64Type>(self.observed_time),
            prim::<Int32Type>(self.severity_number),
            self.severity_text.finish()?,
            prim::<UInt32Type>(self.dropped_attrs),
            prim::<UInt32Type>(self.flags),
            self.trace_id.finish()?,
            self.span_id.finish()?,
            self.event_name.finish()?,
        ];
        logs.extend(self.body.finish()?);
        Ok([logs, self.attrs.finish()?])
    }
}
