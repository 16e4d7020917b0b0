//! Test support shared by this crate's tests, the workspace's integration tests and the
//! end-to-end tests (feature `testing`): fakes that speak the real protocols, so the code under
//! test runs its real clients against them — a Kubernetes API server (kube-rs) and the EC2
//! instance metadata service (resourcedetection's IMDS client).

pub mod api_server;
pub mod imds;

pub use api_server::{FakeApiServer, FakeApiServerOptions};
pub use imds::{FakeImds, FakeInstance, ImdsMode};
