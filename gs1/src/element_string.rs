//! GS1 element strings as a barcode scanner transmits them:
//! `]d2` + AI/value pairs, GS (0x1D) after variable-length values.

use crate::INPUT_LENGTH_MAX;
use crate::ai::{Ai, AiLength, validate, validate_digits, validate_text};
use crate::data::Gs1Data;
use crate::error::{Gs1Error, Rule, shown};

/// The group separator (ASCII GS, 0x1D) that ends a variable-length value
/// which is not last; scanners send it for FNC1.
pub const GROUP_SEPARATOR: u8 = 0x1D;

/// Symbology identifiers that announce GS1 data: DataMatrix, Code 128,
/// DataBar and QR Code.
const SYMBOLOGY_IDENTIFIERS: [&[u8]; 4] = [b"]d2", b"]C1", b"]e0", b"]Q3"];
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Parses a scanned element string: an optional GS1 symbology identifier
/// (`]d2`, `]C1`, `]e0`, `]Q3`) or a leading GS, then AI/value pairs in
/// any order.
///
/// Strict on purpose: keyboard-wedge artefacts (trailing CR/LF, a byte
/// order mark, doubled or dangling GS, a missing GS) are errors that say
/// exactly what is wrong, instead of guesses. A GS after a fixed-length
/// value is tolerated when an AI follows it (printers often emit one).
/// An AI repeated with the same value is tolerated; with another value it
/// is an error. Error positions are byte offsets into `input`.
pub fn parse_element_string(input: &[u8]) -> Result<Gs1Data, Gs1Error> {
    check_input(input)?;
    let start = header_length(input)?;
    let mut data = Gs1Data::new();
    parse_elements(input, start, &mut data, RunInSearch::On)?;
    if data.is_empty() {
        return Err(Gs1Error::at(Rule::Empty, start));
    }
    data.check_associations()?;
    Ok(data)
}

/// Formats the data as a scanner would transmit it: `]d2`, the elements
/// in [`Gs1Data::elements`] order, a GS after each variable-length value
/// that is not last.
pub fn format_element_string(data: &Gs1Data) -> String {
    let elements = data.elements();
    let mut out = String::from("]d2");
    for (index, (ai, value)) in elements.iter().enumerate() {
        out.push_str(ai.code());
        out.push_str(value);
        if ai.spec().needs_separator() && index + 1 < elements.len() {
            out.push(char::from(GROUP_SEPARATOR));
        }
    }
    out
}

/// Checks shared by every parser: size limit, empty input, byte order
/// mark, a trailing line terminator.
pub(crate) fn check_input(input: &[u8]) -> Result<(), Gs1Error> {
    if input.len() > INPUT_LENGTH_MAX {
        let length = input.len();
        let rule = Rule::InputTooLong {
            length,
            max: INPUT_LENGTH_MAX,
        };
        return Err(Gs1Error::at(rule, INPUT_LENGTH_MAX));
    }
    if input.is_empty() {
        return Err(Gs1Error::at(Rule::Empty, 0));
    }
    if input.starts_with(BYTE_ORDER_MARK) {
        return Err(Gs1Error::at(Rule::ByteOrderMark, 0));
    }
    let content_length = input.len()
        - input
            .iter()
            .rev()
            .take_while(|byte| matches!(byte, b'\r' | b'\n'))
            .count();
    if content_length < input.len() {
        return Err(Gs1Error::at(Rule::TrailingLineEnd, content_length));
    }
    Ok(())
}

/// The length of the symbology identifier or leading GS, if any.
fn header_length(input: &[u8]) -> Result<usize, Gs1Error> {
    match input.first() {
        Some(b']') => {
            let identifier = &input[..input.len().min(3)];
            if SYMBOLOGY_IDENTIFIERS.contains(&identifier) {
                Ok(3)
            } else {
                let found = shown(&String::from_utf8_lossy(identifier));
                Err(Gs1Error::at(Rule::BadSymbologyIdentifier { found }, 0))
            }
        }
        Some(&GROUP_SEPARATOR) => Ok(1),
        _ => Ok(0),
    }
}

/// Whether to look for a missing GS when a value is too long. Off while
/// testing a candidate split, which bounds the search to one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunInSearch {
    On,
    Off,
}

