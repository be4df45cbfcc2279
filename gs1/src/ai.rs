//! The Application Identifiers this crate understands and how their values
//! are checked.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::date;
use crate::error::{Gs1Error, Rule};
use crate::identifiers::check_digit;

/// A supported GS1 Application Identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ai {
    /// (00) SSCC, 18 digits with check digit.
    Sscc,
    /// (01) GTIN, 14 digits with check digit.
    Gtin,
    /// (10) batch or lot number, up to 20 CSET 82 characters.
    Lot,
    /// (11) production date, YYMMDD.
    ProductionDate,
    /// (17) expiry date, YYMMDD.
    Expiry,
    /// (21) serial number, up to 20 CSET 82 characters.
    Serial,
    /// (91) company internal; in Russia (Chestny Znak) the crypto key id.
    CryptoKey,
    /// (92) company internal; in Russia (Chestny Znak) the crypto code.
    CryptoCode,
    /// (710) national healthcare reimbursement number, Germany (PZN).
    NhrnGermany,
    /// (711) national healthcare reimbursement number, France (CIP).
    NhrnFrance,
    /// (712) national healthcare reimbursement number, Spain.
    NhrnSpain,
    /// (713) national healthcare reimbursement number, Brazil.
    NhrnBrazil,
    /// (714) national healthcare reimbursement number, Portugal.
    NhrnPortugal,
}

/// How long an AI's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiLength {
    /// Exactly this many characters; no separator follows.
    Fixed(usize),
    /// From 1 up to `max` characters; a GS ends it unless it is last.
    Variable {
        /// The most characters allowed.
        max: usize,
    },
}

/// Which characters an AI's value may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// ASCII digits only.
    Numeric,
    /// GS1 CSET 82 (see [`is_cset82`]).
    Cset82,
}

/// The format of an AI's value, as in the GS1 General Specifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiSpec {
    /// Fixed or variable length.
    pub length: AiLength,
    /// Allowed characters.
    pub charset: Charset,
    /// The last digit is a mod-10 check digit.
    pub check_digit: bool,
    /// The value is a YYMMDD date (day 00 allowed).
    pub date: bool,
}

impl AiSpec {
    const fn numeric(length: usize, check_digit: bool, date: bool) -> Self {
        Self {
            length: AiLength::Fixed(length),
            charset: Charset::Numeric,
            check_digit,
            date,
        }
    }

    const fn text(max: usize) -> Self {
        Self {
            length: AiLength::Variable { max },
            charset: Charset::Cset82,
            check_digit: false,
            date: false,
        }
    }

    /// Whether a GS must end the value when another element follows.
    pub fn needs_separator(&self) -> bool {
        matches!(self.length, AiLength::Variable { .. })
    }
}

impl Ai {
    /// Every supported AI, in code order.
    pub const ALL: [Ai; 13] = [
        Ai::Sscc,
        Ai::Gtin,
        Ai::Lot,
        Ai::ProductionDate,
        Ai::Expiry,
        Ai::Serial,
        Ai::CryptoKey,
        Ai::CryptoCode,
        Ai::NhrnGermany,
        Ai::NhrnFrance,
        Ai::NhrnSpain,
        Ai::NhrnBrazil,
        Ai::NhrnPortugal,
    ];

    /// The AI's digits, e.g. `"01"`.
    pub fn code(self) -> &'static str {
        match self {
            Ai::Sscc => "00",
            Ai::Gtin => "01",
            Ai::Lot => "10",
            Ai::ProductionDate => "11",
            Ai::Expiry => "17",
            Ai::Serial => "21",
            Ai::CryptoKey => "91",
            Ai::CryptoCode => "92",
            Ai::NhrnGermany => "710",
            Ai::NhrnFrance => "711",
            Ai::NhrnSpain => "712",
            Ai::NhrnBrazil => "713",
            Ai::NhrnPortugal => "714",
        }
    }

    /// The AI with these digits, if supported.
    pub fn from_code(code: &str) -> Option<Ai> {
        Ai::ALL.into_iter().find(|ai| ai.code() == code)
    }

    /// A short English name, for people.
    pub fn title(self) -> &'static str {
        match self {
            Ai::Sscc => "SSCC",
            Ai::Gtin => "GTIN",
            Ai::Lot => "lot",
            Ai::ProductionDate => "production date",
            Ai::Expiry => "expiry",
            Ai::Serial => "serial",
            Ai::CryptoKey => "crypto key",
            Ai::CryptoCode => "crypto code",
            Ai::NhrnGermany => "NHRN Germany (PZN)",
            Ai::NhrnFrance => "NHRN France (CIP)",
            Ai::NhrnSpain => "NHRN Spain",
            Ai::NhrnBrazil => "NHRN Brazil",
            Ai::NhrnPortugal => "NHRN Portugal",
        }
    }

    /// The format of the AI's value.
    pub fn spec(self) -> AiSpec {
        match self {
            Ai::Sscc => AiSpec::numeric(18, true, false),
            Ai::Gtin => AiSpec::numeric(14, true, false),
            Ai::ProductionDate | Ai::Expiry => AiSpec::numeric(6, false, true),
            Ai::Lot | Ai::Serial => AiSpec::text(20),
            Ai::CryptoKey | Ai::CryptoCode => AiSpec::text(90),
            Ai::NhrnGermany
            | Ai::NhrnFrance
            | Ai::NhrnSpain
            | Ai::NhrnBrazil
            | Ai::NhrnPortugal => AiSpec::text(20),
        }
    }
}

impl fmt::Display for Ai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Ai {
    type Err = Gs1Error;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        validate_digits(code)?;
        if code.is_empty() {
            return Err(Gs1Error::at(Rule::TruncatedAi, 0));
        }
        Ai::from_code(code).ok_or_else(|| {
            Gs1Error::at(
                Rule::UnknownAi {
                    prefix: code.to_owned(),
                },
                0,
            )
        })
    }
}

