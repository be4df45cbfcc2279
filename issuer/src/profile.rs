//! Market profiles and serial formats: which serials a product may carry.
//!
//! Every market fixes its own serial rule (DOMAIN.md §3–§5): the EU allows up
//! to 20 characters of GS1 CSET 82, the US up to 20 letters and digits, Russia
//! exactly 13 Latin letters and digits, Brazil 13 digits, RFID SGTIN-96 only
//! numbers below 2^38. A [`SerialFormat`] is checked once, when a product or a
//! pool is defined, against GS1 and against its [`MarketProfile`]; after that
//! the generator's hot path never re-validates, and every serial it draws is a
//! valid AI (21) value of the market.

use std::fmt;
use std::str::FromStr;

/// The longest serial GS1 allows in AI (21), in characters.
pub const SERIAL_LENGTH_MAX: u8 = 20;

/// The fewest characters an alphabet may have: one character carries no
/// randomness at all.
pub const ALPHABET_SIZE_MIN: usize = 2;

/// The most characters an alphabet may have: all of GS1 CSET 82.
pub const ALPHABET_SIZE_MAX: usize = 82;

/// SGTIN-96 serials are below this bound (the tag's serial field has 38 bits).
pub const SGTIN96_SERIAL_LIMIT: u64 = 1 << 38;

/// Decimal digits of the largest SGTIN-96 serial, 2^38 − 1 = 274877906943.
const SGTIN96_DIGITS_MAX: u8 = 12;

/// The alphabet SGTIN-96 serials are written in.
const DIGITS: &str = "0123456789";

/// The longest profile name echoed back in an error, in characters: names
/// come from clients and an error message must stay bounded.
const ECHOED_NAME_MAX: usize = 64;

/// GS1 CSET 82 as a bit set over the ASCII bytes: bit `b` is set when byte `b`
/// is allowed. A `const` copy of [`gs1::is_cset82`] (which is not `const fn`)
/// so that the default formats are checked by the compiler; a unit test proves
/// both agree on every byte.
const CSET82: u128 = cset82_members();

const fn cset82_members() -> u128 {
    let mut members = 0u128;
    let mut byte = 0u8;
    while byte < 128 {
        let allowed = matches!(byte,
            b'!' | b'"' | b'%'..=b'/' | b'0'..=b'9' | b':'..=b'?' | b'A'..=b'Z' | b'_' | b'a'..=b'z');
        if allowed {
            members |= 1 << byte;
        }
        byte += 1;
    }
    members
}

/// Whether `byte` is in the bit set `members` (which only holds ASCII bytes).
const fn is_member(members: u128, byte: u8) -> bool {
    byte < 128 && members & (1 << byte) != 0
}

/// The characters serials are drawn from: 2 to 82 distinct characters of GS1
/// CSET 82, kept in the order given (the order only decides which random
/// value maps to which character; the set of serials is the same).
///
/// `Copy` and allocation-free, so a format can be handed to the generator and
/// stored with a product without cloning heap data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alphabet {
    characters: [u8; ALPHABET_SIZE_MAX],
    count: u8,
    members: u128,
}

/// Why [`Alphabet::checked`] refused its input, without any heap data so that
/// it can be used in `const` context.
#[derive(Clone, Copy)]
enum AlphabetFault {
    NotCset82 { position: usize },
    Repeated { position: usize },
    TooShort { count: usize },
}

impl Alphabet {
    /// Accepts 2–82 distinct characters of GS1 CSET 82, in any order.
    ///
    /// Errors name the field and the rule, e.g. `alphabet: character '#'
    /// (0x23) at position 3 is not in GS1 CSET 82`; positions count
    /// characters from 0.
    pub fn new(text: &str) -> Result<Self, ProfileError> {
        Self::checked(text.as_bytes()).map_err(|fault| match fault {
            AlphabetFault::NotCset82 { position } => ProfileError::AlphabetNotCset82 {
                character: character_at(text, position),
                position,
            },
            AlphabetFault::Repeated { position } => ProfileError::AlphabetRepeated {
                character: character_at(text, position),
                position,
            },
            AlphabetFault::TooShort { count } => ProfileError::AlphabetTooShort { count },
        })
    }

    /// The check behind [`Alphabet::new`], usable in `const` context. Stops at
    /// the first fault, so it reads at most 83 bytes of any input.
    const fn checked(bytes: &[u8]) -> Result<Self, AlphabetFault> {
        let mut characters = [0u8; ALPHABET_SIZE_MAX];
        let mut members = 0u128;
        let mut position = 0;
        while position < bytes.len() {
            let byte = bytes[position];
            if !is_member(CSET82, byte) {
                return Err(AlphabetFault::NotCset82 { position });
            }
            if is_member(members, byte) {
                return Err(AlphabetFault::Repeated { position });
            }
            // Cannot index out of bounds: CSET 82 has 82 characters, so the
            // 83rd byte is either outside CSET 82 or a repeat, refused above.
            characters[position] = byte;
            members |= 1 << byte;
            position += 1;
        }
        if bytes.len() < ALPHABET_SIZE_MIN {
            return Err(AlphabetFault::TooShort { count: bytes.len() });
        }
        Ok(Self {
            characters,
            count: bytes.len() as u8,
            members,
        })
    }

