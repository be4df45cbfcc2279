//! EPC pure-identity URIs (GS1 EPC Tag Data Standard):
//! `urn:epc:id:sgtin:{CompanyPrefix}.{Indicator}{ItemRef}.{Serial}` and
//! `urn:epc:id:sscc:{CompanyPrefix}.{Extension}{SerialRef}`.

use crate::ai::{Ai, validate_digits};
use crate::data::Gs1Data;
use crate::digital_link::{hex_pair, starts_with_ignore_case};
use crate::element_string::check_input;
use crate::error::{Gs1Error, Rule};
use crate::identifiers::{CompanyPrefixLength, check_digit};
use crate::mapped::Mapped;
use crate::text::Serial;

const SGTIN_PREFIX: &str = "urn:epc:id:sgtin:";
const SSCC_PREFIX: &str = "urn:epc:id:sscc:";

/// Characters of a serial that an EPC URI writes as `%XX`; every other
/// CSET 82 character stays literal.
const ESCAPED: &[u8] = b"\"%&/<>?";

/// Parses an SGTIN or SSCC pure-identity URI. The company prefix length
/// is the length of the first dot-separated part. The serial is
/// un-escaped; `%XX` is only accepted for `" % & / < > ?`, and those
/// characters are refused when not escaped. The `urn:epc:id:` prefix is
/// matched in any case. Error positions are byte offsets into `uri`.
pub fn parse_epc_uri(uri: &str) -> Result<(Gs1Data, CompanyPrefixLength), Gs1Error> {
    check_input(uri.as_bytes())?;
    if starts_with_ignore_case(uri.as_bytes(), SGTIN_PREFIX.as_bytes()) {
        parse_sgtin(uri, SGTIN_PREFIX.len())
    } else if starts_with_ignore_case(uri.as_bytes(), SSCC_PREFIX.as_bytes()) {
        parse_sscc(uri, SSCC_PREFIX.len())
    } else {
        let reason = "expected urn:epc:id:sgtin: or urn:epc:id:sscc:";
        Err(Gs1Error::at(Rule::BadUri { reason }, 0))
    }
}

/// Formats the SGTIN URI of data with a GTIN and a serial, or the SSCC
/// URI of data with an SSCC. Lot, expiry and other AIs are not part of an
/// EPC pure identity and are left out.
pub fn format_epc_uri(
    data: &Gs1Data,
    company_prefix_length: CompanyPrefixLength,
) -> Result<String, Gs1Error> {
    data.check_associations()?;
    let length = company_prefix_length.get();
    match (data.gtin(), data.sscc(), data.serial()) {
        (Some(_), Some(_), _) => {
            let reason = "an EPC URI names one object, this data has a GTIN and an SSCC";
            Err(Gs1Error::new(Rule::NotRepresentable { reason }))
        }
        (Some(_), None, None) => {
            let reason = "an SGTIN URI needs a serial (21)";
            Err(Gs1Error::new(Rule::NotRepresentable { reason }))
        }
        (Some(gtin), None, Some(serial)) => {
            let (prefix, reference) = split_key(gtin.as_str(), length);
            let serial = escape_serial(serial.as_str());
            Ok(format!("{SGTIN_PREFIX}{prefix}.{reference}.{serial}"))
        }
        (None, Some(sscc), _) => {
            let (prefix, reference) = split_key(sscc.as_str(), length);
            Ok(format!("{SSCC_PREFIX}{prefix}.{reference}"))
        }
        (None, None, _) => Err(Gs1Error::new(Rule::MissingPrimaryKey)),
    }
}

/// Whether the serial fits an SGTIN-96 RFID tag: digits only, no leading
/// zero (the single digit `0` is fine), below 2^38.
pub fn fits_sgtin96(serial: &Serial) -> bool {
    const SGTIN96_SERIAL_LIMIT: u64 = 1 << 38;
    let text = serial.as_str();
    let leading_zero = text.len() > 1 && text.starts_with('0');
    let all_digits = text.bytes().all(|byte| byte.is_ascii_digit());
    // Serials have at most 20 characters, but 2^38 has 12 digits: parse()
    // rejects overflow beyond u64 anyway.
    all_digits && !leading_zero && text.parse::<u64>().is_ok_and(|n| n < SGTIN96_SERIAL_LIMIT)
}

/// Splits a GTIN-14 or SSCC into the company prefix and the reference
/// with the indicator/extension digit moved to its front; the check
/// digit is dropped.
fn split_key(digits: &str, prefix_length: usize) -> (&str, String) {
    let without_check = &digits[..digits.len() - 1];
    let prefix = &without_check[1..=prefix_length];
    let reference = format!(
        "{}{}",
        &without_check[..1],
        &without_check[prefix_length + 1..]
    );
    (prefix, reference)
}

