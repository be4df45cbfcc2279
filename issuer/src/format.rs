//! A product's or pool's serial format: the market profile plus the concrete
//! serial format, resolved from names and overrides, and stored.

use crate::IssuerError;
use crate::codec::DecodeError;
use crate::profile::{MarketProfile, SerialFormat};
use crate::records::StoredFormat;

/// Profile names are matched without regard to case, with `_` for `-`
/// (`EU_FMD` is `eu-fmd`).
fn canonical_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// A profile error as INVALID_ARGUMENT, its field placed under `prefix`.
fn profile_error(prefix: &str, error: &crate::profile::ProfileError) -> IssuerError {
    let text = error.to_string();
    let rule = text
        .split_once(": ")
        .map_or(text.clone(), |(_, rule)| rule.to_owned());
    let field = match prefix {
        "" => error.field().to_owned(),
        prefix => format!("{prefix}.{}", error.field()),
    };
    IssuerError::InvalidArgument { field, rule }
}

/// A market profile and the serial format it draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The market profile.
    pub profile: MarketProfile,
    /// The serial format (the profile's default or a checked custom one).
    pub serial: SerialFormat,
}

impl Format {
    /// Resolves a profile name and an optional (alphabet, length) override;
    /// an empty alphabet or a zero length means "the profile's".
    pub fn resolve(
        profile_name: &str,
        custom: Option<&(String, u32)>,
    ) -> Result<Format, IssuerError> {
        let profile = MarketProfile::from_name(&canonical_name(profile_name))
            .map_err(|e| profile_error("", &e))?;
        let default = profile.default_format();
        let serial = match (custom, &default) {
            (None, Some(default)) => *default,
            (None, None) => {
                return Err(IssuerError::invalid(
                    "custom_format",
                    format!(
                        "profile {} needs an explicit alphabet and length",
                        profile.name()
                    ),
                ));
            }
            (Some((alphabet, length)), _) => {
                let alphabet = match (alphabet.is_empty(), &default) {
                    (false, _) => alphabet.clone(),
                    (true, Some(default)) => default.alphabet_text().to_owned(),
                    (true, None) => {
                        return Err(IssuerError::invalid(
                            "custom_format.alphabet",
                            "required for this profile",
                        ));
                    }
                };
                let length = match (*length, &default) {
                    (0, Some(default)) => default.length(),
                    (0, None) => {
                        return Err(IssuerError::invalid(
                            "custom_format.length",
                            "required for this profile",
                        ));
                    }
                    (length, _) => length,
                };
                if matches!(default, Some(SerialFormat::Sgtin96)) {
                    return Err(IssuerError::invalid(
                        "custom_format",
                        "the sgtin-96 profile has a fixed numeric range; omit the custom format",
                    ));
                }
                SerialFormat::custom(&alphabet, length)
                    .map_err(|e| profile_error("custom_format", &e))?
            }
        };
        profile
            .check_format(&serial)
            .map_err(|e| profile_error("custom_format", &e))?;
        Ok(Format { profile, serial })
    }

    /// The stored form.
    pub fn to_stored(&self) -> StoredFormat {
        match &self.serial {
            SerialFormat::Sgtin96 => StoredFormat {
                profile: self.profile.name().to_owned(),
                alphabet: String::new(),
                length: 0,
            },
            fixed => StoredFormat {
                profile: self.profile.name().to_owned(),
                alphabet: fixed.alphabet_text().to_owned(),
                length: u8::try_from(fixed.length()).unwrap_or(u8::MAX),
            },
        }
    }

    /// Back from the stored form.
    pub fn from_stored(stored: &StoredFormat) -> Result<Format, DecodeError> {
        let corrupt = |detail: String| DecodeError {
            record: "stored format",
            detail,
        };
        let profile =
            MarketProfile::from_name(&stored.profile).map_err(|e| corrupt(e.to_string()))?;
        let serial = if stored.length == 0 {
            SerialFormat::Sgtin96
        } else {
            SerialFormat::custom(&stored.alphabet, u32::from(stored.length))
                .map_err(|e| corrupt(e.to_string()))?
        };
        Ok(Format { profile, serial })
    }
}