    /// The characters in the order given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.characters[..usize::from(self.count)]
    }

    /// The characters in the order given, as text.
    pub fn as_str(&self) -> &str {
        // Cannot fail: every character is ASCII (CSET 82).
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// How many characters the alphabet has, 2–82.
    pub fn character_count(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether `byte` is one of the alphabet's characters.
    pub fn contains(&self, byte: u8) -> bool {
        is_member(self.members, byte)
    }
}

impl fmt::Debug for Alphabet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Alphabet").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Alphabet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The character starting at byte `position` of `text` (a char boundary: all
/// bytes before it are ASCII).
fn character_at(text: &str, position: usize) -> char {
    text.get(position..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// A serial length in characters, 1–20 (GS1 AI (21)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialLength(u8);

impl SerialLength {
    /// Accepts 1–20; the error reads `length: 25 is outside 1..=20`.
    pub fn new(length: u32) -> Result<Self, ProfileError> {
        Self::checked(length).ok_or(ProfileError::LengthOutOfRange { length })
    }

    /// The check behind [`SerialLength::new`], usable in `const` context.
    const fn checked(length: u32) -> Option<Self> {
        if length >= 1 && length <= SERIAL_LENGTH_MAX as u32 {
            Some(Self(length as u8))
        } else {
            None
        }
    }

    /// The length in characters.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// How the serials of a product or pool look, and so how many there can be.
///
/// Both variants are valid by construction: [`Alphabet`] and
/// [`SerialLength`] are checked types, so every serial a format admits is a
/// valid GS1 AI (21) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SerialFormat {
    /// Exactly `length` characters, each one of `alphabet`'s. Leading
    /// characters are as random as the others (a leading `0` is fine).
    Fixed {
        /// The characters serials are drawn from.
        alphabet: Alphabet,
        /// The number of characters of every serial.
        length: SerialLength,
    },
    /// What an RFID SGTIN-96 tag can carry: a decimal integer from 1 to
    /// 2^38 − 1, written without leading zeros, so 1 to 12 digits.
    Sgtin96,
}

impl SerialFormat {
    /// A fixed-length format from the two fields of the API's `SerialFormat`.
    /// The alphabet is checked first; errors name the field and the rule
    /// (see [`Alphabet::new`] and [`SerialLength::new`]). Market rules are
    /// checked separately by [`MarketProfile::check_format`].
    pub fn custom(alphabet: &str, length: u32) -> Result<Self, ProfileError> {
        Ok(Self::Fixed {
            alphabet: Alphabet::new(alphabet)?,
            length: SerialLength::new(length)?,
        })
    }

    /// Builds a fixed format in `const` context; a bad argument fails the
    /// build.
    const fn fixed_const(alphabet: &str, length: u32) -> Self {
        let Ok(alphabet) = Alphabet::checked(alphabet.as_bytes()) else {
            panic!("invalid built-in alphabet");
        };
        let Some(length) = SerialLength::checked(length) else {
            panic!("invalid built-in length");
        };
        Self::Fixed { alphabet, length }
    }

    /// The exact number of distinct serials the format admits: alphabet
    /// size ^ length, or 2^38 − 1 for SGTIN-96. Always fits: the largest,
    /// 82^20 ≈ 1.9 × 10^38, is below 2^128 ≈ 3.4 × 10^38.
    pub fn space_size(&self) -> u128 {
        match self {
            Self::Fixed { alphabet, length } => {
                let base = alphabet.character_count() as u128;
                base.pow(u32::from(length.get()))
            }
            Self::Sgtin96 => u128::from(SGTIN96_SERIAL_LIMIT - 1),
        }
    }

    /// Whether `serial` is one of the format's serials (exact bytes; serials
    /// are case-sensitive).
    pub fn contains(&self, serial: &[u8]) -> bool {
        match self {
            Self::Fixed { alphabet, length } => {
                serial.len() == usize::from(length.get())
                    && serial.iter().all(|&byte| alphabet.contains(byte))
            }
            Self::Sgtin96 => is_sgtin96_serial(serial),
        }
    }

    /// The alphabet for reporting (`SerialFormat.alphabet` of the API);
    /// `"0123456789"` for SGTIN-96.
    pub fn alphabet_text(&self) -> &str {
        match self {
            Self::Fixed { alphabet, .. } => alphabet.as_str(),
            Self::Sgtin96 => DIGITS,
        }
    }

    /// The length for reporting (`SerialFormat.length` of the API); for
    /// SGTIN-96 the longest, 12 (its serials have 1 to 12 digits).
    pub fn length(&self) -> u32 {
        match self {
            Self::Fixed { length, .. } => u32::from(length.get()),
            Self::Sgtin96 => u32::from(SGTIN96_DIGITS_MAX),
        }
    }

    /// The fewest and most characters a serial of this format has.
    fn length_range(&self) -> (u32, u32) {
        match self {
            Self::Fixed { length, .. } => (u32::from(length.get()), u32::from(length.get())),
            Self::Sgtin96 => (1, u32::from(SGTIN96_DIGITS_MAX)),
        }
    }
}

impl fmt::Display for SerialFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed { alphabet, length } => {
                write!(f, "{} characters of \"{alphabet}\"", length.get())
            }
            Self::Sgtin96 => f.write_str("SGTIN-96 (1 to 2^38-1, no leading zero)"),
        }
    }
}

