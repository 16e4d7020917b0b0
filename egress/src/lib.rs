//! sluice-egress
