//! The pack state machine of EU FMD (DOMAIN.md §3) as pure functions:
//! decommission with a reason, and undo (Art. 13). No I/O and no clock (the
//! caller passes `now`), so every state × action × window × actor case is a
//! row of the tables below.

use verifier::DecommissionReason;

use crate::records::SerialState;

/// The undo window of Art. 13: 10 days.
pub const UNDO_WINDOW_MICROS: u64 = 10 * 24 * 3600 * 1_000_000;

/// Who asks and where: the "party" Art. 13 compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor<'a> {
    /// The principal (until authentication exists, the request's actor field).
    pub party: &'a str,
    /// The location (GLN or site code).
    pub location: &'a str,
}

/// What the state machine needs to know about one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pack<'a> {
    /// Current state.
    pub state: SerialState,
    /// Current decommission reason (when decommissioned).
    pub reason: Option<DecommissionReason>,
    /// Who made the last decommission.
    pub decommissioned_by: Actor<'a>,
    /// Commit time of the last decommission.
    pub decommissioned_micros: u64,
    /// The pack's lot is recalled.
    pub recalled: bool,
    /// The pack's product is withdrawn.
    pub withdrawn: bool,
    /// The pack's lot is past its expiry.
    pub expired: bool,
}

/// Outcome of a decommission (numbering follows `DecommissionOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DecommissionOutcome {
    /// ACTIVE → DECOMMISSIONED with the reason.
    Decommissioned = 1,
    /// Same reason set again by the same party (double scan); unchanged.
    AlreadySet = 2,
    /// Already decommissioned (another reason, or the same by another party).
    AlreadyInactive = 3,
    /// The GTIN is not registered.
    UnknownProduct = 4,
    /// The serial was never issued for the GTIN.
    UnknownSerial = 5,
    /// Allocated or voided: no pack exists.
    NotCommissioned = 6,
    /// The lot given is not registered.
    UnknownLot = 7,
    /// The lot given is not the pack's.
    LotMismatch = 8,
    /// The expiry given is not the lot's.
    ExpiryMismatch = 9,
    /// The lot is recalled.
    Recalled = 10,
    /// The product is withdrawn.
    Withdrawn = 11,
    /// Expired, and the reason is not allowed for expired packs.
    Expired = 12,
    /// Outside the caller's scope.
    PermissionDenied = 13,
    /// Malformed item.
    Malformed = 14,
}

impl DecommissionOutcome {
    /// The outcome stored under `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        use DecommissionOutcome::*;
        Some(match code {
            1 => Decommissioned,
            2 => AlreadySet,
            3 => AlreadyInactive,
            4 => UnknownProduct,
            5 => UnknownSerial,
            6 => NotCommissioned,
            7 => UnknownLot,
            8 => LotMismatch,
            9 => ExpiryMismatch,
            10 => Recalled,
            11 => Withdrawn,
            12 => Expired,
            13 => PermissionDenied,
            14 => Malformed,
            _ => return None,
        })
    }
}

/// Outcome of an undo (numbering follows `UndoOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UndoOutcome {
    /// DECOMMISSIONED → ACTIVE.
    Reactivated = 1,
    /// Already active; unchanged.
    AlreadyActive = 2,
    /// Decommissioned longer ago than the window.
    WindowExceeded = 3,
    /// Decommissioned by another party.
    DifferentUser = 4,
    /// Decommissioned at another location.
    DifferentLocation = 5,
    /// Destroyed or stolen: never undone.
    NotUndoable = 6,
    /// The lot is recalled.
    Recalled = 7,
    /// The product is withdrawn.
    Withdrawn = 8,
    /// The pack is expired.
    Expired = 9,
    /// Current reason differs from the expected one.
    ReasonMismatch = 10,
    /// The GTIN is not registered.
    UnknownProduct = 11,
    /// The serial was never issued.
    UnknownSerial = 12,
    /// Allocated or voided.
    NotCommissioned = 13,
    /// The lot given is not registered.
    UnknownLot = 14,
    /// The lot given is not the pack's.
    LotMismatch = 15,
    /// The expiry given is not the lot's.
    ExpiryMismatch = 16,
    /// Outside the caller's scope.
    PermissionDenied = 17,
    /// Malformed item.
    Malformed = 18,
}

