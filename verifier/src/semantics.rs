//! Verification semantics (DOMAIN.md §3–4) as one pure function, [`judge`]:
//! what is known about a pack in, the EU and US answers out. No I/O, no
//! clock (the caller passes today's date), so every case is a table row in
//! the tests below.

use gs1::{CalendarDate, Expiry};

/// The life-cycle state of one (GTIN, serial), as the index stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PackState {
    /// Never issued for this GTIN (or the GTIN is not served here).
    Unknown = 0,
    /// Issued in a pool, not commissioned: not saleable.
    Allocated = 1,
    /// Commissioned with a lot: the only saleable state.
    Active = 2,
    /// Decommissioned with a reason.
    Decommissioned = 3,
    /// Returned unused: never valid.
    Voided = 4,
}

impl PackState {
    /// The state stored under `code` (the issuer's record codes).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unknown,
            1 => Self::Allocated,
            2 => Self::Active,
            3 => Self::Decommissioned,
            4 => Self::Voided,
            _ => return None,
        })
    }

    /// Whether the pack was commissioned (its lot is on record).
    pub fn commissioned(self) -> bool {
        matches!(self, Self::Active | Self::Decommissioned)
    }
}

/// Why a pack left the Active state (EU FMD pack states). Codes follow the
/// `DecommissionReason` enum of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DecommissionReason {
    /// Supplied / dispensed to the public.
    Dispensed = 1,
    /// Destroyed.
    Destroyed = 2,
    /// Exported outside the market.
    Exported = 3,
    /// Stolen.
    Stolen = 4,
    /// Taken as a sample.
    Sample = 5,
    /// Supplied as a free sample.
    FreeSample = 6,
    /// Locked (under investigation).
    Locked = 7,
    /// Checked out (hospital, institution).
    CheckedOut = 8,
}

impl DecommissionReason {
    /// Every reason, in code order.
    pub const ALL: [DecommissionReason; 8] = [
        Self::Dispensed,
        Self::Destroyed,
        Self::Exported,
        Self::Stolen,
        Self::Sample,
        Self::FreeSample,
        Self::Locked,
        Self::CheckedOut,
    ];

    /// The reason stored under `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// Lower-case name for humans and logs (`dispensed`, `free-sample`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dispensed => "dispensed",
            Self::Destroyed => "destroyed",
            Self::Exported => "exported",
            Self::Stolen => "stolen",
            Self::Sample => "sample",
            Self::FreeSample => "free-sample",
            Self::Locked => "locked",
            Self::CheckedOut => "checked-out",
        }
    }
}

/// A given field against the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldMatch {
    /// Given and equal to the record.
    Matched,
    /// Given and different from the record.
    Mismatched,
    /// Not given.
    NotProvided,
    /// Given but not checked (serial unknown or not commissioned).
    NotChecked,
}

/// DSCSA VRS `verificationFailureReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// GTIN + serial unknown (or never commissioned); lot and expiry not checked.
    NoMatchGtinSerial,
    /// Lot and expiry both differ.
    NoMatchGtinSerialLotExpiry,
    /// The lot differs.
    NoMatchGtinSerialLot,
    /// The expiry differs.
    NoMatchGtinSerialExpiry,
    /// The pack matches but may not be redistributed (saleable-return check
    /// of a pack that is not active, or is expired, recalled, withdrawn or
    /// flagged).
    NotForRedistribution,
}

impl FailureReason {
    /// The exact wire text of GS1 Lightweight Verification Messaging.
    pub fn vrs_text(self) -> &'static str {
        match self {
            Self::NoMatchGtinSerial => "No_match_GTIN_Serial",
            Self::NoMatchGtinSerialLotExpiry => "No_match_GTIN_Serial_Lot_Expiry",
            Self::NoMatchGtinSerialLot => "No_match_GTIN_Serial_Lot",
            Self::NoMatchGtinSerialExpiry => "No_match_GTIN_Serial_Expiry",
            Self::NotForRedistribution => "Not_for_re-distribution",
        }
    }
}

/// DSCSA VRS `additionalInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdditionalInfo {
    /// The effective expiry of record is before today.
    Expired,
    /// The lot is recalled or the product withdrawn.
    Recalled,
    /// Flagged suspect by an administrator.
    Suspect,
    /// Flagged illegitimate by an administrator.
    Illegitimate,
}

