//! The history of a run: every attempt of every operation with its outcome
//! (ok, failed, indeterminate), as Jepsen records it, and the figures the
//! report prints.

use std::time::Instant;

use crate::ops::{Answer, Op};

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Answered OK.
    Ok(Answer),
    /// Refused: nothing happened (e.g. `RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`).
    Failed(String),
    /// Unknown (connection lost, deadline, `UNAVAILABLE`): retried with the
    /// same request id.
    Indeterminate(String),
}

/// One attempt of one operation.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The client that sent it.
    pub client: usize,
    /// The operation (the same value on every retry).
    pub op: Op,
    /// 0 for the first attempt, then 1, 2, … for retries.
    pub attempt: u32,
    /// When it was sent.
    pub invoked: Instant,
    /// When its outcome was known.
    pub completed: Instant,
    /// The outcome.
    pub outcome: Outcome,
}

/// Every attempt, in completion order.
#[derive(Debug, Default)]
pub struct History {
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Counts over a history.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Attempts.
    pub attempts: u64,
    /// Answered OK.
    pub ok: u64,
    /// Refused.
    pub failed: u64,
    /// Outcome unknown.
    pub indeterminate: u64,
}

impl History {
    /// Counts the attempts by outcome.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for entry in &self.entries {
            counts.attempts += 1;
            match entry.outcome {
                Outcome::Ok(_) => counts.ok += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Indeterminate(_) => counts.indeterminate += 1,
            }
        }
        counts
    }
}
