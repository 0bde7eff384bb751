//! The one public error type of the core, and its mapping onto upstream Trove faults.

use uuid::Uuid;

/// Result alias used throughout trove-rs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the control plane.
///
/// Each variant maps onto exactly one upstream fault (name and HTTP status) through [`Error::fault`],
/// so the HTTP layer never has to guess.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource does not exist (or is not visible to the caller's tenant).
    #[error("{what} {id} could not be found.")]
    NotFound {
        /// Kind of resource, e.g. "Instance".
        what: &'static str,
        /// Identifier that was looked up.
        id: String,
    },
    /// A request body failed schema validation.
    #[error("Validation error: {message}")]
    Validation {
        /// What was wrong, naming the offending field.
        message: String,
    },
    /// A request is well-formed but not acceptable (upstream `BadRequest` family, 400).
    #[error("{message}")]
    BadRequest {
        /// Human readable reason.
        message: String,
    },
    /// The resource is in a state where the operation is not allowed (422).
    #[error("{message}")]
    Unprocessable {
        /// Human readable reason.
        message: String,
    },
    /// Upstream's `exception.Forbidden`, which Trove answers with 401 (a quirk kept for compatibility).
    #[error("{message}")]
    Unauthorized {
        /// Human readable reason.
        message: String,
    },
    /// The caller may not do this (403).
    #[error("{message}")]
    Forbidden {
        /// Human readable reason.
        message: String,
    },
    /// A quota would be exceeded (413).
    #[error("Quota exceeded for resources: {resources:?}.")]
    QuotaExceeded {
        /// Resources over their limit.
        resources: Vec<String>,
    },
    /// A size or rate limit was exceeded (413).
    #[error("{message}")]
    OverLimit {
        /// Human readable reason.
        message: String,
        /// Seconds after which a retry may succeed (rate limits).
        retry_after: Option<u64>,
    },
    /// The operation conflicts with the state of a resource (409), including lost optimistic-concurrency races.
    #[error("{message}")]
    Conflict {
        /// Human readable reason.
        message: String,
    },
    /// The operation is not implemented for this datastore or deployment (501).
    #[error("{message}")]
    NotImplemented {
        /// Human readable reason.
        message: String,
    },
    /// A guest agent answered with an error.
    #[error("guest of instance {instance_id} failed: {message}")]
    Guest {
        /// The instance whose guest failed.
        instance_id: Uuid,
        /// The guest's message.
        message: String,
    },
    /// A deadline passed (an RPC call, a build, a poll).
    #[error("timed out: {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
    },
    /// An adapter (store, bus, compute, storage) failed.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Which backend, e.g. "sqlite", "amqp", "local-compute".
        backend: &'static str,
        /// What went wrong. Never contains secrets.
        message: String,
        /// Whether retrying the same call may succeed.
        transient: bool,
    },
}

/// An upstream fault: the HTTP status and the fault name used as the key of the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status code.
    pub status: u16,
    /// Upstream fault name, e.g. `itemNotFound`.
    pub name: &'static str,
}

impl Fault {
    /// The fault upstream Trove uses for an HTTP status.
    pub const fn for_status(status: u16) -> Fault {
        let name = match status {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            422 => "unprocessableEntity",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "instanceFault",
        };
        Fault { status, name }
    }
}

impl Error {
    /// The upstream fault this error is answered with.
    pub fn fault(&self) -> Fault {
        let status = match self {
            Error::NotFound { .. } => 404,
            Error::Validation { .. } | Error::BadRequest { .. } => 400,
            Error::Unprocessable { .. } => 422,
            Error::Unauthorized { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::QuotaExceeded { .. } | Error::OverLimit { .. } => 413,
            Error::Conflict { .. } => 409,
            Error::NotImplemented { .. } => 501,
            Error::Guest { .. } | Error::Timeout { .. } => 500,
            Error::Backend { transient, .. } => {
                if *transient {
                    503
                } else {
                    500
                }
            }
        };
        Fault::for_status(status)
    }

    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend { transient, .. } => *transient,
            Error::Timeout { .. } => true,
            Error::Conflict { .. } => true,
            Error::NotFound { .. }
            | Error::Validation { .. }
            | Error::BadRequest { .. }
            | Error::Unprocessable { .. }
            | Error::Unauthorized { .. }
            | Error::Forbidden { .. }
            | Error::QuotaExceeded { .. }
            | Error::OverLimit { .. }
            | Error::NotImplemented { .. }
            | Error::Guest { .. } => false,
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: &'static str, id: impl ToString) -> Error {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }
    /// Shorthand for [`Error::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::BadRequest {
            message: message.into(),
        }
    }
    /// Shorthand for [`Error::Validation`].
    pub fn validation(message: impl Into<String>) -> Error {
        Error::Validation {
            message: message.into(),
        }
    }
    /// Shorthand for [`Error::Unprocessable`].
    pub fn unprocessable(message: impl Into<String>) -> Error {
        Error::Unprocessable {
            message: message.into(),
        }
    }
    /// Shorthand for [`Error::NotImplemented`].
    pub fn not_implemented(message: impl Into<String>) -> Error {
        Error::NotImplemented {
            message: message.into(),
        }
    }
    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict {
            message: message.into(),
        }
    }
    /// Shorthand for a [`Error::Backend`] error.
    pub fn backend(backend: &'static str, message: impl ToString, transient: bool) -> Error {
        Error::Backend {
            backend,
            message: message.to_string(),
            transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_follow_upstream_table() {
        assert_eq!(
            Error::not_found("Instance", "x").fault(),
            Fault {
                status: 404,
                name: "itemNotFound"
            }
        );
        assert_eq!(
            Error::unprocessable("x").fault().name,
            "unprocessableEntity"
        );
        assert_eq!(
            Error::QuotaExceeded { resources: vec![] }.fault().status,
            413
        );
        assert_eq!(
            Error::Unauthorized {
                message: String::new()
            }
            .fault()
            .status,
            401
        );
        assert_eq!(Error::not_implemented("x").fault().name, "notImplemented");
        assert_eq!(Error::backend("x", "y", true).fault().status, 503);
    }
}
