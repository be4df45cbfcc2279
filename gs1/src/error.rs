//! The one error type of the crate and the rules it reports.

use crate::ai::Ai;

/// Why an identifier, element string, URI or date was refused.
///
/// Its `Display` is one line: the AI (when one is involved), the position
/// (a 0-based byte offset into the input that was given to the function
/// that failed) and the rule broken, e.g.
/// `AI (01) at position 17: bad check digit: expected 8, found 9`.
/// Branch on [`Gs1Error::rule`], not on the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{rule}", context(.ai, .position))]
pub struct Gs1Error {
    ai: Option<Ai>,
    position: Option<usize>,
    rule: Rule,
}

/// The rule an input broke; see [`Gs1Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// Nothing to parse (empty input, or only a symbology identifier).
    #[error("no data")]
    Empty,
    /// The input exceeds the crate-wide length limit.
    #[error("input too long: {length} bytes, at most {max}")]
    InputTooLong {
        /// Length of the input in bytes.
        length: usize,
        /// The limit, [`crate::INPUT_LENGTH_MAX`].
        max: usize,
    },
    /// The input starts with a UTF-8 byte order mark.
    #[error("byte order mark at start of input")]
    ByteOrderMark,
    /// The input ends with CR or LF (a scanner's line terminator).
    #[error("trailing CR/LF line terminator")]
    TrailingLineEnd,
    /// The input is not valid UTF-8 where text was expected.
    #[error("invalid UTF-8")]
    NotUtf8,
    /// A symbology identifier that does not announce GS1 data.
    #[error("symbology identifier {found} is not a GS1 one (expected ]d2, ]C1, ]e0 or ]Q3)")]
    BadSymbologyIdentifier {
        /// The identifier found, escaped for display.
        found: String,
    },
    /// Where an AI must start, something else was found.
    #[error("expected an AI (digits), found {}", char_name(*.found))]
    ExpectedAi {
        /// The character found.
        found: char,
    },
    /// The input ends in the middle of an AI.
    #[error("input ends inside an AI")]
    TruncatedAi,
    /// An AI this crate does not know.
    #[error("unknown AI starting with {prefix}")]
    UnknownAi {
        /// The digits read so far.
        prefix: String,
    },
    /// A GS1 AI that exists but that this service does not support.
    #[error("AI ({code}) is not supported")]
    UnsupportedAi {
        /// The AI's digits.
        code: String,
    },
    /// An AI with no value.
    #[error("empty value")]
    EmptyValue,
    /// A value or identifier of the wrong length.
    #[error("wrong length: expected {expected}, found {found}")]
    WrongLength {
        /// What was expected, in words (`14 digits`).
        expected: &'static str,
        /// The length found.
        found: usize,
    },
    /// A variable-length value longer than its AI allows.
    #[error("value too long: {length} characters, at most {max}")]
    TooLong {
        /// The length found.
        length: usize,
        /// The maximum for the AI.
        max: usize,
    },
    /// A variable-length value too long because it runs into the next AI:
    /// the GS that should end it is missing where the position points.
    #[error(
        "missing GS separator: value is {length} characters (at most {max}) and AI ({next}) seems to start here"
    )]
    MissingSeparator {
        /// The AI that seems to follow.
        next: Ai,
        /// The length of the run-on value.
        length: usize,
        /// The maximum for the AI.
        max: usize,
    },
    /// A character other than a digit in a numeric field.
    #[error("expected a digit, found {}", char_name(*.found))]
    NotDigit {
        /// The character found.
        found: char,
    },
    /// A character outside GS1 CSET 82.
    #[error("{} is not in CSET 82", char_name(*.found))]
    InvalidChar {
        /// The character found.
        found: char,
    },
    /// The mod-10 check digit does not match.
    #[error("bad check digit: expected {expected}, found {found}")]
    BadCheckDigit {
        /// The check digit computed from the data digits.
        expected: u8,
        /// The check digit given.
        found: u8,
    },
    /// A date that does not exist.
    #[error("invalid date {value}: {reason}")]
    InvalidDate {
        /// The date as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A GS where an AI was expected (e.g. right after `]d2`).
    #[error("unexpected GS separator where an AI should start")]
    UnexpectedSeparator,
    /// Two GS in a row.
    #[error("two GS separators in a row")]
    DoubleSeparator,
    /// A GS with nothing after it.
    #[error("GS separator at end of input")]
    TrailingSeparator,
    /// The same AI twice with different values.
    #[error("appears twice with different values")]
    DuplicateAi,
    /// Neither a GTIN (01) nor an SSCC (00).
    #[error("no GTIN (01) or SSCC (00)")]
    MissingPrimaryKey,
    /// An AI that is only meaningful together with another one.
    #[error("requires AI ({required})")]
    RequiresAi {
        /// The AI that must also be present.
        required: Ai,
    },
    /// Malformed brackets in the human-readable form.
    #[error("bad bracket: {reason}")]
    BadBracket {
        /// What is wrong.
        reason: &'static str,
    },
    /// A malformed or forbidden percent escape (Digital Link, EPC URI),
    /// or a character that must be escaped but is not.
    #[error("bad percent escape: {reason}")]
    BadEscape {
        /// What is wrong.
        reason: &'static str,
    },
    /// A URI that is not shaped like a Digital Link or EPC URI.
    #[error("bad URI: {reason}")]
    BadUri {
        /// What is wrong.
        reason: &'static str,
    },
    /// A Digital Link path segment that has no place there.
    #[error("unexpected path segment {segment}: {reason}")]
    UnexpectedPathSegment {
        /// The segment, escaped for display.
        segment: String,
        /// Why it is not accepted.
        reason: &'static str,
    },
    /// Digital Link key qualifiers out of the order 22, 10, 21.
    #[error("qualifier {qualifier} out of order: the order is {order}, each at most once")]
    QualifierOrder {
        /// The qualifier found out of order, as written in the path.
        qualifier: String,
        /// The order required.
        order: &'static str,
    },
    /// An AI in the Digital Link query that must be in the path.
    #[error("must be in the path, not in the query")]
    AiNotAllowedInQuery,
    /// A company prefix length outside 6–12.
    #[error("company prefix length {found} is outside 6..=12")]
    PrefixLength {
        /// The length given or found.
        found: usize,
    },
    /// A Digital Link domain that is not a plain host name.
    #[error("bad domain: only letters, digits, '.', '-', ':', '[' and ']' are allowed")]
    BadDomain,
    /// The data cannot be written in the requested encoding.
    #[error("cannot encode: {reason}")]
    NotRepresentable {
        /// Why not.
        reason: &'static str,
    },
}

