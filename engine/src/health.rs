//! Service health as seen by the `health_check` extension: ready once every component started,
//! not ready again from the moment shutdown begins (so load balancers stop sending first).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Starting = 0,
    Ready = 1,
    ShuttingDown = 2,
}

#[derive(Clone, Debug, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    pub fn set(&self, s: Status) {
        self.0.store(s as u8, Ordering::Release);
    }
    pub fn status(&self) -> Status {
        match self.0.load(Ordering::Acquire) {
            1 => Status::Ready,
            2 => Status::ShuttingDown,
            _ => Status::Starting,
        }
    }
}
