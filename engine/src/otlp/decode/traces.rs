//! `ExportTraceServiceRequest` -> Spans, SpanAttrs, SpanEvents, SpanEventAttrs, SpanLinks,
//! SpanLinkAttrs (plus the common Resources/Scopes tables).

use arrow::array::ArrayRef;
use arrow::datatypes::{Int32Type, UInt32Type, UInt64Type};

use super::builders::{Attrs, Dict, FixedBin, Str, bools, check_id, prim, set_str};
use super::common::{Items, key_value};
use super::wire::{Ctx, I32, I64, LEN, R, Reader, VARINT, key};

/// Input bytes per span, a low guess (530 in the realistic benchmark request).
const SPAN_BYTES: usize = 512;

/// Input bytes per span attribute, a low guess: 52 in the realistic benchmark request (HTTP
/// and database spans), so the table is sized with some room and rarely grows.
const ATTR_BYTES_PER_ROW: usize = 48;

pub(crate) struct Traces<'a> {
    strict: bool,
    // spans
    parent: Vec<u32>,
    trace_id: FixedBin<16>,
    span_id: FixedBin<8>,
    trace_state: Str,
    parent_span_id: FixedBin<8>,
    flags: Vec<u32>,
    name: Dict<'a>,
    kind: Vec<i32>,
    start: Vec<u64>,
    end: Vec<u64>,
    dropped_attrs: Vec<u32>,
    dropped_events: Vec<u32>,
    dropped_links: Vec<u32>,
    status_present: Vec<bool>,
    status_code: Vec<i32>,
    status_message: Str,
    attrs: Attrs<'a>,
    // events
    ev_parent: Vec<u32>,
    ev_time: Vec<u64>,
    ev_name: Dict<'a>,
    ev_dropped: Vec<u32>,
    ev_attrs: Attrs<'a>,
    // links
    ln_parent: Vec<u32>,
    ln_trace_id: FixedBin<16>,
    ln_span_id: FixedBin<8>,
    ln_trace_state: Str,
    ln_dropped: Vec<u32>,
    ln_flags: Vec<u32>,
    ln_attrs: Attrs<'a>,
}

fn span_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("trace_id", LEN),
        2 => ("span_id", LEN),
        3 => ("trace_state", LEN),
        4 => ("parent_span_id", LEN),
        5 => ("name", LEN),
        6 => ("kind", VARINT),
        7 => ("start_time_unix_nano", I64),
        8 => ("end_time_unix_nano", I64),
        9 => ("attributes", LEN),
        10 => ("dropped_attributes_count", VARINT),
        11 => ("events", LEN),
        12 => ("dropped_events_count", VARINT),
        13 => ("links", LEN),
        14 => ("dropped_links_count", VARINT),
        15 => ("status", LEN),
        16 => ("flags", I32),
        _ => return None,
    })
}

fn status_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        2 => ("message", LEN),
        3 => ("code", VARINT),
        _ => return None,
    })
}

fn event_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("time_unix_nano", I64),
        2 => ("name", LEN),
        3 => ("attributes", LEN),
        4 => ("dropped_attributes_count", VARINT),
        _ => return None,
    })
}

fn link_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("trace_id", LEN),
        2 => ("span_id", LEN),
        3 => ("trace_state", LEN),
        4 => ("attributes", LEN),
        5 => ("dropped_attributes_count", VARINT),
        6 => ("flags", I32),
        _ => return None,
    })
}