/// 1–12 digits, no leading zero, below 2^38.
fn is_sgtin96_serial(serial: &[u8]) -> bool {
    let shape_ok = (1..=usize::from(SGTIN96_DIGITS_MAX)).contains(&serial.len())
        && serial[0] != b'0'
        && serial.iter().all(u8::is_ascii_digit);
    // At most 12 digits: the value fits in u64 without overflow.
    shape_ok
        && serial
            .iter()
            .fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0'))
            < SGTIN96_SERIAL_LIMIT
}

/// The default alphabet of the alphanumeric markets: upper-case letters and
/// digits without `0 O 1 I`, 32 characters.
///
/// Upper case only, because serials are case-sensitive and scanners with the
/// wrong keyboard layout swap case (DOMAIN.md §2). `0/O` and `1/I` go because
/// they look alike in nearly every font, so a person typing a serial from the
/// printed text (when the code will not scan) and line OCR both confuse them.
/// `5/S`, `2/Z` and `8/B` stay: the fonts used for printed text on packs
/// (OCR-B and its relatives) are designed to tell them apart, and dropping
/// them would cost 3.6 bits per 12-character serial (32 → 26 characters) and
/// the power-of-two size that lets every random byte be used without
/// rejection. A product that needs a stricter alphabet uses a format override.
const UPPER_CASE_UNAMBIGUOUS: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// eu-fmd and us-dscsa: 32^12 = 2^60 ≈ 1.15 × 10^18 serials, so the EU
/// guessing rule allows 1.15 × 10^14 per GTIN, far beyond any product's
/// lifetime, in 12 characters that keep the DataMatrix and printed text small.
const ALPHANUMERIC_12: SerialFormat = SerialFormat::fixed_const(UPPER_CASE_UNAMBIGUOUS, 12);

/// ru-chestny-znak: its rule fixes 13 characters; 32^13 = 2^65.
const ALPHANUMERIC_13: SerialFormat = SerialFormat::fixed_const(UPPER_CASE_UNAMBIGUOUS, 13);

/// br-anvisa: 13 digits, 10^13 serials.
const NUMERIC_13: SerialFormat = SerialFormat::fixed_const(DIGITS, 13);

/// A market's serial rule and the format it uses unless told otherwise.
///
/// Names are the kebab-case words of [`MarketProfile::name`]; they are what
/// products store and what the API and configuration accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarketProfile {
    /// EU Falsified Medicines Directive: ≤ 20 CSET 82 characters,
    /// randomised, guessing rule on.
    EuFmd,
    /// US DSCSA: ≤ 20 letters and digits.
    UsDscsa,
    /// Russia, Chestny Znak: exactly 13 Latin letters and digits.
    RuChestnyZnak,
    /// Brazil, ANVISA: exactly 13 digits (rule unconfirmed, 2015 source).
    BrAnvisa,
    /// RFID SGTIN-96: numeric, 1 to 2^38 − 1, no leading zero.
    Sgtin96,
    /// No market rule beyond GS1; the product supplies its format.
    Custom,
}

/// Which characters a market allows in a serial.
#[derive(Clone, Copy)]
enum CharacterRule {
    Cset82,
    LettersDigits,
    Digits,
}

impl CharacterRule {
    fn allows(self, byte: u8) -> bool {
        match self {
            Self::Cset82 => is_member(CSET82, byte),
            Self::LettersDigits => byte.is_ascii_alphanumeric(),
            Self::Digits => byte.is_ascii_digit(),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Cset82 => "GS1 CSET 82 only",
            Self::LettersDigits => "Latin letters and digits only",
            Self::Digits => "digits only",
        }
    }
}

/// How long a market's serials may be.
#[derive(Clone, Copy)]
enum LengthRule {
    AtMost(u32),
    Exactly(u32),
}

