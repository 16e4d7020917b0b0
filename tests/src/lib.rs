//! Whole-binary integration tests for sluice live in tests/tests/.