impl<'a> Items<'a> for Traces<'a> {
    const RESOURCES: &'static str = "resource_spans";
    const SCOPES: &'static str = "scope_spans";
    const ITEMS: &'static str = "spans";

    #[inline]
    fn item(&mut self, scope: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.parent.len() as u32;
        let mut trace_id: &[u8] = &[];
        let mut span_id: &[u8] = &[];
        let mut trace_state: &[u8] = &[];
        let mut parent_span_id: &[u8] = &[];
        let mut flags = 0u32;
        let mut name: &'a [u8] = &[];
        let mut kind = 0i32;
        let mut start = 0u64;
        let mut end = 0u64;
        let mut dropped_attrs = 0u32;
        let mut dropped_events = 0u32;
        let mut dropped_links = 0u32;
        let mut status_present = false;
        let mut status_code = 0i32;
        let mut status_message: &[u8] = &[];
        let (mut n_attrs, mut n_events, mut n_links) = (0u32, 0u32, 0u32);
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(9, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(1, LEN) => trace_id = r.bytes()?,
                k if k == key(2, LEN) => span_id = r.bytes()?,
                k if k == key(3, LEN) => set_str(&mut trace_state, r.bytes()?, "trace_state")?,
                k if k == key(4, LEN) => parent_span_id = r.bytes()?,
                k if k == key(5, LEN) => set_str(&mut name, r.bytes()?, "name")?,
                k if k == key(6, VARINT) => kind = r.varint()? as i32,
                k if k == key(7, I64) => start = r.fixed64()?,
                k if k == key(8, I64) => end = r.fixed64()?,
                k if k == key(10, VARINT) => dropped_attrs = r.varint()? as u32,
                k if k == key(11, LEN) => {
                    let m = r.message()?;
                    self.event(row, m).at_idx("events", n_events)?;
                    n_events += 1;
                }
                k if k == key(12, VARINT) => dropped_events = r.varint()? as u32,
                k if k == key(13, LEN) => {
                    let m = r.message()?;
                    self.link(row, m).at_idx("links", n_links)?;
                    n_links += 1;
                }
                k if k == key(14, VARINT) => dropped_links = r.varint()? as u32,
                k if k == key(15, LEN) => {
                    // A repeated `status` merges field by field, as in prost.
                    status_present = true;
                    let mut s = r.message()?;
                    while s.has_more() {
                        let k = s.key().at("status")?;
                        if k == key(2, LEN) {
                            set_str(&mut status_message, s.bytes().at("status")?, "message")
                                .at("status")?;
                        } else if k == key(3, VARINT) {
                            status_code = s.varint().at("status")? as i32;
                        } else {
                            s.skip(k, status_fields).at("status")?;
                        }
                    }
                }
                k if k == key(16, I32) => flags = r.fixed32()?,
                _ => r.skip(k, span_fields)?,
            }
        }
        check_id::<16>(trace_id, "trace_id")?;
        check_id::<8>(span_id, "span_id")?;
        check_id::<8>(parent_span_id, "parent_span_id")?;
        self.name.push(name).at("name")?;
        self.parent.push(scope);
        self.trace_id.push(trace_id);
        self.span_id.push(span_id);
        self.trace_state.push(trace_state);
        self.parent_span_id.push(parent_span_id);
        self.flags.push(flags);
        self.kind.push(kind);
        self.start.push(start);
        self.end.push(end);
        self.dropped_attrs.push(dropped_attrs);
        self.dropped_events.push(dropped_events);
        self.dropped_links.push(dropped_links);
        self.status_present.push(status_present);
        self.status_code.push(status_code);
        self.status_message.push(status_message);
        Ok(())
    }
}

impl<'a> Traces<'a> {
    /// `input_len`: the request's size, from which the span and span attribute tables are
    /// sized (a guess: a wrong one costs one growth or one shrink copy, never correctness).
    pub fn new(strict: bool, input_len: usize) -> Self {
        let (attr_rows, attr_bytes) = (input_len / ATTR_BYTES_PER_ROW, input_len / 2);
        let rows = input_len / SPAN_BYTES;
        Traces {
            strict,
            parent: Vec::with_capacity(rows),
            trace_id: FixedBin::with_capacity(rows),
            span_id: FixedBin::with_capacity(rows),
            trace_state: Str::with_capacity(rows),
            parent_span_id: FixedBin::with_capacity(rows),
            flags: Vec::with_capacity(rows),
            name: Dict::with_capacity(rows),
            kind: Vec::with_capacity(rows),
            start: Vec::with_capacity(rows),
            end: Vec::with_capacity(rows),
            dropped_attrs: Vec::with_capacity(rows),
            dropped_events: Vec::with_capacity(rows),
            dropped_links: Vec::with_capacity(rows),
            status_present: Vec::with_capacity(rows),
            status_code: Vec::with_capacity(rows),
            status_message: Str::with_capacity(rows),
            attrs: Attrs::with_capacity(attr_rows, attr_bytes),
            ev_parent: Vec::new(),
            ev_time: Vec::new(),
            ev_name: Dict::new(),
            ev_dropped: Vec::new(),
            ev_attrs: Attrs::new(),
            ln_parent: Vec::new(),
            ln_trace_id: FixedBin::new(),
            ln_span_id: FixedBin::new(),
            ln_trace_state: Str::new(),
            ln_dropped: Vec::new(),
            ln_flags: Vec::new(),
            ln_attrs: Attrs::new(),
        }
    }

