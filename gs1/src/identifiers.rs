//! Numeric keys with a check digit (GTIN, SSCC), the mod-10 check digit
//! itself and the company prefix length needed for EPC URIs.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::ai::{Ai, validate_check_digit, validate_digits};
use crate::error::{Gs1Error, Rule};

/// The GS1 mod-10 check digit of `data_digits` (the digits without the
/// check digit): weights 3, 1, 3, 1, … from the rightmost data digit.
///
/// Characters that are not ASCII digits are skipped: validate first.
pub fn check_digit(data_digits: &str) -> u8 {
    let sum: u32 = data_digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .rev()
        .zip([3, 1].into_iter().cycle())
        .map(|(digit, weight)| u32::from(digit - b'0') * weight)
        .sum();
    // `sum % 10` is below 10, so the result fits in a u8.
    ((10 - sum % 10) % 10) as u8
}

/// A Global Trade Item Number, always held as 14 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtin(String);

impl Gtin {
    /// Accepts a GTIN-8, -12, -13 or -14 with a valid check digit and
    /// left-pads it with zeros to 14 digits. Error positions are offsets
    /// into `digits`.
    pub fn new(digits: &str) -> Result<Self, Gs1Error> {
        Self::check(digits).map_err(|error| error.with_ai(Ai::Gtin))?;
        Ok(Self(format!("{digits:0>14}")))
    }

    /// As [`Gtin::new`], reusing `digits`' buffer when it already holds 14
    /// digits (bulk paths that own the decoded text).
    pub fn from_string(digits: String) -> Result<Self, Gs1Error> {
        if digits.len() == 14 {
            Self::check(&digits).map_err(|error| error.with_ai(Ai::Gtin))?;
            Ok(Self(digits))
        } else {
            Self::new(&digits)
        }
    }

    /// Checks a GTIN-14 (exactly 14 digits, check digit included) without
    /// building a `Gtin`, for bulk paths that only need its value. Error
    /// positions are offsets into `digits`.
    pub fn check_value(digits: &str) -> Result<u64, Gs1Error> {
        let checked = if digits.len() == 14 {
            Self::check(digits)
        } else {
            validate_digits(digits).and(Err(Gs1Error::at(
                Rule::WrongLength {
                    expected: "14 digits",
                    found: digits.len(),
                },
                0,
            )))
        };
        checked.map_err(|error| error.with_ai(Ai::Gtin))?;
        // 14 checked digits always fit.
        Ok(digits.parse().unwrap_or(0))
    }

    fn check(digits: &str) -> Result<(), Gs1Error> {
        validate_digits(digits)?;
        if ![8, 12, 13, 14].contains(&digits.len()) {
            return Err(Gs1Error::at(
                Rule::WrongLength {
                    expected: "8, 12, 13 or 14 digits",
                    found: digits.len(),
                },
                0,
            ));
        }
        validate_check_digit(digits)
    }

    /// The 14 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first of the 14 digits (packaging level; 0 for GTIN-8/12/13).
    pub fn indicator_digit(&self) -> u8 {
        self.0.as_bytes()[0] - b'0'
    }
}

/// A Serial Shipping Container Code: 18 digits with a check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sscc(String);

impl Sscc {
    /// Accepts exactly 18 digits with a valid check digit. Error positions
    /// are offsets into `digits`.
    pub fn new(digits: &str) -> Result<Self, Gs1Error> {
        crate::ai::validate(Ai::Sscc, digits)?;
        Ok(Self(digits.to_owned()))
    }

    /// The 18 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first digit, chosen freely by the company to extend capacity.
    pub fn extension_digit(&self) -> u8 {
        self.0.as_bytes()[0] - b'0'
    }
}