/// Reasons an expired pack may still take: it leaves the supply chain
/// (destroyed, stolen, locked for investigation, taken as a sample by an
/// authority). Supplying it (dispensed, exported, checked out, free sample)
/// is refused.
pub fn allowed_when_expired(reason: DecommissionReason) -> bool {
    matches!(
        reason,
        DecommissionReason::Destroyed
            | DecommissionReason::Stolen
            | DecommissionReason::Locked
            | DecommissionReason::Sample
    )
}

/// Decommissions one pack: the outcome, and whether the state changes.
pub fn decommission(
    pack: &Pack<'_>,
    reason: DecommissionReason,
    by: Actor<'_>,
) -> DecommissionOutcome {
    use DecommissionOutcome as O;
    match pack.state {
        SerialState::Allocated | SerialState::Voided => O::NotCommissioned,
        SerialState::Decommissioned => {
            if pack.reason == Some(reason) && pack.decommissioned_by == by {
                O::AlreadySet
            } else {
                O::AlreadyInactive
            }
        }
        SerialState::Active => {
            if pack.withdrawn {
                O::Withdrawn
            } else if pack.recalled {
                O::Recalled
            } else if pack.expired && !allowed_when_expired(reason) {
                O::Expired
            } else {
                O::Decommissioned
            }
        }
    }
}

