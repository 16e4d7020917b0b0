//! sluice-ingest