    fn event(&mut self, span: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.ev_parent.len() as u32;
        let mut time = 0u64;
        let mut name: &'a [u8] = &[];
        let mut dropped = 0u32;
        let mut n_attrs = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, I64) => time = r.fixed64()?,
                k if k == key(2, LEN) => set_str(&mut name, r.bytes()?, "name")?,
                k if k == key(3, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.ev_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(4, VARINT) => dropped = r.varint()? as u32,
                _ => r.skip(k, event_fields)?,
            }
        }
        self.ev_name.push(name).at("name")?;
        self.ev_parent.push(span);
        self.ev_time.push(time);
        self.ev_dropped.push(dropped);
        Ok(())
    }

    fn link(&mut self, span: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.ln_parent.len() as u32;
        let mut trace_id: &[u8] = &[];
        let mut span_id: &[u8] = &[];
        let mut trace_state: &[u8] = &[];
        let mut dropped = 0u32;
        let mut flags = 0u32;
        let mut n_attrs = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => trace_id = r.bytes()?,
                k if k == key(2, LEN) => span_id = r.bytes()?,
                k if k == key(3, LEN) => set_str(&mut trace_state, r.bytes()?, "trace_state")?,
                k if k == key(4, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.ln_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(5, VARINT) => dropped = r.varint()? as u32,
                k if k == key(6, I32) => flags = r.fixed32()?,
                _ => r.skip(k, link_fields)?,
            }
        }
        check_id::<16>(trace_id, "trace_id")?;
        check_id::<8>(span_id, "span_id")?;
        self.ln_parent.push(span);
        self.ln_trace_id.push(trace_id);
        self.ln_span_id.push(span_id);
        self.ln_trace_state.push(trace_state);
        self.ln_dropped.push(dropped);
        self.ln_flags.push(flags);
        Ok(())
    }

    /// Spans, SpanAttrs, SpanEvents, SpanEventAttrs, SpanLinks, SpanLinkAttrs columns.
    pub fn finish(self) -> R<[Vec<ArrayRef>; 6]> {
        let spans = vec![
            prim::<UInt32Type>(self.parent),
            self.trace_id.finish()?,
            self.span_id.finish()?,
            self.trace_state.finish()?,
            self.parent_span_id.finish()?,
            prim::<UInt32Type>(self.flags),
            self.name.finish()?,
            prim::<Int32Type>(self.kind),
            prim::<UInt64Type>(self.start),
            prim::<UInt64Type>(self.end),
            prim::<UInt32Type>(self.dropped_attrs),
            prim::<UInt32Type>(self.dropped_events),
            prim::<UInt32Type>(self.dropped_links),
            bools(&self.status_present),
            prim::<Int32Type>(self.status_code),
            self.status_message.finish()?,
        ];
        let events = vec![
            prim::<UInt32Type>(self.ev_parent),
            prim::<UInt64Type>(self.ev_time),
            self.ev_name.finish()?,
            prim::<UInt32Type>(self.ev_dropped),
        ];
        let links = vec![
            prim::<UInt32Type>(self.ln_parent),
            self.ln_trace_id.finish()?,
            self.ln_span_id.finish()?,
            self.ln_trace_state.finish()?,
            prim::<UInt32Type>(self.ln_dropped),
            prim::<UInt32Type>(self.ln_flags),
        ];
        Ok([
            spans,
            self.attrs.finish()?,
            events,
            self.ev_attrs.finish()?,
            links,
            self.ln_attrs.finish()?,
        ])
    }
}
