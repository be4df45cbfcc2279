//! `parse_any`: one entry point for every encoding, as the server and the
//! CLI receive codes without knowing their form.

use std::fmt;

use crate::bracketed::parse_bracketed;
use crate::data::Gs1Data;
use crate::digital_link::{
    LinkForm, parse_digital_link_form, scheme_length, starts_with_ignore_case,
};
use crate::element_string::{GROUP_SEPARATOR, check_input, parse_element_string};
use crate::epc::parse_epc_uri;
use crate::error::{Gs1Error, Rule};
use crate::identifiers::CompanyPrefixLength;
use crate::mapped::Mapped;

/// Text that people and scanner software write for GS (ASCII 0x1D),
/// matched in any case. `\x1d`, `{GS}` cannot clash with data (backslash
/// and braces are not in CSET 82); `<GS>` could, in the unlikely value
/// containing that text.
const GS_PLACEHOLDERS: [&[u8]; 3] = [b"<GS>", b"\\x1d", b"{GS}"];

/// The encoding [`parse_any`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputForm {
    /// A scanner element string (real GS bytes or text placeholders).
    ElementString,
    /// The bracketed human-readable form.
    Bracketed,
    /// A current GS1 Digital Link URI.
    DigitalLink,
    /// A legacy `/gtin/…/lot/…/ser/…` Digital Link URI.
    LegacyDigitalLink,
    /// An EPC pure-identity URI, which also tells the company prefix length.
    EpcUri(CompanyPrefixLength),
}

impl InputForm {
    /// A short name for people and logs.
    pub fn name(self) -> &'static str {
        match self {
            InputForm::ElementString => "element string",
            InputForm::Bracketed => "bracketed",
            InputForm::DigitalLink => "Digital Link",
            InputForm::LegacyDigitalLink => "legacy Digital Link",
            InputForm::EpcUri(_) => "EPC URI",
        }
    }
}

impl fmt::Display for InputForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a code in any supported encoding, told apart by how it starts:
/// `urn:epc:` is an EPC URI; `http://`, `https://` or `/` a Digital Link
/// (current or legacy); `(` the bracketed form; anything else a scanner
/// element string, in which the text placeholders `<GS>`, `\x1d` and
/// `{GS}` (any case) stand for GS. Error positions are byte offsets into
/// `input` as given.
pub fn parse_any(input: &[u8]) -> Result<(Gs1Data, InputForm), Gs1Error> {
    check_input(input)?;
    if starts_with_ignore_case(input, b"urn:epc:") {
        let (data, length) = parse_epc_uri(as_text(input)?)?;
        return Ok((data, InputForm::EpcUri(length)));
    }
    if scheme_length(input).is_some() || input.starts_with(b"/") {
        let (data, form) = parse_digital_link_form(as_text(input)?)?;
        let form = match form {
            LinkForm::Current => InputForm::DigitalLink,
            LinkForm::Legacy => InputForm::LegacyDigitalLink,
        };
        return Ok((data, form));
    }
    if input.starts_with(b"(") {
        return Ok((parse_bracketed(as_text(input)?)?, InputForm::Bracketed));
    }
    let converted = replace_placeholders(input);
    let data =
        parse_element_string(converted.bytes()).map_err(|error| converted.map_error(error))?;
    Ok((data, InputForm::ElementString))
}

fn as_text(input: &[u8]) -> Result<&str, Gs1Error> {
    std::str::from_utf8(input).map_err(|error| Gs1Error::at(Rule::NotUtf8, error.valid_up_to()))
}

