//! OTLP protobuf / JSON -> Arrow. (being written)
