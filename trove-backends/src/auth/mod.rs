//! Authenticators: a static token file and Keystone v3 token validation. The no-identity-service
//! authenticators ([`NoAuth`], [`StaticTokens`]) live in `trove_core::memory` and are re-exported here.

mod keystone;
mod token_file;

pub use keystone::{KeystoneAuth, KeystoneConfig};
pub use token_file::{load_token_file, parse_token_file};
pub use trove_core::memory::{NoAuth, StaticTokens};
