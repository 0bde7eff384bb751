//! The Trove v1.0 REST API over axum (to be written).