/// Rebuilds the key from the company prefix and the reference, adding
/// the check digit.
fn join_key(prefix: &str, reference: &str) -> String {
    let data_digits = format!("{}{prefix}{}", &reference[..1], &reference[1..]);
    let check = check_digit(&data_digits);
    format!("{data_digits}{check}")
}

fn escape_serial(serial: &str) -> String {
    let mut out = String::with_capacity(serial.len());
    for c in serial.chars() {
        if u8::try_from(c).is_ok_and(|byte| ESCAPED.contains(&byte)) {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The parts of `uri[start..]` separated by the first `count - 1` dots,
/// each with its position.
fn split_parts(uri: &str, start: usize, count: usize) -> Result<Vec<(usize, &str)>, Gs1Error> {
    let mut parts = Vec::with_capacity(count);
    let mut position = start;
    for part in uri[start..].splitn(count, '.') {
        parts.push((position, part));
        position += part.len() + 1;
    }
    if parts.len() < count {
        let reason = "missing '.' between the parts of the EPC URI";
        return Err(Gs1Error::at(Rule::BadUri { reason }, uri.len()));
    }
    Ok(parts)
}

/// Checks the company prefix and the reference; returns the prefix length.
fn check_numbers(
    (prefix_start, prefix): (usize, &str),
    (reference_start, reference): (usize, &str),
    total: usize,
    expected: &'static str,
) -> Result<CompanyPrefixLength, Gs1Error> {
    validate_digits(prefix).map_err(|e| e.map_position(|offset| prefix_start + offset))?;
    let prefix_length =
        CompanyPrefixLength::new(prefix.len()).map_err(|e| e.with_position(prefix_start))?;
    validate_digits(reference).map_err(|e| e.map_position(|offset| reference_start + offset))?;
    let found = prefix.len() + reference.len();
    if found != total {
        return Err(Gs1Error::at(
            Rule::WrongLength { expected, found },
            reference_start,
        ));
    }
    Ok(prefix_length)
}

fn parse_sgtin(uri: &str, start: usize) -> Result<(Gs1Data, CompanyPrefixLength), Gs1Error> {
    let parts = split_parts(uri, start, 3)?;
    let expected = "13 digits in company prefix and item reference together";
    let prefix_length = check_numbers(parts[0], parts[1], 13, expected)?;
    let gtin = join_key(parts[0].1, parts[1].1);
    let (serial_start, serial) = parts[2];
    let serial = unescape_serial(uri.as_bytes(), serial_start, serial_start + serial.len())?;
    let mut data = Gs1Data::new();
    data.insert(Ai::Gtin, &gtin, Some(parts[0].0), |_| parts[0].0)?;
    let origin = |offset| serial.origin(offset);
    data.insert(Ai::Serial, serial.text()?, Some(serial_start), origin)?;
    Ok((data, prefix_length))
}

fn parse_sscc(uri: &str, start: usize) -> Result<(Gs1Data, CompanyPrefixLength), Gs1Error> {
    let parts = split_parts(uri, start, 2)?;
    let expected = "17 digits in company prefix and serial reference together";
    let prefix_length = check_numbers(parts[0], parts[1], 17, expected)?;
    let sscc = join_key(parts[0].1, parts[1].1);
    let mut data = Gs1Data::new();
    data.insert(Ai::Sscc, &sscc, Some(parts[0].0), |_| parts[0].0)?;
    Ok((data, prefix_length))
}

/// Decodes the serial's `%XX` escapes, which are only allowed (and then
/// required) for `" % & / < > ?`.
fn unescape_serial(bytes: &[u8], start: usize, end: usize) -> Result<Mapped, Gs1Error> {
    let bad_escape = |reason, position| Err(Gs1Error::at(Rule::BadEscape { reason }, position));
    let mut decoded = Mapped::new(end);
    let mut index = start;
    while index < end {
        match bytes[index] {
            b'%' => {
                let digits = bytes.get(index + 1..(index + 3).min(end));
                match hex_pair(digits) {
                    Some(byte) if ESCAPED.contains(&byte) => decoded.push(byte, index),
                    Some(_) => return bad_escape("only \" % & / < > ? may be escaped", index),
                    None => return bad_escape("'%' must be followed by two hex digits", index),
                }
                index += 3;
            }
            byte if ESCAPED.contains(&byte) => {
                return bad_escape("\" & / < > ? must be written as %XX", index);
            }
            byte => {
                decoded.push(byte, index);
                index += 1;
            }
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(length: usize) -> CompanyPrefixLength {
        CompanyPrefixLength::new(length).unwrap()
    }

    #[test]
    fn domain_vectors() {
        let check = |bracketed: &str, length: usize, uri: &str| {
            let data = crate::parse_bracketed(bracketed).unwrap();
            assert_eq!(format_epc_uri(&data, prefix(length)).unwrap(), uri);
            let (parsed, parsed_length) = parse_epc_uri(uri).unwrap();
            assert_eq!((parsed, parsed_length), (data, prefix(length)));
        };
        check(
            "(01)80614141123458(21)6789",
            7,
            "urn:epc:id:sgtin:0614141.812345.6789",
        );
        check(
            "(00)106141412345678908",
            7,
            "urn:epc:id:sscc:0614141.1234567890",
        );
        check(
            "(01)80614141123458(21)6789",
            12,
            "urn:epc:id:sgtin:061414112345.8.6789",
        );
        check(
            "(01)80614141123458(21)6789",
            6,
            "urn:epc:id:sgtin:061414.8112345.6789",
        );
        check(
            "(00)106141412345678908",
            12,
            "urn:epc:id:sscc:061414123456.17890",
        );
        check(
            "(01)80614141123458(21)a\"%&/<>?'b",
            7,
            "urn:epc:id:sgtin:0614141.812345.a%22%25%26%2F%3C%3E%3F'b",
        );
        check(
            "(01)80614141123458(21)A.B",
            7,
            "urn:epc:id:sgtin:0614141.812345.A.B",
        );
    }

    #[test]
    fn parse_errors() {
        let check = |uri: &str, expected: &str| {
            assert_eq!(
                parse_epc_uri(uri).unwrap_err().to_string(),
                expected,
                "{uri}"
            );
        };
        check(
            "urn:epc:id:sgln:0614141.12345.0",
            "at position 0: bad URI: expected urn:epc:id:sgtin: or urn:epc:id:sscc:",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345",
            "at position 31: bad URI: missing '.' between the parts of the EPC URI",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345.",
            "AI (21) at position 32: empty value",
        );
        check(
            "urn:epc:id:sgtin:06141.8123456.1",
            "at position 17: company prefix length 5 is outside 6..=12",
        );
        check(
            "urn:epc:id:sgtin:0614141.81234.1",
            "at position 25: wrong length: expected 13 digits in company prefix and item reference together, found 12",
        );
        check(
            "urn:epc:id:sgtin:06141x1.812345.1",
            "at position 22: expected a digit, found 'x'",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345.a/b",
            "at position 33: bad percent escape: \" & / < > ? must be written as %XX",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345.a%41",
            "at position 33: bad percent escape: only \" % & / < > ? may be escaped",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345.a%4",
            "at position 33: bad percent escape: '%' must be followed by two hex digits",
        );
        check(
            "urn:epc:id:sgtin:0614141.812345.a b",
            "AI (21) at position 33: space is not in CSET 82",
        );
        check(
            "urn:epc:id:sscc:0614141.123456789",
            "at position 24: wrong length: expected 17 digits in company prefix and serial reference together, found 16",
        );
        check(
            "urn:epc:id:sscc:0614141.12345678.90",
            "at position 32: expected a digit, found '.'",
        );
    }

    #[test]
    fn accepts_any_case_prefix_and_lowercase_hex() {
        let (data, _) = parse_epc_uri("URN:EPC:ID:SGTIN:0614141.812345.a%2fb").unwrap();
        assert_eq!(data.serial().unwrap().as_str(), "a/b");
    }

    #[test]
    fn format_errors() {
        let check = |bracketed: &str, expected: &str| {
            let data = crate::parse_bracketed(bracketed).unwrap();
            assert_eq!(
                format_epc_uri(&data, prefix(7)).unwrap_err().to_string(),
                expected
            );
        };
        check(
            "(01)80614141123458(10)L1",
            "cannot encode: an SGTIN URI needs a serial (21)",
        );
        check(
            "(00)106141412345678908(01)80614141123458(21)1",
            "cannot encode: an EPC URI names one object, this data has a GTIN and an SSCC",
        );
    }

    #[test]
    fn sgtin96() {
        let check = |serial: &str, expected: bool| {
            assert_eq!(
                fits_sgtin96(&Serial::new(serial).unwrap()),
                expected,
                "{serial}"
            )
        };
        check("0", true);
        check("6789", true);
        check("274877906943", true);
        check("274877906944", false);
        check("01", false);
        check("12A", false);
        check("99999999999999999999", false);
    }
}