impl AdditionalInfo {
    /// The exact wire text of GS1 Lightweight Verification Messaging.
    pub fn vrs_text(self) -> &'static str {
        match self {
            Self::Expired => "Expired",
            Self::Recalled => "Recalled",
            Self::Suspect => "Suspect",
            Self::Illegitimate => "Illegitimate",
        }
    }
}

/// The EU national-system alert for the same case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EuAlert {
    /// The GTIN is not registered here.
    UnknownProduct,
    /// The serial is not known (or never commissioned) for the GTIN.
    UnknownSerial,
    /// The given batch is not registered for the GTIN.
    UnknownBatch,
    /// The batch is registered but the serial belongs to another.
    BatchDoesNotMatchSerial,
    /// The expiry given differs from the batch's.
    ExpiryDoesNotMatchBatch,
}

impl EuAlert {
    /// Human-readable text, as a national system words it.
    pub fn text(self) -> &'static str {
        match self {
            Self::UnknownProduct => "unknown product code",
            Self::UnknownSerial => "unknown serial",
            Self::UnknownBatch => "unknown batch",
            Self::BatchDoesNotMatchSerial => "batch does not match serial",
            Self::ExpiryDoesNotMatchBatch => "expiry does not match batch",
        }
    }
}

/// Which question is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Purpose {
    /// Is this identifier genuine? `verified` when GTIN, serial, lot and
    /// expiry match a commissioned pack (decommissioned included; the state
    /// and flags say more).
    #[default]
    Verify,
    /// DSCSA saleable return: `verified` only when the pack also is active,
    /// not expired, not recalled or withdrawn and not flagged.
    SaleableReturn,
}

/// Flag bits of the state word.
pub(crate) const FLAG_SUSPECT: u8 = 1;
pub(crate) const FLAG_ILLEGITIMATE: u8 = 2;

/// The lot of record as the judge needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LotFacts<'a> {
    /// Lot text.
    pub lot: &'a str,
    /// Effective expiry date of the lot.
    pub effective_expiry: CalendarDate,
    /// Recalled.
    pub recalled: bool,
}

/// Everything known about one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts<'a> {
    /// `None`: the GTIN is not a registered product. `Some(withdrawn)` otherwise.
    pub product_withdrawn: Option<bool>,
    /// State of the serial (`Unknown` when never issued).
    pub state: PackState,
    /// Decommission reason code (0 = none).
    pub reason: u8,
    /// Flag bits (suspect, illegitimate).
    pub flags: u8,
    /// The serial's lot of record (commissioned packs only).
    pub lot: Option<LotFacts<'a>>,
    /// Whether the lot given in the request is registered for the GTIN
    /// (only consulted when a lot is given and differs from the record).
    pub given_lot_registered: bool,
}

/// The lot and expiry a request gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Given<'a> {
    /// Lot, if given.
    pub lot: Option<&'a str>,
    /// Expiry, if given.
    pub expiry: Option<Expiry>,
}

/// The answer for one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The GTIN is a registered product.
    pub product_known: bool,
    /// State of the serial.
    pub state: PackState,
    /// Decommission reason, when decommissioned.
    pub reason: Option<DecommissionReason>,
    /// Given lot against the record.
    pub lot_match: FieldMatch,
    /// Given expiry against the record (effective dates).
    pub expiry_match: FieldMatch,
    /// Effective expiry of record before today.
    pub expired: bool,
    /// The lot is recalled.
    pub recalled: bool,
    /// The product is withdrawn.
    pub withdrawn: bool,
    /// Flagged suspect.
    pub suspect: bool,
    /// Flagged illegitimate.
    pub illegitimate: bool,
    /// VRS `verified`.
    pub verified: bool,
    /// VRS `verificationFailureReason` (None when verified).
    pub failure: Option<FailureReason>,
    /// VRS `additionalInfo`, first of: illegitimate, suspect, recalled, expired.
    pub info: Option<AdditionalInfo>,
    /// EU alert, first of: unknown product, unknown serial, unknown batch,
    /// batch does not match serial, expiry does not match batch.
    pub alert: Option<EuAlert>,
}

fn given_match(given: bool, matched: bool) -> FieldMatch {
    match (given, matched) {
        (false, _) => FieldMatch::NotProvided,
        (true, true) => FieldMatch::Matched,
        (true, false) => FieldMatch::Mismatched,
    }
}

fn not_checked(given: bool) -> FieldMatch {
    if given {
        FieldMatch::NotChecked
    } else {
        FieldMatch::NotProvided
    }
}