/// Turns GS placeholders into real GS bytes, keeping track of positions.
fn replace_placeholders(input: &[u8]) -> Mapped {
    let mut converted = Mapped::new(input.len());
    let mut index = 0;
    while index < input.len() {
        let rest = &input[index..];
        match GS_PLACEHOLDERS
            .iter()
            .find(|text| starts_with_ignore_case(rest, text))
        {
            Some(placeholder) => {
                converted.push(GROUP_SEPARATOR, index);
                index += placeholder.len();
            }
            None => {
                converted.push(input[index], index);
                index += 1;
            }
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, InputForm), &str>) {
        let got = parse_any(input.as_bytes())
            .map(|(data, form)| (crate::format_bracketed(&data), form))
            .map_err(|error| error.to_string());
        let expected = expected
            .map(|(text, form)| (text.to_owned(), form))
            .map_err(str::to_owned);
        assert_eq!(got, expected, "input {input:?}");
    }

    const FULL: &str = "(01)09520123456788(17)251231(10)ABC123(21)XYZ";

    #[test]
    fn detects_every_form() {
        let element = InputForm::ElementString;
        check(
            "]d201095201234567881725123110ABC123\u{1d}21XYZ",
            Ok((FULL, element)),
        );
        check(
            "]d201095201234567881725123110ABC123<GS>21XYZ",
            Ok((FULL, element)),
        );
        check(
            "]d201095201234567881725123110ABC123<gs>21XYZ",
            Ok((FULL, element)),
        );
        check(
            "]d201095201234567881725123110ABC123\\x1d21XYZ",
            Ok((FULL, element)),
        );
        check(
            "]d201095201234567881725123110ABC123\\X1D21XYZ",
            Ok((FULL, element)),
        );
        check(
            "]d201095201234567881725123110ABC123{GS}21XYZ",
            Ok((FULL, element)),
        );
        check(
            "<GS>01095201234567881725123110ABC123{gs}21XYZ",
            Ok((FULL, element)),
        );
        check(
            "01095201234567881725123110ABC123<GS>21XYZ",
            Ok((FULL, element)),
        );
        check(FULL, Ok((FULL, InputForm::Bracketed)));
        check(
            "https://id.gs1.org/01/09520123456788/10/ABC123/21/XYZ?17=251231",
            Ok((FULL, InputForm::DigitalLink)),
        );
        check(
            "/01/09520123456788/10/ABC123/21/XYZ?17=251231",
            Ok((FULL, InputForm::DigitalLink)),
        );
        check(
            "https://x.example/gtin/09520123456788/lot/ABC123/ser/XYZ?exp=251231",
            Ok((FULL, InputForm::LegacyDigitalLink)),
        );
        let length = CompanyPrefixLength::new(7).unwrap();
        check(
            "urn:epc:id:sgtin:0614141.812345.6789",
            Ok(("(01)80614141123458(21)6789", InputForm::EpcUri(length))),
        );
        check(
            "urn:epc:id:sscc:0614141.1234567890",
            Ok(("(00)106141412345678908", InputForm::EpcUri(length))),
        );
    }

    #[test]
    fn errors_point_into_the_original_input() {
        // "<GS>" is 4 bytes of input but 1 byte after conversion.
        check(
            "]d2010952012345678810ABC<GS><GS>21XYZ",
            Err("at position 28: two GS separators in a row"),
        );
        check(
            "]d2010952012345678810ABC<GS>21XY Z",
            Err("AI (21) at position 32: space is not in CSET 82"),
        );
        check(
            "]d2010952012345678810ABC<GS>",
            Err("at position 24: GS separator at end of input"),
        );
        check(
            "]d20109520123456788\r\n",
            Err("at position 19: trailing CR/LF line terminator"),
        );
        check(
            "(01)09520123456788\n",
            Err("at position 18: trailing CR/LF line terminator"),
        );
        check("", Err("at position 0: no data"));
        check(
            "urn:epc:id:sgtin:0614141.812345.6789\u{e9}",
            Err("AI (21) at position 36: non-ASCII character U+00E9 is not in CSET 82"),
        );
    }

    #[test]
    fn invalid_utf8_in_text_forms() {
        let got = parse_any(b"https://x/01/\xff").unwrap_err();
        assert_eq!(got.to_string(), "at position 13: invalid UTF-8");
    }
}