fn parse_elements(
    input: &[u8],
    mut position: usize,
    data: &mut Gs1Data,
    search: RunInSearch,
) -> Result<(), Gs1Error> {
    let mut separator_allowed = false;
    while position < input.len() {
        if input[position] == GROUP_SEPARATOR {
            check_separator(input, position)?;
            if !separator_allowed {
                return Err(Gs1Error::at(Rule::UnexpectedSeparator, position));
            }
            separator_allowed = false;
            position += 1;
            continue;
        }
        let (ai, value_start) = read_ai(input, position)?;
        let (value_end, next) = match ai.spec().length {
            AiLength::Fixed(length) => {
                let end = fixed_value_end(input, value_start, length);
                (end, end)
            }
            AiLength::Variable { max } => variable_value_end(input, ai, value_start, max, search)?,
        };
        let value = value_text(input, ai, value_start, value_end)?;
        data.insert(ai, value, Some(position), |offset| value_start + offset)?;
        separator_allowed = !ai.spec().needs_separator();
        position = next;
    }
    Ok(())
}

/// A GS must be followed by something other than another GS.
fn check_separator(input: &[u8], position: usize) -> Result<(), Gs1Error> {
    match input.get(position + 1) {
        None => Err(Gs1Error::at(Rule::TrailingSeparator, position)),
        Some(&GROUP_SEPARATOR) => Err(Gs1Error::at(Rule::DoubleSeparator, position + 1)),
        Some(_) => Ok(()),
    }
}

/// Reads the AI at `position`; returns it and where its value starts.
fn read_ai(input: &[u8], position: usize) -> Result<(Ai, usize), Gs1Error> {
    let digit_at = |index: usize| match input.get(index) {
        None => Err(Gs1Error::at(Rule::TruncatedAi, position)),
        Some(byte) if byte.is_ascii_digit() => Ok(*byte),
        Some(_) => {
            let found = char_at(input, index);
            Err(Gs1Error::at(Rule::ExpectedAi { found }, index))
        }
    };
    let first_two = [digit_at(position)?, digit_at(position + 1)?];
    // Of the supported AIs only 710–714 have three digits.
    let code_length = if first_two == *b"71" { 3 } else { 2 };
    if code_length == 3 {
        digit_at(position + 2)?;
    }
    let code: String = input[position..position + code_length]
        .iter()
        .map(|byte| char::from(*byte))
        .collect();
    match Ai::from_code(&code) {
        Some(ai) => Ok((ai, position + code_length)),
        None => Err(Gs1Error::at(Rule::UnknownAi { prefix: code }, position)),
    }
}

/// A fixed-length value ends after `length` bytes, or earlier at a GS or
/// the end of input (then it is too short and validation says so).
fn fixed_value_end(input: &[u8], start: usize, length: usize) -> usize {
    let limit = input.len().min(start + length);
    input[start..limit]
        .iter()
        .position(|byte| *byte == GROUP_SEPARATOR)
        .map_or(limit, |offset| start + offset)
}

/// A variable-length value ends at the next GS or the end of input.
/// Returns the end and where the next element starts.
fn variable_value_end(
    input: &[u8],
    ai: Ai,
    start: usize,
    max: usize,
    search: RunInSearch,
) -> Result<(usize, usize), Gs1Error> {
    let end = input[start..]
        .iter()
        .position(|byte| *byte == GROUP_SEPARATOR)
        .map_or(input.len(), |offset| start + offset);
    if search == RunInSearch::On && end - start > max {
        check_run_in(input, ai, start, end, max)?;
    }
    if end < input.len() {
        check_separator(input, end)?;
        return Ok((end, end + 1));
    }
    Ok((end, end))
}

/// A value too long for its AI often means a missing GS: if the value's
/// first up-to-`max` characters are valid and the rest of the input parses
/// from some split point, report the missing separator there.
fn check_run_in(
    input: &[u8],
    ai: Ai,
    start: usize,
    end: usize,
    max: usize,
) -> Result<(), Gs1Error> {
    let Ok(head) = std::str::from_utf8(&input[start..start + max]) else {
        return Ok(()); // Not ASCII: validation reports the character.
    };
    validate(ai, head).map_err(|error| error.map_position(|offset| start + offset))?;
    for split in start + 1..=start + max {
        let mut scratch = Gs1Data::new();
        if parse_elements(input, split, &mut scratch, RunInSearch::Off).is_ok() {
            let (next, _) = read_ai(input, split)?;
            let length = end - start;
            let rule = Rule::MissingSeparator { next, length, max };
            return Err(Gs1Error::at(rule, split).with_ai(ai));
        }
    }
    Ok(())
}