/// Judges one pack. `today` is the current UTC date (also the reference for
/// the two-digit-year window of a given expiry).
pub fn judge(given: Given<'_>, facts: Facts<'_>, today: CalendarDate, purpose: Purpose) -> Verdict {
    let mut verdict = Verdict {
        product_known: facts.product_withdrawn.is_some(),
        state: facts.state,
        reason: None,
        lot_match: not_checked(given.lot.is_some()),
        expiry_match: not_checked(given.expiry.is_some()),
        expired: false,
        recalled: false,
        withdrawn: facts.product_withdrawn.unwrap_or(false),
        suspect: false,
        illegitimate: false,
        verified: false,
        failure: Some(FailureReason::NoMatchGtinSerial),
        info: None,
        alert: None,
    };
    if !verdict.product_known {
        verdict.state = PackState::Unknown;
        verdict.withdrawn = false;
        verdict.alert = Some(EuAlert::UnknownProduct);
        return verdict;
    }
    let record_lot = match facts.lot {
        Some(lot) if facts.state.commissioned() => lot,
        // Unknown, allocated or voided: no pack carries this identifier.
        _ => {
            verdict.alert = Some(EuAlert::UnknownSerial);
            return verdict;
        }
    };
    if facts.state == PackState::Decommissioned {
        verdict.reason = DecommissionReason::from_code(facts.reason);
    }
    verdict.suspect = facts.flags & FLAG_SUSPECT != 0;
    verdict.illegitimate = facts.flags & FLAG_ILLEGITIMATE != 0;
    verdict.recalled = record_lot.recalled;
    verdict.expired = record_lot.effective_expiry < today;

    let lot_matched = given.lot.is_none_or(|lot| lot == record_lot.lot);
    let expiry_matched = given
        .expiry
        .is_none_or(|expiry| expiry.effective_date(today) == record_lot.effective_expiry);
    verdict.lot_match = given_match(given.lot.is_some(), lot_matched);
    verdict.expiry_match = given_match(given.expiry.is_some(), expiry_matched);

    verdict.alert = if !lot_matched {
        Some(if facts.given_lot_registered {
            EuAlert::BatchDoesNotMatchSerial
        } else {
            EuAlert::UnknownBatch
        })
    } else if !expiry_matched {
        Some(EuAlert::ExpiryDoesNotMatchBatch)
    } else {
        None
    };

    verdict.info = if verdict.illegitimate {
        Some(AdditionalInfo::Illegitimate)
    } else if verdict.suspect {
        Some(AdditionalInfo::Suspect)
    } else if verdict.recalled || verdict.withdrawn {
        Some(AdditionalInfo::Recalled)
    } else if verdict.expired {
        Some(AdditionalInfo::Expired)
    } else {
        None
    };

    verdict.failure = match (lot_matched, expiry_matched) {
        (false, false) => Some(FailureReason::NoMatchGtinSerialLotExpiry),
        (false, true) => Some(FailureReason::NoMatchGtinSerialLot),
        (true, false) => Some(FailureReason::NoMatchGtinSerialExpiry),
        (true, true) => {
            let saleable = facts.state == PackState::Active && verdict.info.is_none();
            match purpose {
                Purpose::Verify => None,
                Purpose::SaleableReturn if saleable => None,
                Purpose::SaleableReturn => Some(FailureReason::NotForRedistribution),
            }
        }
    };
    verdict.verified = verdict.failure.is_none();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> CalendarDate {
        text.parse().unwrap()
    }

    const TODAY: &str = "2026-11-21";

    fn lot(recalled: bool) -> LotFacts<'static> {
        // Lot L1 expires 2027-12-31 (YYMMDD 271200 or 271231).
        LotFacts {
            lot: "L1",
            effective_expiry: date("2027-12-31"),
            recalled,
        }
    }

    fn expired_lot() -> LotFacts<'static> {
        LotFacts {
            lot: "L1",
            effective_expiry: date("2026-11-20"),
            recalled: false,
        }
    }

    fn facts(state: PackState) -> Facts<'static> {
        Facts {
            product_withdrawn: Some(false),
            state,
            reason: 0,
            flags: 0,
            lot: state.commissioned().then(|| lot(false)),
            given_lot_registered: true,
        }
    }

    fn given(lot: Option<&'static str>, expiry: Option<&str>) -> Given<'static> {
        Given {
            lot,
            expiry: expiry.map(|e| Expiry::new(e).unwrap()),
        }
    }

    /// What a row expects: verified, failure, info, alert, lot match, expiry match.
    type Expect = (
        bool,
        Option<FailureReason>,
        Option<AdditionalInfo>,
        Option<EuAlert>,
        FieldMatch,
        FieldMatch,
    );

    fn check(name: &str, given: Given<'_>, facts: Facts<'_>, purpose: Purpose, expect: Expect) {
        let v = judge(given, facts, date(TODAY), purpose);
        let got = (
            v.verified,
            v.failure,
            v.info,
            v.alert,
            v.lot_match,
            v.expiry_match,
        );
        assert_eq!(got, expect, "row {name}: {v:?}");
    }

    use AdditionalInfo as I;
    use EuAlert as A;
    use FailureReason as F;
    use FieldMatch::*;
    use PackState as S;
    use Purpose::*;

    #[test]
    fn table() {
        let full = given(Some("L1"), Some("271231"));
        let day00 = given(Some("L1"), Some("271200"));
        let withdrawn = Facts {
            product_withdrawn: Some(true),
            ..facts(S::Active)
        };
        let unknown_product = Facts {
            product_withdrawn: None,
            ..facts(S::Unknown)
        };
        let recalled = Facts {
            lot: Some(lot(true)),
            ..facts(S::Active)
        };
        let expired = Facts {
            lot: Some(expired_lot()),
            ..facts(S::Active)
        };
        let suspect = Facts {
            flags: FLAG_SUSPECT,
            ..facts(S::Active)
        };
        let illegitimate = Facts {
            flags: FLAG_ILLEGITIMATE | FLAG_SUSPECT,
            lot: Some(lot(true)),
            ..facts(S::Active)
        };
        let decommissioned = Facts {
            reason: DecommissionReason::Dispensed as u8,
            ..facts(S::Decommissioned)
        };
        let unknown_batch = Facts {
            given_lot_registered: false,
            ..facts(S::Active)
        };
        let nm = Some(F::NoMatchGtinSerial);
        #[rustfmt::skip]
        let rows: Vec<(&str, Given<'_>, Facts<'_>, Purpose, Expect)> = vec![
            ("active, everything matches", full, facts(S::Active), Verify, (true, None, None, None, Matched, Matched)),
            ("active, day 00 equals last day", day00, facts(S::Active), Verify, (true, None, None, None, Matched, Matched)),
            ("active, only GTIN+serial", given(None, None), facts(S::Active), Verify, (true, None, None, None, NotProvided, NotProvided)),
            ("unknown product", full, unknown_product, Verify, (false, nm, None, Some(A::UnknownProduct), NotChecked, NotChecked)),
            ("unknown serial", full, facts(S::Unknown), Verify, (false, nm, None, Some(A::UnknownSerial), NotChecked, NotChecked)),
            ("unknown serial, nothing else given", given(None, None), facts(S::Unknown), Verify, (false, nm, None, Some(A::UnknownSerial), NotProvided, NotProvided)),
            ("allocated, never commissioned", full, facts(S::Allocated), Verify, (false, nm, None, Some(A::UnknownSerial), NotChecked, NotChecked)),
            ("voided", full, facts(S::Voided), Verify, (false, nm, None, Some(A::UnknownSerial), NotChecked, NotChecked)),
            ("lot differs (registered lot)", given(Some("L2"), Some("271231")), facts(S::Active), Verify, (false, Some(F::NoMatchGtinSerialLot), None, Some(A::BatchDoesNotMatchSerial), Mismatched, Matched)),
            ("lot differs (unknown lot)", given(Some("L9"), None), unknown_batch, Verify, (false, Some(F::NoMatchGtinSerialLot), None, Some(A::UnknownBatch), Mismatched, NotProvided)),
            ("expiry differs", given(Some("L1"), Some("271130")), facts(S::Active), Verify, (false, Some(F::NoMatchGtinSerialExpiry), None, Some(A::ExpiryDoesNotMatchBatch), Matched, Mismatched)),
            ("expiry differs, no lot", given(None, Some("281231")), facts(S::Active), Verify, (false, Some(F::NoMatchGtinSerialExpiry), None, Some(A::ExpiryDoesNotMatchBatch), NotProvided, Mismatched)),
            ("lot and expiry differ", given(Some("L2"), Some("281231")), facts(S::Active), Verify, (false, Some(F::NoMatchGtinSerialLotExpiry), None, Some(A::BatchDoesNotMatchSerial), Mismatched, Mismatched)),
            ("expired", given(Some("L1"), Some("261120")), expired, Verify, (true, None, Some(I::Expired), None, Matched, Matched)),
            ("recalled lot", full, recalled, Verify, (true, None, Some(I::Recalled), None, Matched, Matched)),
            ("withdrawn product", full, withdrawn, Verify, (true, None, Some(I::Recalled), None, Matched, Matched)),
            ("suspect", full, suspect, Verify, (true, None, Some(I::Suspect), None, Matched, Matched)),
            ("illegitimate wins over suspect and recalled", full, illegitimate, Verify, (true, None, Some(I::Illegitimate), None, Matched, Matched)),
            ("decommissioned, identifier matches", full, decommissioned, Verify, (true, None, None, None, Matched, Matched)),
            ("saleable return: active", full, facts(S::Active), SaleableReturn, (true, None, None, None, Matched, Matched)),
            ("saleable return: decommissioned", full, decommissioned, SaleableReturn, (false, Some(F::NotForRedistribution), None, None, Matched, Matched)),
            ("saleable return: recalled", full, recalled, SaleableReturn, (false, Some(F::NotForRedistribution), Some(I::Recalled), None, Matched, Matched)),
            ("saleable return: expired", given(Some("L1"), Some("261120")), expired, SaleableReturn, (false, Some(F::NotForRedistribution), Some(I::Expired), None, Matched, Matched)),
            ("saleable return: suspect", full, suspect, SaleableReturn, (false, Some(F::NotForRedistribution), Some(I::Suspect), None, Matched, Matched)),
            ("saleable return: lot differs", given(Some("L2"), Some("271231")), facts(S::Active), SaleableReturn, (false, Some(F::NoMatchGtinSerialLot), None, Some(A::BatchDoesNotMatchSerial), Mismatched, Matched)),
            ("saleable return: unknown serial", full, facts(S::Unknown), SaleableReturn, (false, nm, None, Some(A::UnknownSerial), NotChecked, NotChecked)),
        ];
        for (name, given, facts, purpose, expect) in rows {
            check(name, given, facts, purpose, expect);
        }
    }

    #[test]
    fn decommission_reason_is_reported_only_when_decommissioned() {
        for reason in DecommissionReason::ALL {
            let facts = Facts {
                reason: reason as u8,
                ..facts(S::Decommissioned)
            };
            let v = judge(given(None, None), facts, date(TODAY), Verify);
            assert_eq!(v.reason, Some(reason));
            assert_eq!(DecommissionReason::from_code(reason as u8), Some(reason));
        }
        let v = judge(given(None, None), facts(S::Active), date(TODAY), Verify);
        assert_eq!(v.reason, None);
        assert_eq!(DecommissionReason::from_code(0), None);
        assert_eq!(DecommissionReason::from_code(9), None);
    }

    #[test]
    fn expiring_today_is_not_expired() {
        let facts = Facts {
            lot: Some(LotFacts {
                lot: "L1",
                effective_expiry: date(TODAY),
                recalled: false,
            }),
            ..facts(S::Active)
        };
        let v = judge(given(None, None), facts, date(TODAY), Verify);
        assert!(!v.expired);
        assert_eq!(v.info, None);
    }

    #[test]
    fn wire_texts_are_exact() {
        assert_eq!(F::NoMatchGtinSerial.vrs_text(), "No_match_GTIN_Serial");
        assert_eq!(
            F::NoMatchGtinSerialLotExpiry.vrs_text(),
            "No_match_GTIN_Serial_Lot_Expiry"
        );
        assert_eq!(
            F::NoMatchGtinSerialLot.vrs_text(),
            "No_match_GTIN_Serial_Lot"
        );
        assert_eq!(
            F::NoMatchGtinSerialExpiry.vrs_text(),
            "No_match_GTIN_Serial_Expiry"
        );
        assert_eq!(
            F::NotForRedistribution.vrs_text(),
            "Not_for_re-distribution"
        );
        assert_eq!(I::Expired.vrs_text(), "Expired");
        assert_eq!(I::Recalled.vrs_text(), "Recalled");
        assert_eq!(I::Suspect.vrs_text(), "Suspect");
        assert_eq!(I::Illegitimate.vrs_text(), "Illegitimate");
    }
}
