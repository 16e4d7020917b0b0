//! Traces: `ExportTraceServiceRequest` from the spans, events and links tables.

use arrow::datatypes::{Int32Type, UInt32Type, UInt64Type};

use super::columns::{Ids, Strs, bools, prim};
use super::wire::*;
use super::{Attrs, Envelope, add_to_parents, child_starts, range};
use crate::payload::Payload;
use crate::schema::{Table, col};

pub(super) fn encode(p: &Payload, out: &mut Vec<u8>) {
    let spans = p.table(Table::Spans);
    let events = p.table(Table::SpanEvents);
    let links = p.table(Table::SpanLinks);
    let (n_spans, n_events, n_links) = (spans.num_rows(), events.num_rows(), links.num_rows());

    // --- events, sized per span
    let ev_parent = p.parent_ids(Table::SpanEvents).values();
    let ev_time = prim::<UInt64Type>(events, col::TIME_UNIX_NANO);
    let ev_name = Strs::of(events, col::NAME);
    let ev_dropped = prim::<UInt32Type>(events, col::DROPPED_ATTRIBUTES_COUNT);
    let ev_attrs = Attrs::new(p, Table::SpanEventAttrs, n_events);
    let ev_body: Vec<usize> = (0..n_events)
        .map(|e| {
            fixed64_size(ev_time[e])
                + str_size(ev_name.len_of(e))
                + ev_attrs.size(e)
                + varint_size(ev_dropped[e] as u64)
        })
        .collect();
    let mut ev_per_span = vec![0usize; n_spans];
    add_to_parents(
        &mut ev_per_span,
        ev_parent,
        ev_body.iter().map(|&l| len_field_size(l)),
    );

    // --- links, sized per span
    let ln_parent = p.parent_ids(Table::SpanLinks).values();
    let ln_trace_id = Ids::of(links, col::TRACE_ID);
    let ln_span_id = Ids::of(links, col::SPAN_ID);
    let ln_trace_state = Strs::of(links, col::TRACE_STATE);
    let ln_dropped = prim::<UInt32Type>(links, col::DROPPED_ATTRIBUTES_COUNT);
    let ln_flags = prim::<UInt32Type>(links, col::FLAGS);
    let ln_attrs = Attrs::new(p, Table::SpanLinkAttrs, n_links);
    let ln_body: Vec<usize> = (0..n_links)
        .map(|l| {
            ln_trace_id.size(l)
                + ln_span_id.size(l)
                + str_size(ln_trace_state.len_of(l))
                + ln_attrs.size(l)
                + varint_size(ln_dropped[l] as u64)
                + fixed32_size(ln_flags[l])
        })
        .collect();
    let mut ln_per_span = vec![0usize; n_spans];
    add_to_parents(
        &mut ln_per_span,
        ln_parent,
        ln_body.iter().map(|&l| len_field_size(l)),
    );

    // --- spans, sized per scope
    let sp_parent = p.parent_ids(Table::Spans).values();
    let trace_id = Ids::of(spans, col::TRACE_ID);
    let span_id = Ids::of(spans, col::SPAN_ID);
    let trace_state = Strs::of(spans, col::TRACE_STATE);
    let parent_span_id = Ids::of(spans, col::PARENT_SPAN_ID);
    let flags = prim::<UInt32Type>(spans, col::FLAGS);
    let name = Strs::of(spans, col::NAME);
    let kind = prim::<Int32Type>(spans, col::KIND);
    let start = prim::<UInt64Type>(spans, col::START_TIME_UNIX_NANO);
    let end = prim::<UInt64Type>(spans, col::END_TIME_UNIX_NANO);
    let dropped_attrs = prim::<UInt32Type>(spans, col::DROPPED_ATTRIBUTES_COUNT);
    let dropped_events = prim::<UInt32Type>(spans, col::DROPPED_EVENTS_COUNT);
    let dropped_links = prim::<UInt32Type>(spans, col::DROPPED_LINKS_COUNT);
    let status_present = bools(spans, col::STATUS_PRESENT);
    let status_code = prim::<Int32Type>(spans, col::STATUS_CODE);
    let status_message = Strs::of(spans, col::STATUS_MESSAGE);
    let sp_attrs = Attrs::new(p, Table::SpanAttrs, n_spans);

    let status_body =
        |s: usize| str_size(status_message.len_of(s)) + varint_size(i32_wire(status_code[s]));
    let sp_body: Vec<usize> = (0..n_spans)
        .map(|s| {
            let mut len = trace_id.size(s)
                + span_id.size(s)
                + str_size(trace_state.len_of(s))
                + parent_span_id.size(s)
                + str_size(name.len_of(s))
                + varint_size(i32_wire(kind[s]))
                + fixed64_size(start[s])
                + fixed64_size(end[s])
                + sp_attrs.size(s)
                + varint_size(dropped_attrs[s] as u64)
                + ev_per_span[s]
                + varint_size(dropped_events[s] as u64)
                + ln_per_span[s]
                + varint_size(dropped_links[s] as u64);
            if status_present.value(s) {
                len += len_field_size(status_body(s));
            }
            // flags is field 16: a two-byte tag
            if flags[s] != 0 {
                len += 6;
            }
            len
        })
        .collect();
    let n_scopes = p.table(Table::Scopes).num_rows();
    let mut per_scope = vec![0usize; n_scopes];
    add_to_parents(
        &mut per_scope,
        sp_parent,
        sp_body.iter().map(|&l| len_field_size(l)),
    );
    let sp_starts = child_starts(sp_parent, n_scopes);
    let ev_starts = child_starts(ev_parent, n_spans);
    let ln_starts = child_starts(ln_parent, n_spans);

    let env = Envelope::new(p, &per_scope);
    env.write(out, |out, scope| {
        for s in range(&sp_starts, scope) {
            put_header(out, 0x12, sp_body[s]);
            trace_id.write(out, 0x0a, s);
            span_id.write(out, 0x12, s);
            put_str(out, 0x1a, trace_state.get(s));
            parent_span_id.write(out, 0x22, s);
            put_str(out, 0x2a, name.get(s));
            put_varint_field(out, 0x30, i32_wire(kind[s]));
            put_fixed64(out, 0x39, start[s]);
            put_fixed64(out, 0x41, end[s]);
            sp_attrs.write(out, 0x4a, s);
            put_varint_field(out, 0x50, dropped_attrs[s] as u64);
            for e in range(&ev_starts, s) {
                put_header(out, 0x5a, ev_body[e]);
                put_fixed64(out, 0x09, ev_time[e]);
                put_str(out, 0x12, ev_name.get(e));
                ev_attrs.write(out, 0x1a, e);
                put_varint_field(out, 0x20, ev_dropped[e] as u64);
            }
            put_varint_field(out, 0x60, dropped_events[s] as u64);
            for l in range(&ln_starts, s) {
                put_header(out, 0x6a, ln_body[l]);
                ln_trace_id.write(out, 0x0a, l);
                ln_span_id.write(out, 0x12, l);
                put_str(out, 0x1a, ln_trace_state.get(l));
                ln_attrs.write(out, 0x22, l);
                put_varint_field(out, 0x28, ln_dropped[l] as u64);
                put_fixed32(out, 0x35, ln_flags[l]);
            }
            put_varint_field(out, 0x70, dropped_links[s] as u64);
            if status_present.value(s) {
                put_header(out, 0x7a, status_body(s));
                put_str(out, 0x12, status_message.get(s));
                put_varint_field(out, 0x18, i32_wire(status_code[s]));
            }
            if flags[s] != 0 {
                // field 16, wire type 5: varint tag 0x85 0x01
                out.put(&[0x85, 0x01]);
                out.put(&flags[s].to_le_bytes());
            }
        }
    });
}