impl Gs1Error {
    pub(crate) fn new(rule: Rule) -> Self {
        Self {
            ai: None,
            position: None,
            rule,
        }
    }

    pub(crate) fn at(rule: Rule, position: usize) -> Self {
        Self::new(rule).with_position(position)
    }

    pub(crate) fn with_ai(mut self, ai: Ai) -> Self {
        self.ai = Some(ai);
        self
    }

    pub(crate) fn with_position(mut self, position: usize) -> Self {
        self.position = Some(position);
        self
    }

    /// Translates the position, e.g. from an offset inside a value to one
    /// inside the whole input.
    pub(crate) fn map_position(mut self, map: impl FnOnce(usize) -> usize) -> Self {
        self.position = self.position.map(map);
        self
    }

    /// The AI involved, when there is one.
    pub fn ai(&self) -> Option<Ai> {
        self.ai
    }

    /// The 0-based byte offset into the input where the problem is, when
    /// there is one place to point at.
    pub fn position(&self) -> Option<usize> {
        self.position
    }

    /// The rule broken.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

fn context(ai: &Option<Ai>, position: &Option<usize>) -> String {
    match (ai, position) {
        (Some(ai), Some(position)) => format!("AI ({ai}) at position {position}: "),
        (Some(ai), None) => format!("AI ({ai}): "),
        (None, Some(position)) => format!("at position {position}: "),
        (None, None) => String::new(),
    }
}

/// Names a character so that invisible ones show up in a one-line message.
pub(crate) fn char_name(found: char) -> String {
    match found {
        ' ' => "space".to_owned(),
        c if c.is_ascii_graphic() => format!("'{c}'"),
        c if c.is_ascii_control() => format!("control character 0x{:02X}", u32::from(c)),
        c => format!("non-ASCII character U+{:04X}", u32::from(c)),
    }
}

/// Escapes and shortens input echoed in a message, keeping it one line.
pub(crate) fn shown(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 24;
    let mut out: String = text
        .chars()
        .take(SHOWN_CHARS_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > SHOWN_CHARS_MAX {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shapes() {
        let check = |error: Gs1Error, expected: &str| assert_eq!(error.to_string(), expected);
        let rule = Rule::BadCheckDigit {
            expected: 8,
            found: 9,
        };
        check(
            Gs1Error::at(rule.clone(), 3).with_ai(Ai::Gtin),
            "AI (01) at position 3: bad check digit: expected 8, found 9",
        );
        check(
            Gs1Error::new(rule.clone()).with_ai(Ai::Gtin),
            "AI (01): bad check digit: expected 8, found 9",
        );
        check(
            Gs1Error::at(rule.clone(), 0),
            "at position 0: bad check digit: expected 8, found 9",
        );
        check(Gs1Error::new(rule), "bad check digit: expected 8, found 9");
    }

    #[test]
    fn char_names() {
        let check = |c: char, expected: &str| assert_eq!(char_name(c), expected);
        check('A', "'A'");
        check(' ', "space");
        check('\r', "control character 0x0D");
        check('\u{1d}', "control character 0x1D");
        check('é', "non-ASCII character U+00E9");
    }

    #[test]
    fn shown_escapes_and_shortens() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"x".repeat(30)), format!("\"{}…\"", "x".repeat(24)));
    }
}