impl LengthRule {
    fn allows(self, (shortest, longest): (u32, u32)) -> bool {
        match self {
            Self::AtMost(max) => longest <= max,
            Self::Exactly(length) => shortest == length && longest == length,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::AtMost(_) => "at most 20 characters",
            Self::Exactly(_) => "exactly 13 characters",
        }
    }
}

/// What a market requires of a format.
enum FormatRule {
    /// Any fixed or SGTIN-96 format whose serials satisfy both rules.
    Serials(CharacterRule, LengthRule),
    /// Only [`SerialFormat::Sgtin96`].
    Sgtin96Only,
    /// Any [`SerialFormat::Fixed`].
    AnyFixed,
}

impl MarketProfile {
    /// Every profile, in the order they are published.
    pub const ALL: [Self; 6] = [
        Self::EuFmd,
        Self::UsDscsa,
        Self::RuChestnyZnak,
        Self::BrAnvisa,
        Self::Sgtin96,
        Self::Custom,
    ];

    /// The profile's stable name: `eu-fmd`, `us-dscsa`, `ru-chestny-znak`,
    /// `br-anvisa`, `sgtin-96`, `custom`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EuFmd => "eu-fmd",
            Self::UsDscsa => "us-dscsa",
            Self::RuChestnyZnak => "ru-chestny-znak",
            Self::BrAnvisa => "br-anvisa",
            Self::Sgtin96 => "sgtin-96",
            Self::Custom => "custom",
        }
    }

    /// The profile named `name` (exact, case-sensitive); the error lists the
    /// valid names.
    pub fn from_name(name: &str) -> Result<Self, ProfileError> {
        Self::ALL
            .into_iter()
            .find(|profile| profile.name() == name)
            .ok_or_else(|| ProfileError::UnknownProfile {
                name: name.chars().take(ECHOED_NAME_MAX).collect(),
            })
    }

    /// A one-line summary of the market's rule, for people.
    pub const fn description(self) -> &'static str {
        match self {
            Self::EuFmd => {
                "EU Falsified Medicines Directive (Delegated Regulation 2016/161): up to 20 \
                 characters of GS1 CSET 82, randomised; serials issued per GTIN stay below \
                 1/10,000 of the serial space"
            }
            Self::UsDscsa => "US DSCSA: up to 20 letters and digits",
            Self::RuChestnyZnak => {
                "Russia, Chestny Znak: exactly 13 Latin letters and digits; the state-issued \
                 crypto key (AI 91) and crypto code (AI 92) complete the pack's code"
            }
            Self::BrAnvisa => "Brazil, ANVISA: exactly 13 digits (rule unconfirmed, 2015 source)",
            Self::Sgtin96 => "RFID SGTIN-96: numeric serials from 1 to 2^38-1, no leading zero",
            Self::Custom => {
                "Custom: an explicit alphabet of 2 to 82 distinct GS1 CSET 82 characters and a \
                 length of 1 to 20"
            }
        }
    }

    /// Whether the EU guessing rule is enforced by default (a product may
    /// override it): only for `eu-fmd`.
    pub const fn guessing_rule_default(self) -> bool {
        matches!(self, Self::EuFmd)
    }

    /// The format products of this profile use unless they give their own;
    /// `None` for `custom`, which requires an explicit format.
    ///
    /// | profile | format | space size |
    /// |---|---|---|
    /// | eu-fmd, us-dscsa | 12 of `23456789ABCDEFGHJKLMNPQRSTUVWXYZ` | 32^12 = 2^60 ≈ 1.15 × 10^18 |
    /// | ru-chestny-znak | 13 of the same 32 | 32^13 = 2^65 ≈ 3.7 × 10^19 |
    /// | br-anvisa | 13 of `0123456789` | 10^13 |
    /// | sgtin-96 | [`SerialFormat::Sgtin96`] | 2^38 − 1 ≈ 2.7 × 10^11 |
    pub const fn default_format(self) -> Option<SerialFormat> {
        match self {
            Self::EuFmd | Self::UsDscsa => Some(ALPHANUMERIC_12),
            Self::RuChestnyZnak => Some(ALPHANUMERIC_13),
            Self::BrAnvisa => Some(NUMERIC_13),
            Self::Sgtin96 => Some(SerialFormat::Sgtin96),
            Self::Custom => None,
        }
    }

    fn format_rule(self) -> FormatRule {
        match self {
            Self::EuFmd => FormatRule::Serials(CharacterRule::Cset82, LengthRule::AtMost(20)),
            Self::UsDscsa => {
                FormatRule::Serials(CharacterRule::LettersDigits, LengthRule::AtMost(20))
            }
            Self::RuChestnyZnak => {
                FormatRule::Serials(CharacterRule::LettersDigits, LengthRule::Exactly(13))
            }
            Self::BrAnvisa => FormatRule::Serials(CharacterRule::Digits, LengthRule::Exactly(13)),
            Self::Sgtin96 => FormatRule::Sgtin96Only,
            Self::Custom => FormatRule::AnyFixed,
        }
    }

    /// Whether every serial of `format` satisfies the market's rule; the
    /// error names the field and the rule, e.g. `length: 12 is not allowed
    /// by ru-chestny-znak: exactly 13 characters`.
    pub fn check_format(self, format: &SerialFormat) -> Result<(), ProfileError> {
        match (self.format_rule(), format) {
            (FormatRule::Serials(characters, length), _) => {
                let refused = format
                    .alphabet_text()
                    .bytes()
                    .position(|byte| !characters.allows(byte));
                if let Some(position) = refused {
                    return Err(ProfileError::CharacterNotAllowed {
                        profile: self,
                        character: character_at(format.alphabet_text(), position),
                        position,
                        allowed: characters.description(),
                    });
                }
                if !length.allows(format.length_range()) {
                    return Err(match format {
                        SerialFormat::Fixed { length: found, .. } => {
                            ProfileError::LengthNotAllowed {
                                profile: self,
                                length: u32::from(found.get()),
                                allowed: length.description(),
                            }
                        }
                        SerialFormat::Sgtin96 => ProfileError::FormatNotAllowed {
                            profile: self,
                            required: "a fixed length of 13 (SGTIN-96 serials have 1 to 12 digits)",
                        },
                    });
                }
                Ok(())
            }
            (FormatRule::Sgtin96Only, SerialFormat::Sgtin96)
            | (FormatRule::AnyFixed, SerialFormat::Fixed { .. }) => Ok(()),
            (FormatRule::Sgtin96Only, SerialFormat::Fixed { .. }) => {
                Err(ProfileError::FormatNotAllowed {
                    profile: self,
                    required: "the SGTIN-96 format (1 to 2^38-1, no leading zero)",
                })
            }
            (FormatRule::AnyFixed, SerialFormat::Sgtin96) => Err(ProfileError::FormatNotAllowed {
                profile: self,
                required: "an explicit alphabet and length",
            }),
        }
    }
}

