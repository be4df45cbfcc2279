//! Serial and lot: 1 to 20 characters of CSET 82, case-sensitive.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::ai::{Ai, validate};
use crate::error::Gs1Error;
use crate::identifiers::string_newtype_traits;

/// A serial number (AI 21): 1–20 CSET 82 characters, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

/// A batch or lot number (AI 10): 1–20 CSET 82 characters, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lot(String);

impl Serial {
    /// Checks 1–20 CSET 82 characters without building a `Serial`, for bulk
    /// paths that only borrow the text. Error positions are offsets into
    /// `text`.
    pub fn check(text: &str) -> Result<(), Gs1Error> {
        validate(Ai::Serial, text)
    }

    /// Accepts 1–20 CSET 82 characters. Error positions are offsets into
    /// `text`.
    pub fn new(text: &str) -> Result<Self, Gs1Error> {
        validate(Ai::Serial, text)?;
        Ok(Self(text.to_owned()))
    }

    /// As [`Serial::new`], keeping `text`'s buffer (bulk paths that own
    /// the decoded text).
    pub fn from_string(text: String) -> Result<Self, Gs1Error> {
        validate(Ai::Serial, &text)?;
        Ok(Self(text))
    }

    /// The serial as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Lot {
    /// Checks 1–20 CSET 82 characters without building a `Lot`, for bulk
    /// paths that only borrow the text. Error positions are offsets into
    /// `text`.
    pub fn check(text: &str) -> Result<(), Gs1Error> {
        validate(Ai::Lot, text)
    }

    /// Accepts 1–20 CSET 82 characters. Error positions are offsets into
    /// `text`.
    pub fn new(text: &str) -> Result<Self, Gs1Error> {
        validate(Ai::Lot, text)?;
        Ok(Self(text.to_owned()))
    }

    /// As [`Lot::new`], keeping `text`'s buffer (bulk paths that own
    /// the decoded text).
    pub fn from_string(text: String) -> Result<Self, Gs1Error> {
        validate(Ai::Lot, &text)?;
        Ok(Self(text))
    }

    /// The lot as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The text of `bytes`, for fields read from a binary encoding: an error
/// ([`crate::Rule::NotUtf8`]) at the first byte that is not UTF-8.
pub fn text_from_bytes(bytes: &[u8]) -> Result<&str, Gs1Error> {
    std::str::from_utf8(bytes)
        .map_err(|error| Gs1Error::at(crate::Rule::NotUtf8, error.valid_up_to()))
}

string_newtype_traits!(Serial);
string_newtype_traits!(Lot);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), &str>) {
        let got = Serial::new(input).map(|s| assert_eq!(s.as_str(), input));
        assert_eq!(
            got.map_err(|e| e.to_string()),
            expected.map_err(str::to_owned),
            "{input:?}"
        );
    }

    #[test]
    fn serial_charset() {
        check("ABC123", Ok(()));
        check("aBc!\"%&'()*+,-./", Ok(()));
        check(":;<=>?_", Ok(()));
        check("12345678901234567890", Ok(()));
        let rejected = [
            ' ', '#', '$', '@', '[', ']', '\\', '^', '`', '{', '}', '|', '~', '\u{1d}', '\r', '\n',
            '\u{7f}', 'é', 'Ä',
        ];
        for found in rejected {
            let input = format!("AB{found}C");
            let expected = format!(
                "AI (21) at position 2: {} is not in CSET 82",
                crate::error::char_name(found)
            );
            check(&input, Err(&expected));
        }
        check("", Err("AI (21) at position 0: empty value"));
        check(
            "123456789012345678901",
            Err("AI (21) at position 20: value too long: 21 characters, at most 20"),
        );
    }

    #[test]
    fn serial_is_case_sensitive() {
        assert_ne!(Serial::new("abc").unwrap(), Serial::new("ABC").unwrap());
    }

    #[test]
    fn lot_names_its_ai() {
        assert_eq!(Lot::new("L1").unwrap().as_str(), "L1");
        assert_eq!(
            "L 1".parse::<Lot>().unwrap_err().to_string(),
            "AI (10) at position 1: space is not in CSET 82"
        );
    }
}
