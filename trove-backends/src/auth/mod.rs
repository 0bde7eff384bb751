//! Authenticators: noauth, static token file, Keystone v3 (to be written).