impl fmt::Display for MarketProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MarketProfile {
    type Err = ProfileError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name)
    }
}

/// Why a profile name or a serial format was refused.
///
/// `Display` is one line starting with the API field at fault (`alphabet`,
/// `length`, `format` or `market_profile`, also given by
/// [`ProfileError::field`]) and naming the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// An alphabet character outside GS1 CSET 82.
    #[error("alphabet: character {} at position {position} is not in GS1 CSET 82", describe(*.character))]
    AlphabetNotCset82 {
        /// The character refused.
        character: char,
        /// Its 0-based position in the alphabet.
        position: usize,
    },
    /// An alphabet character given twice.
    #[error("alphabet: character {} repeated at position {position}", describe(*.character))]
    AlphabetRepeated {
        /// The character repeated.
        character: char,
        /// The 0-based position of the repeat.
        position: usize,
    },
    /// An alphabet of fewer than 2 characters.
    #[error("alphabet: needs at least 2 characters, found {count}")]
    AlphabetTooShort {
        /// Characters given.
        count: usize,
    },
    /// A serial length outside 1–20.
    #[error("length: {length} is outside 1..=20")]
    LengthOutOfRange {
        /// The length given.
        length: u32,
    },
    /// A profile name that is not one of [`MarketProfile::ALL`].
    #[error(
        "market_profile: unknown profile {name:?}; valid names: {}",
        valid_names()
    )]
    UnknownProfile {
        /// The name given, cut to 64 characters.
        name: String,
    },
    /// An alphabet character the market does not allow.
    #[error("alphabet: character {} at position {position} is not allowed by {profile}: {allowed}", describe(*.character))]
    CharacterNotAllowed {
        /// The profile whose rule is broken.
        profile: MarketProfile,
        /// The character refused.
        character: char,
        /// Its 0-based position in the alphabet.
        position: usize,
        /// The market's rule, in words.
        allowed: &'static str,
    },
    /// A serial length the market does not allow.
    #[error("length: {length} is not allowed by {profile}: {allowed}")]
    LengthNotAllowed {
        /// The profile whose rule is broken.
        profile: MarketProfile,
        /// The length given.
        length: u32,
        /// The market's rule, in words.
        allowed: &'static str,
    },
    /// A kind of format the profile does not accept (a fixed format for
    /// `sgtin-96`, SGTIN-96 for `custom` or a fixed-length market).
    #[error("format: {profile} requires {required}")]
    FormatNotAllowed {
        /// The profile whose rule is broken.
        profile: MarketProfile,
        /// What the profile requires, in words.
        required: &'static str,
    },
}

