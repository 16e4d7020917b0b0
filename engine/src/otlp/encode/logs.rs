//! Logs: `ExportLogsServiceRequest` from the logs table.

use arrow::datatypes::{Int32Type, UInt32Type, UInt64Type};

use super::columns::{Ids, Strs, prim};
use super::wire::*;
use super::{AnyCols, Attrs, Envelope, add_to_parents, child_starts, range};
use crate::payload::Payload;
use crate::schema::{Table, col};

pub(super) fn encode(p: &Payload, out: &mut Vec<u8>) {
    let logs = p.table(Table::Logs);
    let n = logs.num_rows();
    let parent = p.parent_ids(Table::Logs).values();
    let time = prim::<UInt64Type>(logs, col::TIME_UNIX_NANO);
    let observed = prim::<UInt64Type>(logs, col::OBSERVED_TIME_UNIX_NANO);
    let severity_number = prim::<Int32Type>(logs, col::SEVERITY_NUMBER);
    let severity_text = Strs::of(logs, col::SEVERITY_TEXT);
    let dropped = prim::<UInt32Type>(logs, col::DROPPED_ATTRIBUTES_COUNT);
    let flags = prim::<UInt32Type>(logs, col::FLAGS);
    let trace_id = Ids::of(logs, col::TRACE_ID);
    let span_id = Ids::of(logs, col::SPAN_ID);
    let event_name = Strs::of(logs, col::EVENT_NAME);
    // `Absent` body type = no body message; `Empty` = a body message with no value.
    let body = AnyCols::new(logs, "body_");
    let attrs = Attrs::new(p, Table::LogAttrs, n);

    let rec_body: Vec<usize> = (0..n)
        .map(|i| {
            fixed64_size(time[i])
                + varint_size(i32_wire(severity_number[i]))
                + str_size(severity_text.len_of(i))
                + body.body_len(i).map_or(0, len_field_size)
                + attrs.size(i)
                + varint_size(dropped[i] as u64)
                + fixed32_size(flags[i])
                + trace_id.size(i)
                + span_id.size(i)
                + fixed64_size(observed[i])
                + str_size(event_name.len_of(i))
        })
        .collect();
    let n_scopes = p.table(Table::Scopes).num_rows();
    let mut per_scope = vec![0usize; n_scopes];
    add_to_parents(
        &mut per_scope,
        parent,
        rec_body.iter().map(|&l| len_field_size(l)),
    );
    let starts = child_starts(parent, n_scopes);

    let env = Envelope::new(p, &per_scope);
    env.write(out, |out, scope| {
        for i in range(&starts, scope) {
            put_header(out, 0x12, rec_body[i]);
            put_fixed64(out, 0x09, time[i]);
            put_varint_field(out, 0x10, i32_wire(severity_number[i]));
            put_str(out, 0x1a, severity_text.get(i));
            if let Some(len) = body.body_len(i) {
                put_header(out, 0x2a, len);
                body.write_body(out, i);
            }
            attrs.write(out, 0x32, i);
            put_varint_field(out, 0x38, dropped[i] as u64);
            put_fixed32(out, 0x45, flags[i]);
            trace_id.write(out, 0x4a, i);
            span_id.write(out, 0x52, i);
            put_fixed64(out, 0x59, observed[i]);
            put_str(out, 0x62, event_name.get(i));
        }
    });
}
