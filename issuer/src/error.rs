//! Errors of the write side, shaped so the edge maps each to one gRPC code
//! (DESIGN.md §4) without inspecting messages.

use storage::StorageError;

/// Why an issuer operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Bad input: names the field and the rule broken (INVALID_ARGUMENT).
    #[error("{field}: {rule}")]
    InvalidArgument {
        /// The offending field, e.g. `gtin` or `count`.
        field: String,
        /// The rule broken.
        rule: String,
    },
    /// The thing asked about does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with master data or state (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A registration conflicts with what is already registered (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// A serial space or the guessing rule allows nothing more (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
    /// The shard's queue is full: try again later (RESOURCE_EXHAUSTED).
    #[error(
        "shard {shard} is overloaded ({depth} requests queued); retry later with the same request id"
    )]
    Overloaded {
        /// The shard.
        shard: usize,
        /// Its queue limit.
        depth: usize,
    },
    /// Storage failed: the outcome is indeterminate, retry with the same request id (UNAVAILABLE).
    #[error("storage: {0}; outcome indeterminate, retry with the same request id")]
    Storage(#[from] StorageError),
    /// A stored record could not be decoded: corruption (UNAVAILABLE, the store fail-stops).
    #[error("corrupt record: {0}")]
    Corrupt(#[from] crate::codec::DecodeError),
    /// The status index is still being rebuilt from storage: nothing may
    /// change state yet (UNAVAILABLE; retry shortly).
    #[error("starting: the status index is being rebuilt from storage; retry shortly")]
    Starting,
    /// The status index refused an update after a durable commit: a defect
    /// (UNAVAILABLE; logged as an error).
    #[error("status index: {0}")]
    Index(#[from] verifier::IndexError),
    /// The writer is gone (shutting down) (UNAVAILABLE).
    #[error("the issuer is shutting down")]
    ShuttingDown,
    /// A writer's helper thread could not start or ended without an answer:
    /// what was durable before stays, the rest was not done (UNAVAILABLE;
    /// retry with the same request id).
    #[error("{0}; retry with the same request id")]
    Interrupted(String),
}

impl IssuerError {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        IssuerError::InvalidArgument {
            field: field.into(),
            rule: rule.into(),
        }
    }
}
