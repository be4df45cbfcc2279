//! The human-readable bracketed form, `(01)09520123456788(10)ABC123`.

use crate::ai::Ai;
use crate::data::Gs1Data;
use crate::element_string::check_input;
use crate::error::{Gs1Error, Rule};
use crate::mapped::Mapped;

/// The most AI digits read inside brackets; longer runs are reported as
/// unknown AIs rather than searched further.
const AI_DIGITS_MAX: usize = 4;

/// Parses the bracketed form. A value runs until the next `(` that opens
/// an AI (2–4 digits and `)`); other `(` are part of the value, and `\(`
/// always is (the GS1 Syntax Engine's escape, which [`format_bracketed`]
/// writes). Error positions are byte offsets into `input`.
pub fn parse_bracketed(input: &str) -> Result<Gs1Data, Gs1Error> {
    check_input(input.as_bytes())?;
    let mut data = Gs1Data::new();
    let mut position = 0;
    while position < input.len() {
        let (ai, value_start) = read_ai(input.as_bytes(), position)?;
        let value = read_value(input.as_bytes(), value_start);
        let text = value.text()?;
        data.insert(ai, text, Some(position), |offset| value.origin(offset))?;
        position = value.origin(value.bytes().len());
    }
    data.check_associations()?;
    Ok(data)
}

/// Formats the data in bracketed form, in [`Gs1Data::elements`] order,
/// writing `(` inside values as `\(` so that the result parses back.
pub fn format_bracketed(data: &Gs1Data) -> String {
    data.elements()
        .iter()
        .map(|(ai, value)| format!("({ai}){}", value.replace('(', "\\(")))
        .collect()
}

/// Reads `(digits)` at `position`; returns the AI and where its value starts.
fn read_ai(bytes: &[u8], position: usize) -> Result<(Ai, usize), Gs1Error> {
    if bytes[position] != b'(' {
        let reason = "expected '(' opening an AI";
        return Err(Gs1Error::at(Rule::BadBracket { reason }, position));
    }
    let digits_start = position + 1;
    let digit_count = bytes[digits_start..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let digits_end = digits_start + digit_count;
    if !(2..=AI_DIGITS_MAX).contains(&digit_count) {
        return Err(bad_ai(bytes, position, digits_end, digit_count));
    }
    if bytes.get(digits_end) != Some(&b')') {
        let reason = "expected ')' closing the AI";
        return Err(Gs1Error::at(Rule::BadBracket { reason }, digits_end));
    }
    let code: String = bytes[digits_start..digits_end]
        .iter()
        .map(|byte| char::from(*byte))
        .collect();
    match Ai::from_code(&code) {
        Some(ai) => Ok((ai, digits_end + 1)),
        None => Err(Gs1Error::at(Rule::UnknownAi { prefix: code }, digits_start)),
    }
}

fn bad_ai(bytes: &[u8], position: usize, digits_end: usize, digit_count: usize) -> Gs1Error {
    let digits_start = position + 1;
    if digit_count > AI_DIGITS_MAX {
        let prefix: String = bytes[digits_start..digits_start + AI_DIGITS_MAX]
            .iter()
            .map(|byte| char::from(*byte))
            .collect();
        return Gs1Error::at(Rule::UnknownAi { prefix }, digits_start);
    }
    match bytes.get(digits_end) {
        None => Gs1Error::at(Rule::TruncatedAi, digits_start),
        Some(_) => {
            let text = String::from_utf8_lossy(&bytes[digits_end..]);
            let found = text.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            Gs1Error::at(Rule::ExpectedAi { found }, digits_end)
        }
    }
}

/// The value starting at `start`, with `\(` unescaped.
fn read_value(bytes: &[u8], start: usize) -> Mapped {
    let mut value = Mapped::new(start);
    let mut index = start;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' if bytes.get(index + 1) == Some(&b'(') => {
                value.push(b'(', index);
                index += 2;
            }
            b'(' if opens_ai(&bytes[index..]) => break,
            byte => {
                value.push(byte, index);
                index += 1;
            }
        }
    }
    value.set_end(index);
    value
}

/// Whether `bytes` starts with `(`, 2–4 digits and `)`.
fn opens_ai(bytes: &[u8]) -> bool {
    let digit_count = bytes[1..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    (2..=AI_DIGITS_MAX).contains(&digit_count) && bytes.get(1 + digit_count) == Some(&b')')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and compares the scanner rendering (GS shown as `|`)
    /// of the result, or the error message.
    fn check(input: &str, expected: Result<&str, &str>) {
        let got = parse_bracketed(input)
            .map(|data| crate::format_element_string(&data).replace('\u{1d}', "|"))
            .map_err(|error| error.to_string());
        let expected = expected.map(str::to_owned).map_err(str::to_owned);
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn accepted() {
        check(
            "(01)09520123456788(17)251231(10)ABC123(21)XYZ",
            Ok("]d2010952012345678817251231\
                10ABC123|21XYZ"),
        );
        check(
            "(21)XYZ(10)ABC123(01)09520123456788",
            Ok("]d20109520123456788\
                10ABC123|21XYZ"),
        );
        check("(00)106141412345678908", Ok("]d200106141412345678908"));
        // A '(' that does not open an AI is data; "\(" always is.
        check(
            "(01)09520123456788(10)A(B)(21)X\\(12)",
            Ok("]d20109520123456788\
                10A(B)|21X(12)"),
        );
    }

    #[test]
    fn errors() {
        check("", Err("at position 0: no data"));
        check(
            "01)09520123456788",
            Err("at position 0: bad bracket: expected '(' opening an AI"),
        );
        check(
            "(01",
            Err("at position 3: bad bracket: expected ')' closing the AI"),
        );
        check("(0", Err("at position 1: input ends inside an AI"));
        check(
            "(x)1",
            Err("at position 1: expected an AI (digits), found 'x'"),
        );
        check("(99)1", Err("at position 1: unknown AI starting with 99"));
        check(
            "(12345)1",
            Err("at position 1: unknown AI starting with 1234"),
        );
        check(
            "(01)09520123456788(10)(21)X",
            Err("AI (10) at position 22: empty value"),
        );
        check(
            "(01)09520123456788(21)",
            Err("AI (21) at position 22: empty value"),
        );
        check(
            "(01)095201234567880",
            Err("AI (01) at position 4: wrong length: expected 14 digits, found 15"),
        );
        check(
            "(01)09520123456789",
            Err("AI (01) at position 17: bad check digit: expected 8, found 9"),
        );
        check(
            "(01)09520123456788(21)A\\(B C",
            Err("AI (21) at position 26: space is not in CSET 82"),
        );
        check(
            "(01)09520123456788(21)A\\B",
            Err("AI (21) at position 23: '\\' is not in CSET 82"),
        );
        check(
            "(01)09520123456788(21)X(21)Y",
            Err("AI (21) at position 23: appears twice with different values"),
        );
        check(
            "(01)09520123456788(21)X\n",
            Err("at position 23: trailing CR/LF line terminator"),
        );
        check("(10)L1", Err("no GTIN (01) or SSCC (00)"));
    }

    #[test]
    fn format_escapes_brackets() {
        let data = parse_bracketed("(01)09520123456788(21)X\\(12)").unwrap();
        assert_eq!(format_bracketed(&data), "(01)09520123456788(21)X\\(12)");
    }
}