impl ProfileError {
    /// The API field at fault: `alphabet`, `length`, `format` or
    /// `market_profile`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::AlphabetNotCset82 { .. }
            | Self::AlphabetRepeated { .. }
            | Self::AlphabetTooShort { .. }
            | Self::CharacterNotAllowed { .. } => "alphabet",
            Self::LengthOutOfRange { .. } | Self::LengthNotAllowed { .. } => "length",
            Self::FormatNotAllowed { .. } => "format",
            Self::UnknownProfile { .. } => "market_profile",
        }
    }
}

/// `'#' (0x23)`: the character as Rust would quote it, and its code point.
fn describe(character: char) -> String {
    format!("{character:?} (0x{:02X})", u32::from(character))
}

fn valid_names() -> String {
    MarketProfile::ALL.map(MarketProfile::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cset82_table_agrees_with_gs1() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                is_member(CSET82, byte),
                gs1::is_cset82(byte),
                "byte {byte:#04x}"
            );
        }
        assert_eq!(CSET82.count_ones(), 82);
    }

    fn check_custom(alphabet: &str, length: u32, expected: Result<u128, &str>) {
        let got = SerialFormat::custom(alphabet, length);
        assert_eq!(
            got.as_ref()
                .map(SerialFormat::space_size)
                .map_err(ToString::to_string),
            expected.map_err(str::to_owned),
            "{alphabet:?} {length}"
        );
        if let Ok(format) = got {
            assert_eq!(format.alphabet_text(), alphabet, "order kept");
            assert_eq!(format.length(), length);
        }
    }

    #[test]
    fn custom_formats() {
        check_custom("01", 1, Ok(2));
        check_custom("BA", 3, Ok(8));
        check_custom("0123456789", 20, Ok(10u128.pow(20)));
        check_custom(
            "AB#C",
            4,
            Err("alphabet: character '#' (0x23) at position 2 is not in GS1 CSET 82"),
        );
        check_custom(
            "ABé",
            4,
            Err("alphabet: character 'é' (0xE9) at position 2 is not in GS1 CSET 82"),
        );
        check_custom(
            "AB C",
            4,
            Err("alphabet: character ' ' (0x20) at position 2 is not in GS1 CSET 82"),
        );
        check_custom(
            "A\u{1d}",
            4,
            Err("alphabet: character '\\u{1d}' (0x1D) at position 1 is not in GS1 CSET 82"),
        );
        check_custom(
            "ABCA",
            4,
            Err("alphabet: character 'A' (0x41) repeated at position 3"),
        );
        check_custom("", 4, Err("alphabet: needs at least 2 characters, found 0"));
        check_custom(
            "A",
            4,
            Err("alphabet: needs at least 2 characters, found 1"),
        );
        check_custom("AB", 0, Err("length: 0 is outside 1..=20"));
        check_custom("AB", 21, Err("length: 21 is outside 1..=20"));
        check_custom("AB", 25, Err("length: 25 is outside 1..=20"));
        check_custom("AB", u32::MAX, Err("length: 4294967295 is outside 1..=20"));
        // The alphabet is checked before the length.
        check_custom(
            "A",
            0,
            Err("alphabet: needs at least 2 characters, found 1"),
        );
    }

    /// Every CSET 82 character, in byte order.
    fn full_cset82() -> String {
        (0..=u8::MAX)
            .filter(|&byte| gs1::is_cset82(byte))
            .map(char::from)
            .collect()
    }

    #[test]
    fn largest_space_fits() {
        let all = full_cset82();
        assert_eq!(all.len(), ALPHABET_SIZE_MAX);
        let format = SerialFormat::custom(&all, 20).unwrap();
        // 82^20 = 2^20 · 41^20, computed by hand-checked parts.
        let expected = 41u128.pow(20) << 20;
        assert_eq!(format.space_size(), expected);
        assert!(format.space_size() > u128::MAX / 2, "82^20 ≈ 1.9e38");
        // An 83rd character is necessarily refused, whatever it is.
        let refused = SerialFormat::custom(&format!("{all}A"), 20).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "alphabet: character 'A' (0x41) repeated at position 82"
        );
    }

    fn check_space(format: SerialFormat, expected: u128) {
        assert_eq!(format.space_size(), expected, "{format}");
    }

    #[test]
    fn space_sizes() {
        let default = |profile: MarketProfile| profile.default_format().unwrap();
        check_space(default(MarketProfile::EuFmd), 1 << 60);
        check_space(default(MarketProfile::UsDscsa), 1 << 60);
        check_space(default(MarketProfile::RuChestnyZnak), 1 << 65);
        check_space(default(MarketProfile::BrAnvisa), 10_000_000_000_000);
        check_space(default(MarketProfile::Sgtin96), (1 << 38) - 1);
        check_space(SerialFormat::custom("ABC", 20).unwrap(), 3_486_784_401);
        check_space(
            SerialFormat::custom("0123456789", 20).unwrap(),
            100_000_000_000_000_000_000,
        );
    }

    #[test]
    fn reporting_fields() {
        let sgtin = SerialFormat::Sgtin96;
        assert_eq!((sgtin.alphabet_text(), sgtin.length()), ("0123456789", 12));
        let eu = MarketProfile::EuFmd.default_format().unwrap();
        assert_eq!(
            (eu.alphabet_text(), eu.length()),
            ("23456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12)
        );
        assert_eq!(
            eu.to_string(),
            "12 characters of \"23456789ABCDEFGHJKLMNPQRSTUVWXYZ\""
        );
    }

    fn check_contains(format: &SerialFormat, serial: &str, expected: bool) {
        assert_eq!(
            format.contains(serial.as_bytes()),
            expected,
            "{format} {serial:?}"
        );
    }

    #[test]
    fn contains_fixed() {
        let format = SerialFormat::custom("0123456789", 3).unwrap();
        check_contains(&format, "007", true);
        check_contains(&format, "999", true);
        check_contains(&format, "07", false);
        check_contains(&format, "0007", false);
        check_contains(&format, "0A7", false);
        check_contains(&format, "", false);
        let eu = MarketProfile::EuFmd.default_format().unwrap();
        check_contains(&eu, "23456789ABCD", true);
        check_contains(&eu, "23456789ABCO", false); // O is left out
        check_contains(&eu, "23456789abcd", false); // case-sensitive
    }

    #[test]
    fn contains_sgtin96() {
        let format = SerialFormat::Sgtin96;
        check_contains(&format, "1", true);
        check_contains(&format, "274877906943", true); // 2^38 - 1
        check_contains(&format, "274877906944", false); // 2^38
        check_contains(&format, "999999999999", false);
        check_contains(&format, "1000000000000", false); // 13 digits
        check_contains(&format, "0", false);
        check_contains(&format, "0123", false);
        check_contains(&format, "12a", false);
        check_contains(&format, "", false);
        check_contains(&format, "-1", false);
    }

    #[test]
    fn names_round_trip() {
        let names = [
            "eu-fmd",
            "us-dscsa",
            "ru-chestny-znak",
            "br-anvisa",
            "sgtin-96",
            "custom",
        ];
        assert_eq!(MarketProfile::ALL.map(MarketProfile::name), names);
        for profile in MarketProfile::ALL {
            assert_eq!(MarketProfile::from_name(profile.name()), Ok(profile));
            assert_eq!(profile.to_string().parse::<MarketProfile>(), Ok(profile));
            assert!(!profile.description().is_empty());
        }
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let valid = "valid names: eu-fmd, us-dscsa, ru-chestny-znak, br-anvisa, sgtin-96, custom";
        for name in ["EU-FMD", "eu_fmd", "", " eu-fmd", "EU_FMD"] {
            let error = MarketProfile::from_name(name).unwrap_err();
            assert_eq!(error.field(), "market_profile");
            assert_eq!(
                error.to_string(),
                format!("market_profile: unknown profile {name:?}; {valid}")
            );
        }
        let long = "x".repeat(10_000);
        let message = MarketProfile::from_name(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "bounded: {message}");
    }

    #[test]
    fn guessing_rule_defaults() {
        for profile in MarketProfile::ALL {
            assert_eq!(
                profile.guessing_rule_default(),
                profile == MarketProfile::EuFmd,
                "{profile}"
            );
        }
    }

    #[test]
    fn default_formats_pass_their_own_check() {
        for profile in MarketProfile::ALL {
            match profile.default_format() {
                Some(format) => assert_eq!(profile.check_format(&format), Ok(()), "{profile}"),
                None => assert_eq!(profile, MarketProfile::Custom),
            }
        }
    }

    #[test]
    fn default_formats_avoid_mixed_case_and_look_alikes() {
        for profile in MarketProfile::ALL {
            let Some(format) = profile.default_format() else {
                continue;
            };
            let text = format.alphabet_text();
            assert!(!text.bytes().any(|b| b.is_ascii_lowercase()), "{profile}");
            for look_alike in ['0', 'O', '1', 'I'] {
                let letters = text.bytes().any(|b| b.is_ascii_uppercase());
                assert!(!(letters && text.contains(look_alike)), "{profile}");
            }
        }
    }

    fn check_market(profile: &str, alphabet: &str, length: u32, expected: Result<(), &str>) {
        let profile = MarketProfile::from_name(profile).unwrap();
        let format = SerialFormat::custom(alphabet, length).unwrap();
        assert_eq!(
            profile.check_format(&format).map_err(|e| e.to_string()),
            expected.map_err(str::to_owned),
            "{profile} {format}"
        );
    }

    #[test]
    fn market_rules_on_fixed_formats() {
        let all = full_cset82();
        check_market("eu-fmd", &all, 20, Ok(()));
        check_market("eu-fmd", "01", 1, Ok(()));
        check_market("us-dscsa", "0123456789", 20, Ok(()));
        check_market("us-dscsa", "abcXYZ019", 20, Ok(()));
        check_market(
            "us-dscsa",
            "ABCDE-",
            12,
            Err(
                "alphabet: character '-' (0x2D) at position 5 is not allowed by us-dscsa: Latin letters and digits only",
            ),
        );
        check_market("ru-chestny-znak", "aZ09", 13, Ok(()));
        check_market(
            "ru-chestny-znak",
            "ABC",
            12,
            Err("length: 12 is not allowed by ru-chestny-znak: exactly 13 characters"),
        );
        check_market(
            "ru-chestny-znak",
            "AB_",
            13,
            Err(
                "alphabet: character '_' (0x5F) at position 2 is not allowed by ru-chestny-znak: Latin letters and digits only",
            ),
        );
        check_market("br-anvisa", "0123456789", 13, Ok(()));
        check_market("br-anvisa", "13579", 13, Ok(()));
        check_market(
            "br-anvisa",
            "0123456789A",
            13,
            Err(
                "alphabet: character 'A' (0x41) at position 10 is not allowed by br-anvisa: digits only",
            ),
        );
        check_market(
            "br-anvisa",
            "0123456789",
            14,
            Err("length: 14 is not allowed by br-anvisa: exactly 13 characters"),
        );
        check_market(
            "sgtin-96",
            "0123456789",
            12,
            Err("format: sgtin-96 requires the SGTIN-96 format (1 to 2^38-1, no leading zero)"),
        );
        check_market("custom", &all, 20, Ok(()));
        check_market("custom", "AB", 1, Ok(()));
    }

    #[test]
    fn market_rules_on_sgtin96() {
        let check = |profile: MarketProfile, expected: Result<(), &str>| {
            assert_eq!(
                profile
                    .check_format(&SerialFormat::Sgtin96)
                    .map_err(|e| e.to_string()),
                expected.map_err(str::to_owned),
                "{profile}"
            );
        };
        check(MarketProfile::EuFmd, Ok(()));
        check(MarketProfile::UsDscsa, Ok(()));
        check(MarketProfile::Sgtin96, Ok(()));
        check(
            MarketProfile::RuChestnyZnak,
            Err(
                "format: ru-chestny-znak requires a fixed length of 13 (SGTIN-96 serials have 1 to 12 digits)",
            ),
        );
        check(
            MarketProfile::BrAnvisa,
            Err(
                "format: br-anvisa requires a fixed length of 13 (SGTIN-96 serials have 1 to 12 digits)",
            ),
        );
        check(
            MarketProfile::Custom,
            Err("format: custom requires an explicit alphabet and length"),
        );
    }

    #[test]
    fn errors_name_their_field() {
        let errors = [
            (SerialFormat::custom("A#", 3).unwrap_err(), "alphabet"),
            (SerialFormat::custom("AA", 3).unwrap_err(), "alphabet"),
            (SerialFormat::custom("A", 3).unwrap_err(), "alphabet"),
            (SerialFormat::custom("AB", 30).unwrap_err(), "length"),
            (MarketProfile::from_name("x").unwrap_err(), "market_profile"),
        ];
        for (error, field) in errors {
            assert_eq!(error.field(), field);
            assert!(
                error.to_string().starts_with(&format!("{field}: ")),
                "{error}"
            );
        }
    }

    proptest! {
        #[test]
        fn custom_never_panics_and_accepts_only_valid(alphabet in ".{0,100}", length in any::<u32>()) {
            if let Ok(format) = SerialFormat::custom(&alphabet, length) {
                let bytes = alphabet.as_bytes();
                prop_assert!((2..=82).contains(&bytes.len()));
                prop_assert!(bytes.iter().all(|&b| gs1::is_cset82(b)));
                prop_assert!((1..=20).contains(&length));
                prop_assert_eq!(format.alphabet_text(), alphabet.as_str());
            }
        }

        #[test]
        fn contains_agrees_with_gs1(serial in "[0-9A-Z#a-z]{0,22}") {
            let eu = MarketProfile::EuFmd.default_format().unwrap();
            if eu.contains(serial.as_bytes()) {
                prop_assert!(gs1::Serial::new(&serial).is_ok());
            }
            if SerialFormat::Sgtin96.contains(serial.as_bytes()) {
                let parsed = gs1::Serial::new(&serial).unwrap();
                prop_assert!(gs1::fits_sgtin96(&parsed));
            }
        }
    }
}