impl Serialize for Ai {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// Whether a byte is in GS1 CSET 82, the character set of serials and lots:
/// `! " % & ' ( ) * + , - . /`, digits, `: ; < = > ?`, `A–Z`, `_`, `a–z`.
pub fn is_cset82(byte: u8) -> bool {
    matches!(byte,
        b'!' | b'"' | b'%'..=b'/' | b'0'..=b'9' | b':'..=b'?' | b'A'..=b'Z' | b'_' | b'a'..=b'z')
}

/// Checks a value against its AI's spec. Error positions are offsets into
/// `value`; the error names `ai`.
pub(crate) fn validate(ai: Ai, value: &str) -> Result<(), Gs1Error> {
    let spec = ai.spec();
    let checked = match spec.length {
        AiLength::Fixed(length) => validate_fixed(value, length, spec),
        AiLength::Variable { max } => validate_text(value, max),
    };
    checked.map_err(|error| error.with_ai(ai))
}

fn validate_fixed(value: &str, length: usize, spec: AiSpec) -> Result<(), Gs1Error> {
    if value.is_empty() {
        return Err(Gs1Error::at(Rule::EmptyValue, 0));
    }
    validate_digits(value)?;
    if value.len() != length {
        let expected = match length {
            18 => "18 digits",
            14 => "14 digits",
            _ => "6 digits",
        };
        return Err(Gs1Error::at(
            Rule::WrongLength {
                expected,
                found: value.len(),
            },
            0,
        ));
    }
    if spec.check_digit {
        validate_check_digit(value)?;
    }
    if spec.date {
        date::parse_yymmdd(value)?;
    }
    Ok(())
}

/// Rejects the first character that is not an ASCII digit.
pub(crate) fn validate_digits(value: &str) -> Result<(), Gs1Error> {
    match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((position, found)) => Err(Gs1Error::at(Rule::NotDigit { found }, position)),
        None => Ok(()),
    }
}

/// Compares the last digit of an all-digit string with the computed one.
pub(crate) fn validate_check_digit(digits: &str) -> Result<(), Gs1Error> {
    let Some(last) = digits.len().checked_sub(1) else {
        return Err(Gs1Error::at(Rule::EmptyValue, 0));
    };
    let expected = check_digit(&digits[..last]);
    let found = digits.as_bytes()[last].wrapping_sub(b'0');
    if expected == found {
        Ok(())
    } else {
        Err(Gs1Error::at(Rule::BadCheckDigit { expected, found }, last))
    }
}

/// Checks 1..=max CSET 82 characters, reporting problems in position order.
pub(crate) fn validate_text(value: &str, max: usize) -> Result<(), Gs1Error> {
    if value.is_empty() {
        return Err(Gs1Error::at(Rule::EmptyValue, 0));
    }
    for (index, (position, found)) in value.char_indices().enumerate() {
        if index == max {
            let length = value.chars().count();
            return Err(Gs1Error::at(Rule::TooLong { length, max }, position));
        }
        if !u8::try_from(found).is_ok_and(is_cset82) {
            return Err(Gs1Error::at(Rule::InvalidChar { found }, position));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for ai in Ai::ALL {
            assert_eq!(Ai::from_code(ai.code()), Some(ai));
            assert_eq!(ai.code().parse::<Ai>(), Ok(ai));
        }
        assert_eq!(Ai::from_code("22"), None);
        assert_eq!(
            "22".parse::<Ai>().map_err(|e| e.to_string()),
            Err("at position 0: unknown AI starting with 22".to_owned())
        );
    }

    #[test]
    fn cset82_is_exactly_82_characters() {
        let allowed: String = (0..=255u8)
            .filter(|b| is_cset82(*b))
            .map(char::from)
            .collect();
        assert_eq!(allowed.len(), 82);
        assert_eq!(
            allowed,
            "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn spec_separators() {
        let check = |ai: Ai, expected: bool| assert_eq!(ai.spec().needs_separator(), expected);
        check(Ai::Sscc, false);
        check(Ai::Gtin, false);
        check(Ai::Expiry, false);
        check(Ai::ProductionDate, false);
        check(Ai::Lot, true);
        check(Ai::Serial, true);
        check(Ai::CryptoCode, true);
        check(Ai::NhrnPortugal, true);
    }

    #[test]
    fn validate_messages() {
        let check = |ai: Ai, value: &str, expected: Result<(), &str>| {
            let got = validate(ai, value).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{ai} {value:?}");
        };
        check(Ai::Gtin, "09520123456788", Ok(()));
        check(
            Ai::Gtin,
            "09520123456789",
            Err("AI (01) at position 13: bad check digit: expected 8, found 9"),
        );
        check(
            Ai::Gtin,
            "0952012345678",
            Err("AI (01) at position 0: wrong length: expected 14 digits, found 13"),
        );
        check(
            Ai::Gtin,
            "0952012345678X",
            Err("AI (01) at position 13: expected a digit, found 'X'"),
        );
        check(Ai::Serial, "", Err("AI (21) at position 0: empty value"));
        check(
            Ai::Serial,
            "ABC DEF",
            Err("AI (21) at position 3: space is not in CSET 82"),
        );
        check(
            Ai::Lot,
            "123456789012345678901",
            Err("AI (10) at position 20: value too long: 21 characters, at most 20"),
        );
        check(Ai::CryptoCode, &"a".repeat(90), Ok(()));
        check(
            Ai::Expiry,
            "251301",
            Err("AI (17) at position 0: invalid date 251301: month must be 01..=12"),
        );
    }
}
