//! Arrow -> OTLP protobuf / JSON. (being written)