/// The value as text. Bytes that are not UTF-8 are reported after any
/// earlier invalid character, so errors come in position order.
fn value_text(input: &[u8], ai: Ai, start: usize, end: usize) -> Result<&str, Gs1Error> {
    let bytes = &input[start..end];
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(utf8_error) => {
            let valid = utf8_error.valid_up_to();
            // The prefix is valid UTF-8 by definition.
            let prefix = String::from_utf8_lossy(&bytes[..valid]);
            let prefix_check = match ai.spec().length {
                AiLength::Fixed(_) => validate_digits(&prefix),
                AiLength::Variable { max } if !prefix.is_empty() => validate_text(&prefix, max),
                AiLength::Variable { .. } => Ok(()),
            };
            prefix_check
                .and(Err(Gs1Error::at(Rule::NotUtf8, valid)))
                .map_err(|error| error.with_ai(ai).map_position(|offset| start + offset))
        }
    }
}

/// The character starting at `index`, for messages.
fn char_at(input: &[u8], index: usize) -> char {
    let end = input.len().min(index + 4);
    String::from_utf8_lossy(&input[index..end])
        .chars()
        .next()
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` (with `|` standing for GS) and compares the
    /// bracketed rendering of the result, or the error message.
    fn check(input: &str, expected: Result<&str, &str>) {
        let bytes = input.replace('|', "\u{1d}");
        let got = parse_element_string(bytes.as_bytes())
            .map(|data| crate::bracketed::format_bracketed(&data))
            .map_err(|error| error.to_string());
        let expected = expected.map(str::to_owned).map_err(str::to_owned);
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn accepted() {
        let full = "(01)09520123456788(17)251231(10)ABC123(21)XYZ";
        check(
            "]d20109520123456788172512311012345|21XYZ",
            Ok("(01)09520123456788(17)251231(10)12345(21)XYZ"),
        );
        check("]d201095201234567881725123110ABC123|21XYZ", Ok(full));
        check("]C101095201234567881725123110ABC123|21XYZ", Ok(full));
        check("]e001095201234567881725123110ABC123|21XYZ", Ok(full));
        check("]Q301095201234567881725123110ABC123|21XYZ", Ok(full));
        check("|01095201234567881725123110ABC123|21XYZ", Ok(full));
        check("01095201234567881725123110ABC123|21XYZ", Ok(full));
        // Any order; variable value last needs no GS.
        check("]d221XYZ|10ABC123|172512310109520123456788", Ok(full));
        // GS after a fixed-length value followed by an AI is tolerated.
        check("]d20109520123456788|17251231|10ABC123|21XYZ", Ok(full));
        // An identical duplicate is tolerated.
        check(
            "]d20109520123456788|0109520123456788|21XYZ",
            Ok("(01)09520123456788(21)XYZ"),
        );
        check("]d200106141412345678908", Ok("(00)106141412345678908"));
        // EU pack with NHRN and a Russian pack with crypto key/code.
        check(
            "]d20104150123456782|71012345678|21ABC",
            Ok("(01)04150123456782(21)ABC(710)12345678"),
        );
        check(
            "]d2010460123456789321abcDEF1234567|91ee07|92abc+/=",
            Ok("(01)04601234567893(21)abcDEF1234567(91)ee07(92)abc+/="),
        );
        check(
            "]d2010952012345678811240100",
            Ok("(01)09520123456788(11)240100"),
        );
    }

    #[test]
    fn errors() {
        check("", Err("at position 0: no data"));
        check("]d2", Err("at position 3: no data"));
        check(
            "]d20109520123456788\r\n",
            Err("at position 19: trailing CR/LF line terminator"),
        );
        check(
            "]d20109520123456788\n",
            Err("at position 19: trailing CR/LF line terminator"),
        );
        check(
            "\u{feff}]d20109520123456788",
            Err("at position 0: byte order mark at start of input"),
        );
        check(
            "]d10109520123456788",
            Err(
                "at position 0: symbology identifier \"]d1\" is not a GS1 one (expected ]d2, ]C1, ]e0 or ]Q3)",
            ),
        );
        check(
            "]d2|0109520123456788",
            Err("at position 3: unexpected GS separator where an AI should start"),
        );
        check(
            "]d20109520123456788||21XYZ",
            Err("at position 20: two GS separators in a row"),
        );
        check(
            "]d20109520123456788|",
            Err("at position 19: GS separator at end of input"),
        );
        check(
            "]d2010952012345678821XYZ|",
            Err("at position 24: GS separator at end of input"),
        );
        check(
            "]d2010952012345678810A||21XYZ",
            Err("at position 23: two GS separators in a row"),
        );
        check(
            "]d2010952012345678810|21XYZ",
            Err("AI (10) at position 21: empty value"),
        );
        check(
            "]d2010952012345678821",
            Err("AI (21) at position 21: empty value"),
        );
        check(
            "]d20109520123456789",
            Err("AI (01) at position 18: bad check digit: expected 8, found 9"),
        );
        check(
            "]d2010952012345678|21XYZ",
            Err("AI (01) at position 5: wrong length: expected 14 digits, found 13"),
        );
        check(
            "]d2990109520123456788",
            Err("at position 3: unknown AI starting with 99"),
        );
        check(
            "]d201095201234567887159",
            Err("at position 19: unknown AI starting with 715"),
        );
        check(
            "]d201095201234567881",
            Err("at position 19: input ends inside an AI"),
        );
        check("]d201", Err("AI (01) at position 5: empty value"));
        check(
            "]d2011|",
            Err("AI (01) at position 5: wrong length: expected 14 digits, found 1"),
        );
        check(
            "]d20109520123456788|xyz",
            Err("at position 20: expected an AI (digits), found 'x'"),
        );
        check(
            "]d2010952012345678821AB CD",
            Err("AI (21) at position 23: space is not in CSET 82"),
        );
        check(
            "]d2010952012345678821AB\u{e9}",
            Err("AI (21) at position 23: non-ASCII character U+00E9 is not in CSET 82"),
        );
        check(
            "]d20109520123456788211234567890123456789012",
            Err("AI (21) at position 41: value too long: 22 characters, at most 20"),
        );
        check(
            "]d20109520123456788|0109520123456795|21X",
            Err("AI (01) at position 20: appears twice with different values"),
        );
        check(
            "]d2172513310109520123456788",
            Err("AI (17) at position 5: invalid date 251331: month must be 01..=12"),
        );
        check(
            "]d20010614141234567890821XYZ",
            Err("AI (21): requires AI (01)"),
        );
        check("]d29112", Err("no GTIN (01) or SSCC (00)"));
    }

    #[test]
    fn missing_separator() {
        // Lot and serial run together: the lot would be 24 characters.
        check(
            "]d20109520123456788172512311012345621ABCDEFGHIJKLMNOP",
            Err(
                "AI (10) at position 35: missing GS separator: value is 24 characters (at most 20) and AI (21) seems to start here",
            ),
        );
        // Nothing plausible follows: plain "too long".
        check(
            "]d20109520123456788101234567890ABCDEFGHIJKL",
            Err("AI (10) at position 41: value too long: 22 characters, at most 20"),
        );
    }

    #[test]
    fn invalid_utf8_is_reported_in_order() {
        let check_bytes = |input: &[u8], expected: &str| {
            let got = parse_element_string(input).unwrap_err().to_string();
            assert_eq!(got, expected);
        };
        check_bytes(
            b"]d2010952012345678821AB\xff",
            "AI (21) at position 23: invalid UTF-8",
        );
        check_bytes(
            b"]d2010952012345678821A B\xff",
            "AI (21) at position 22: space is not in CSET 82",
        );
        check_bytes(
            b"]d20109520\xff23456788",
            "AI (01) at position 10: invalid UTF-8",
        );
        check_bytes(
            b"]d2\xff",
            "at position 3: expected an AI (digits), found non-ASCII character U+FFFD",
        );
    }

    #[test]
    fn formats_canonically() {
        let data = parse_element_string(b"]d221XYZ\x1d10ABC123\x1d17251231010952012345678891ee07")
            .unwrap();
        assert_eq!(
            format_element_string(&data),
            "]d2010952012345678817251231\
             10ABC123\u{1d}21XYZ\u{1d}91ee07"
        );
    }

    #[test]
    fn input_size_is_limited() {
        let input = format!("]d20109520123456788{}", "9".repeat(INPUT_LENGTH_MAX));
        assert_eq!(
            parse_element_string(input.as_bytes())
                .unwrap_err()
                .to_string(),
            "at position 4096: input too long: 4115 bytes, at most 4096"
        );
    }
}
