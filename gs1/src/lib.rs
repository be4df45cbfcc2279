//! GS1 identifiers for pharmaceutical serialization: checked types for
//! GTIN, SSCC, serial, lot and expiry, and the codecs between them and
//! every encoding a pack or case carries or a partner sends — scanner
//! element strings, the bracketed human-readable form, GS1 Digital Link
//! URIs (current and legacy VRS form) and EPC pure-identity URIs.
//!
//! This crate must not depend on any other crate of the workspace and
//! does no I/O (not even reading the clock: callers pass the reference
//! date), so that every other part can use it and it stays testable.
//! Every error is a [`Gs1Error`] naming the AI, the byte position and the
//! [`Rule`] broken.

mod ai;
mod any;
mod bracketed;
mod data;
mod date;
mod digital_link;
mod element_string;
mod epc;
mod error;
mod identifiers;
mod mapped;
mod text;

pub use ai::{Ai, AiLength, AiSpec, Charset, is_cset82};
pub use any::{InputForm, parse_any};
pub use bracketed::{format_bracketed, parse_bracketed};
pub use data::{Gs1Data, OtherElement};
pub use date::{CalendarDate, Expiry};
pub use digital_link::{
    DIGITAL_LINK_DOMAIN_DEFAULT, format_digital_link, format_legacy_digital_link,
    parse_digital_link,
};
pub use element_string::{GROUP_SEPARATOR, format_element_string, parse_element_string};
pub use epc::{fits_sgtin96, format_epc_uri, parse_epc_uri};
pub use error::{Gs1Error, Rule};
pub use identifiers::{CompanyPrefixLength, Gtin, Sscc, check_digit};
pub use text::{Lot, Serial, text_from_bytes};

/// The longest input any parser accepts, in bytes. A GS1 DataMatrix holds
/// at most about 2,300 characters and a Digital Link grows by percent
/// encoding, so this leaves room while bounding the work per input.
pub const INPUT_LENGTH_MAX: usize = 4096;