macro_rules! string_newtype_traits {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Gs1Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::new(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype_traits;

string_newtype_traits!(Gtin);
string_newtype_traits!(Sscc);

/// How many leading digits of a GTIN or SSCC (after the indicator or
/// extension digit) are the GS1 company prefix: 6 to 12. It cannot be
/// derived from the number; it is master data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CompanyPrefixLength(u8);

impl CompanyPrefixLength {
    /// The shortest company prefix.
    pub const MIN: usize = 6;
    /// The longest company prefix.
    pub const MAX: usize = 12;

    /// Accepts 6..=12.
    pub fn new(length: usize) -> Result<Self, Gs1Error> {
        if (Self::MIN..=Self::MAX).contains(&length) {
            // At most 12, so it fits in a u8.
            Ok(Self(length as u8))
        } else {
            Err(Gs1Error::new(Rule::PrefixLength { found: length }))
        }
    }

    /// The length in digits.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for CompanyPrefixLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_vectors() {
        let check = |data: &str, expected: u8| assert_eq!(check_digit(data), expected, "{data}");
        // DOMAIN.md §2.
        check("629104150021", 3);
        check("890400021003", 7);
        check("730001100001", 7);
        check("10614141234567890", 8);
        // GS1 examples used elsewhere in the tests.
        check("0952012345678", 8);
        check("8061414112345", 8);
        check("", 0);
    }

    #[test]
    fn gtin_new() {
        let check = |input: &str, expected: Result<&str, &str>| {
            let got = Gtin::new(input)
                .map(|g| g.to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "{input:?}");
        };
        check("6291041500213", Ok("06291041500213"));
        check("8904000210037", Ok("08904000210037"));
        check("7300011000017", Ok("07300011000017"));
        check("09520123456788", Ok("09520123456788"));
        check("96385074", Ok("00000096385074"));
        check("614141000036", Ok("00614141000036"));
        check(
            "09520123456789",
            Err("AI (01) at position 13: bad check digit: expected 8, found 9"),
        );
        check(
            "123456789",
            Err("AI (01) at position 0: wrong length: expected 8, 12, 13 or 14 digits, found 9"),
        );
        check(
            "0952012345678 ",
            Err("AI (01) at position 13: expected a digit, found space"),
        );
        check(
            "",
            Err("AI (01) at position 0: wrong length: expected 8, 12, 13 or 14 digits, found 0"),
        );
    }

    #[test]
    fn gtin_check_value_takes_exactly_14_digits() {
        assert_eq!(Gtin::check_value("09520123456788"), Ok(9_520_123_456_788));
        let error = |input: &str| Gtin::check_value(input).unwrap_err().to_string();
        assert_eq!(
            error("09520123456789"),
            "AI (01) at position 13: bad check digit: expected 8, found 9"
        );
        assert_eq!(
            error("6291041500213"),
            "AI (01) at position 0: wrong length: expected 14 digits, found 13"
        );
        assert_eq!(
            error("0952012345678X"),
            "AI (01) at position 13: expected a digit, found 'X'"
        );
        for input in ["09520123456788", "96385074", "0952012345678X", ""] {
            assert_eq!(
                Gtin::check_value(input).ok(),
                Gtin::new(input)
                    .ok()
                    .filter(|_| input.len() == 14)
                    .map(|g| g.as_str().parse::<u64>().unwrap())
            );
        }
    }

    #[test]
    fn gtin_parts() {
        let gtin: Gtin = "80614141123458".parse().unwrap();
        assert_eq!(gtin.indicator_digit(), 8);
        assert_eq!(gtin.as_str(), "80614141123458");
    }

    #[test]
    fn sscc_new() {
        let check = |input: &str, expected: Result<&str, &str>| {
            let got = Sscc::new(input)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "{input:?}");
        };
        check("106141412345678908", Ok("106141412345678908"));
        check(
            "106141412345678909",
            Err("AI (00) at position 17: bad check digit: expected 8, found 9"),
        );
        check(
            "10614141234567890",
            Err("AI (00) at position 0: wrong length: expected 18 digits, found 17"),
        );
        let sscc = Sscc::new("106141412345678908").unwrap();
        assert_eq!(sscc.extension_digit(), 1);
    }

    #[test]
    fn prefix_length_range() {
        let check = |length: usize, ok: bool| {
            assert_eq!(CompanyPrefixLength::new(length).is_ok(), ok, "{length}")
        };
        check(5, false);
        check(6, true);
        check(12, true);
        check(13, false);
        assert_eq!(
            CompanyPrefixLength::new(13).unwrap_err().to_string(),
            "company prefix length 13 is outside 6..=12"
        );
    }
}
