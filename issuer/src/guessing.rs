//! The EU guessing rule (Delegated Regulation (EU) 2016/161 Art. 4(c)) as
//! exact integer arithmetic.
//!
//! The probability of guessing a serial must stay below 1 in 10,000; the
//! industry reads it as "serials issued ÷ size of the serial space < 10⁻⁴",
//! per GTIN (DOMAIN.md §3). Spaces reach 82^20 ≈ 1.9 × 10^38, where `f64`
//! cannot tell one serial more or less, so the decision is taken on integers:
//! `issued × denominator < space`, with both factors below 2^64 so the product
//! always fits in `u128`. Floating point is only used to *report* the ratio.

use std::num::NonZeroU64;

/// The limit `issued ÷ space < 1 ÷ denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuessingRule {
    denominator: NonZeroU64,
}

impl GuessingRule {
    /// The EU rule: issued ÷ space must stay below 1/10,000.
    pub const EU_FMD: Self = Self {
        denominator: NonZeroU64::new(10_000).expect("10,000 is not zero"),
    };

    /// The rule `issued ÷ space < 1 ÷ denominator`. A denominator of 1
    /// only keeps issuance below the space itself.
    pub const fn new(denominator: NonZeroU64) -> Self {
        Self { denominator }
    }

    /// The `denominator` of the limit 1 ÷ denominator.
    pub const fn denominator(self) -> u64 {
        self.denominator.get()
    }

    /// The limit on the ratio as a fraction, e.g. 0.0001, for reporting
    /// (`GuessingRatio.ratio_limit`).
    pub fn ratio_limit(self) -> f64 {
        1.0 / self.denominator() as f64
    }

    /// Whether a GTIN whose format has `space` serials may have
    /// `issued_after` serials issued in total (counting the ones about to
    /// be issued): `issued_after × denominator < space`, exactly.
    pub fn allows(self, space: u128, issued_after: u64) -> bool {
        // Both factors are below 2^64, so the product is below 2^128.
        u128::from(issued_after) * u128::from(self.denominator()) < space
    }

    /// How many more serials may be issued when `issued_now` already are:
    /// up to the rule's limit when `enforced`, otherwise up to the whole
    /// space. Saturates at `u64::MAX` (`GuessingRatio.issuable_remaining`).
    pub fn issuable_remaining(self, space: u128, issued_now: u64, enforced: bool) -> u64 {
        let total = if enforced {
            self.issuable_total(space)
        } else {
            space
        };
        let remaining = total.saturating_sub(u128::from(issued_now));
        u64::try_from(remaining).unwrap_or(u64::MAX)
    }

    /// `issued ÷ space` for reporting (`GuessingRatio.ratio`); 0 when
    /// nothing is issued, infinite for an empty space with serials issued.
    /// Never use it to decide: see [`GuessingRule::allows`].
    pub fn ratio(self, space: u128, issued: u64) -> f64 {
        if issued == 0 {
            return 0.0;
        }
        issued as f64 / space as f64
    }

    /// The largest total `t` with `t × denominator < space`: the
    /// ⌈space ÷ denominator⌉ − 1 = ⌊(space − 1) ÷ denominator⌋.
    fn issuable_total(self, space: u128) -> u128 {
        match space.checked_sub(1) {
            Some(below) => below / u128::from(self.denominator()),
            None => 0,
        }
    }
}

impl Default for GuessingRule {
    /// [`GuessingRule::EU_FMD`].
    fn default() -> Self {
        Self::EU_FMD
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EU: GuessingRule = GuessingRule::EU_FMD;

    fn check_allows(space: u128, issued_after: u64, expected: bool) {
        assert_eq!(
            EU.allows(space, issued_after),
            expected,
            "{space} {issued_after}"
        );
    }

    #[test]
    fn allows_at_the_boundary() {
        check_allows(10_000_000, 999, true);
        check_allows(10_000_000, 1_000, false);
        check_allows(10_001, 1, true);
        check_allows(10_001, 2, false);
        check_allows(10_000, 1, false);
        check_allows(10_000, 0, true);
        check_allows(0, 0, false);
        check_allows(1, 0, true);
        check_allows(u128::MAX, u64::MAX, true);
        check_allows(u128::from(u64::MAX) * 10_000, u64::MAX, false);
        check_allows(u128::from(u64::MAX) * 10_000 + 1, u64::MAX, true);
    }

    fn check_remaining(space: u128, issued_now: u64, enforced: bool, expected: u64) {
        assert_eq!(
            EU.issuable_remaining(space, issued_now, enforced),
            expected,
            "{space} {issued_now} {enforced}"
        );
    }

    #[test]
    fn issuable_remaining_table() {
        check_remaining(10_000_000, 0, true, 999);
        check_remaining(10_000_000, 998, true, 1);
        check_remaining(10_000_000, 999, true, 0);
        check_remaining(10_000_000, 5_000, true, 0); // over the limit already
        check_remaining(10_001, 0, true, 1);
        check_remaining(10_000, 0, true, 0);
        check_remaining(0, 0, true, 0);
        check_remaining(1 << 60, 0, true, (1 << 60) / 10_000);
        check_remaining(10_000_000, 0, false, 10_000_000);
        check_remaining(10_000_000, 999, false, 9_999_001);
        check_remaining(10_000_000, 20_000_000, false, 0);
        check_remaining(1 << 65, 0, false, u64::MAX);
        check_remaining(u128::MAX, 0, true, u64::MAX);
        check_remaining(u128::MAX, u64::MAX, false, u64::MAX);
    }

    #[test]
    fn other_denominators() {
        let strict = GuessingRule::new(NonZeroU64::new(1_000_000).unwrap());
        assert_eq!(strict.issuable_remaining(10_000_000, 0, true), 9);
        let space_only = GuessingRule::new(NonZeroU64::MIN);
        assert_eq!(space_only.issuable_remaining(100, 0, true), 99);
        assert!(space_only.allows(100, 99));
        assert!(!space_only.allows(100, 100));
        assert_eq!(GuessingRule::default(), EU);
        assert_eq!(EU.denominator(), 10_000);
        assert_eq!(EU.ratio_limit(), 0.0001);
    }

    #[test]
    fn ratios() {
        assert_eq!(EU.ratio(10_000_000, 999), 0.0000999);
        assert_eq!(EU.ratio(1 << 60, 0), 0.0);
        assert_eq!(EU.ratio(0, 0), 0.0);
        assert_eq!(EU.ratio(0, 1), f64::INFINITY);
        assert_eq!(EU.ratio(4, 1), 0.25);
    }

    proptest! {
        #[test]
        fn remaining_is_exactly_the_limit(
            space in prop_oneof![any::<u128>(), 0..1u128 << 70, 0..100_000u128],
            denominator in prop_oneof![Just(10_000u64), 1..=u64::MAX, 1..100u64],
        ) {
            let rule = GuessingRule::new(NonZeroU64::new(denominator).unwrap());
            let total = rule.issuable_remaining(space, 0, true);
            if total < u64::MAX {
                prop_assert!(space == 0 || rule.allows(space, total));
                prop_assert!(!rule.allows(space, total + 1));
            }
        }

        #[test]
        fn remaining_counts_down(space in 0..u128::from(u64::MAX), issued in any::<u64>()) {
            let total = EU.issuable_remaining(space, 0, true);
            let remaining = EU.issuable_remaining(space, issued, true);
            prop_assert_eq!(remaining, total.saturating_sub(issued));
            if remaining > 0 {
                prop_assert!(EU.allows(space, issued + remaining));
            }
        }
    }
}
