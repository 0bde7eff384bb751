//! In-memory implementations of every port, plus a simulated datastore strategy, so an embedder (or a test)
//! can run the whole control plane in one process with no external service. Pure Rust, no I/O.

mod auth;
mod bus;
mod clock;
mod compute;
mod simulated;
mod storage;
mod store;

pub use auth::{NoAuth, StaticTokens};
pub use bus::MemoryBus;
pub use clock::{ManualClock, Ticker};
pub use compute::{MemoryCompute, NoopLauncher, RecordingLauncher};
pub use simulated::{SimulatedEngine, SimulatedStrategy, SimulatedStrategyFactory};
pub use storage::{MemoryBackupStore, MemoryBlockStorage};
pub use store::MemoryStore;
