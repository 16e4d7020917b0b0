//! Test support shared by this crate's tests, the workspace's integration tests and the
//! end-to-end tests (feature `testing`): a fake Kubernetes API server that speaks the real
//! protocol, so the code under test runs its real kube-rs client against it.

pub mod api_server;

pub use api_server::{FakeApiServer, FakeApiServerOptions};