/// Undoes the decommission of one pack at `now` (microseconds).
pub fn undo(
    pack: &Pack<'_>,
    expected: Option<DecommissionReason>,
    by: Actor<'_>,
    now: u64,
    window: u64,
) -> UndoOutcome {
    use UndoOutcome as O;
    match pack.state {
        SerialState::Allocated | SerialState::Voided => O::NotCommissioned,
        SerialState::Active => O::AlreadyActive,
        SerialState::Decommissioned => {
            let reason = pack.reason;
            if expected.is_some() && expected != reason {
                O::ReasonMismatch
            } else if matches!(
                reason,
                Some(DecommissionReason::Destroyed | DecommissionReason::Stolen)
            ) {
                O::NotUndoable
            } else if pack.withdrawn {
                O::Withdrawn
            } else if pack.recalled {
                O::Recalled
            } else if pack.expired {
                O::Expired
            } else if pack.decommissioned_by.party != by.party {
                O::DifferentUser
            } else if pack.decommissioned_by.location != by.location {
                O::DifferentLocation
            } else if reason != Some(DecommissionReason::Locked)
                && now.saturating_sub(pack.decommissioned_micros) > window
            {
                O::WindowExceeded
            } else {
                O::Reactivated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DecommissionReason as R;

    const DAY: u64 = 24 * 3600 * 1_000_000;
    const T0: u64 = 1_000 * DAY;
    const ME: Actor<'static> = Actor {
        party: "wholesaler-1",
        location: "0614141000012",
    };
    const OTHER_PARTY: Actor<'static> = Actor {
        party: "wholesaler-2",
        location: "0614141000012",
    };
    const OTHER_PLACE: Actor<'static> = Actor {
        party: "wholesaler-1",
        location: "0614141000029",
    };

    fn pack(state: SerialState, reason: Option<R>) -> Pack<'static> {
        Pack {
            state,
            reason,
            decommissioned_by: ME,
            decommissioned_micros: T0,
            recalled: false,
            withdrawn: false,
            expired: false,
        }
    }

    #[test]
    fn decommission_table() {
        use DecommissionOutcome as O;
        use SerialState as S;
        // Every state × every reason × same/other actor.
        for reason in R::ALL {
            for by in [ME, OTHER_PARTY] {
                let check = |p: Pack<'_>, expected: O| {
                    assert_eq!(
                        decommission(&p, reason, by),
                        expected,
                        "{p:?} {reason:?} {by:?}"
                    );
                };
                check(pack(S::Allocated, None), O::NotCommissioned);
                check(pack(S::Voided, None), O::NotCommissioned);
                check(pack(S::Active, None), O::Decommissioned);
                let same = if by == ME {
                    O::AlreadySet
                } else {
                    O::AlreadyInactive
                };
                check(pack(S::Decommissioned, Some(reason)), same);
                for other in R::ALL.into_iter().filter(|r| *r != reason) {
                    check(pack(S::Decommissioned, Some(other)), O::AlreadyInactive);
                }
                check(
                    Pack {
                        recalled: true,
                        ..pack(S::Active, None)
                    },
                    O::Recalled,
                );
                check(
                    Pack {
                        withdrawn: true,
                        recalled: true,
                        ..pack(S::Active, None)
                    },
                    O::Withdrawn,
                );
                let expired = if allowed_when_expired(reason) {
                    O::Decommissioned
                } else {
                    O::Expired
                };
                check(
                    Pack {
                        expired: true,
                        ..pack(S::Active, None)
                    },
                    expired,
                );
            }
        }
    }

    /// name, pack, expected reason, who asks, when, expected outcome.
    type UndoRow<'a> = (&'a str, Pack<'a>, Option<R>, Actor<'a>, u64, UndoOutcome);

    #[test]
    fn undo_table() {
        use SerialState as S;
        use UndoOutcome as O;
        let inside = T0 + 10 * DAY; // exactly 10 days: still inside
        let outside = T0 + 10 * DAY + 1;
        for reason in R::ALL {
            let undoable = !matches!(reason, R::Destroyed | R::Stolen);
            let decommissioned = pack(S::Decommissioned, Some(reason));
            #[rustfmt::skip]
            let rows: Vec<UndoRow<'_>> = vec![
                ("same party, place, inside", decommissioned, None, ME, inside,
                    if undoable { O::Reactivated } else { O::NotUndoable }),
                ("outside the window", decommissioned, None, ME, outside,
                    if !undoable { O::NotUndoable } else if reason == R::Locked { O::Reactivated } else { O::WindowExceeded }),
                ("other party", decommissioned, None, OTHER_PARTY, inside,
                    if undoable { O::DifferentUser } else { O::NotUndoable }),
                ("other place", decommissioned, None, OTHER_PLACE, inside,
                    if undoable { O::DifferentLocation } else { O::NotUndoable }),
                ("expected reason matches", decommissioned, Some(reason), ME, inside,
                    if undoable { O::Reactivated } else { O::NotUndoable }),
                ("expected reason differs", decommissioned, Some(if reason == R::Exported { R::Sample } else { R::Exported }), ME, inside,
                    O::ReasonMismatch),
                ("recalled", Pack { recalled: true, ..decommissioned }, None, ME, inside,
                    if undoable { O::Recalled } else { O::NotUndoable }),
                ("withdrawn", Pack { withdrawn: true, ..decommissioned }, None, ME, inside,
                    if undoable { O::Withdrawn } else { O::NotUndoable }),
                ("expired", Pack { expired: true, ..decommissioned }, None, ME, inside,
                    if undoable { O::Expired } else { O::NotUndoable }),
            ];
            for (name, p, expected_reason, by, now, expect) in rows {
                assert_eq!(
                    undo(&p, expected_reason, by, now, UNDO_WINDOW_MICROS),
                    expect,
                    "{name}, {reason:?}"
                );
            }
        }
        for (state, expect) in [
            (S::Active, O::AlreadyActive),
            (S::Allocated, O::NotCommissioned),
            (S::Voided, O::NotCommissioned),
        ] {
            assert_eq!(
                undo(&pack(state, None), None, ME, T0, UNDO_WINDOW_MICROS),
                expect
            );
        }
    }

    #[test]
    fn outcome_codes_round_trip() {
        for code in 1..=14 {
            assert_eq!(
                DecommissionOutcome::from_code(code).map(|o| o as u8),
                Some(code)
            );
        }
        assert_eq!(DecommissionOutcome::from_code(0), None);
        assert_eq!(DecommissionOutcome::from_code(15), None);
    }
}
