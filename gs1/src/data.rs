//! `Gs1Data`: the decoded content of one code, whatever its encoding.

use serde::Serialize;

use crate::ai::{Ai, AiLength, validate};
use crate::date::Expiry;
use crate::error::{Gs1Error, Rule};
use crate::identifiers::{Gtin, Sscc};
use crate::text::{Lot, Serial};

/// A recognised AI other than 00, 01, 10, 17 and 21, with its checked value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherElement {
    ai: Ai,
    value: String,
}

impl OtherElement {
    /// The AI.
    pub fn ai(&self) -> Ai {
        self.ai
    }

    /// The value, checked against the AI's spec.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// The decoded content of one code: the identifiers it carries plus any
/// other recognised AIs in the order they came.
///
/// Build one with [`Gs1Data::new`] and the `with_*` methods, or get one
/// from a parser. Parsers also check the GS1 association rules (a GTIN or
/// an SSCC is present; 10, 11, 17, 21 and 710–714 come with a GTIN); the
/// builder does not, and formatters refuse what they cannot encode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gs1Data {
    #[serde(skip_serializing_if = "Option::is_none")]
    sscc: Option<Sscc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gtin: Option<Gtin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lot: Option<Lot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<Expiry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<Serial>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    others: Vec<OtherElement>,
}

impl Gs1Data {
    /// No elements at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same data with this GTIN (01).
    pub fn with_gtin(mut self, gtin: Gtin) -> Self {
        self.gtin = Some(gtin);
        self
    }

    /// The same data with this SSCC (00).
    pub fn with_sscc(mut self, sscc: Sscc) -> Self {
        self.sscc = Some(sscc);
        self
    }

    /// The same data with this lot (10).
    pub fn with_lot(mut self, lot: Lot) -> Self {
        self.lot = Some(lot);
        self
    }

    /// The same data with this expiry (17).
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// The same data with this serial (21).
    pub fn with_serial(mut self, serial: Serial) -> Self {
        self.serial = Some(serial);
        self
    }

    /// The same data plus `ai` = `value`, checked against the AI's spec.
    /// Setting an AI again to the same value is a no-op; to a different
    /// value it is an error.
    pub fn with_element(mut self, ai: Ai, value: &str) -> Result<Self, Gs1Error> {
        self.insert(ai, value, None, |offset| offset)?;
        Ok(self)
    }

    /// The GTIN (01), if any.
    pub fn gtin(&self) -> Option<&Gtin> {
        self.gtin.as_ref()
    }

    /// The SSCC (00), if any.
    pub fn sscc(&self) -> Option<&Sscc> {
        self.sscc.as_ref()
    }

    /// The lot (10), if any.
    pub fn lot(&self) -> Option<&Lot> {
        self.lot.as_ref()
    }

    /// The expiry (17), if any.
    pub fn expiry(&self) -> Option<Expiry> {
        self.expiry
    }

    /// The serial (21), if any.
    pub fn serial(&self) -> Option<&Serial> {
        self.serial.as_ref()
    }

    /// The other recognised AIs, in the order they were added.
    pub fn others(&self) -> &[OtherElement] {
        &self.others
    }

    /// Whether there is no element at all.
    pub fn is_empty(&self) -> bool {
        self.elements().is_empty()
    }

    /// Every element as (AI, value) in the canonical order used by the
    /// formatters: 00, 01, then the other fixed-length AIs (17, 11), then
    /// 10, 21, then the remaining AIs as added. Fixed-length AIs first means
    /// the last value needs no GS wherever possible.
    pub fn elements(&self) -> Vec<(Ai, String)> {
        let is_fixed =
            |element: &&OtherElement| matches!(element.ai.spec().length, AiLength::Fixed(_));
        let mut elements = Vec::new();
        let mut push = |ai: Ai, value: Option<String>| {
            if let Some(value) = value {
                elements.push((ai, value));
            }
        };
        push(Ai::Sscc, self.sscc.as_ref().map(Sscc::to_string));
        push(Ai::Gtin, self.gtin.as_ref().map(Gtin::to_string));
        push(Ai::Expiry, self.expiry.map(|expiry| expiry.to_string()));
        for other in self.others.iter().filter(is_fixed) {
            push(other.ai, Some(other.value.clone()));
        }
        push(Ai::Lot, self.lot.as_ref().map(Lot::to_string));
        push(Ai::Serial, self.serial.as_ref().map(Serial::to_string));
        for other in self.others.iter().filter(|other| !is_fixed(other)) {
            push(other.ai, Some(other.value.clone()));
        }
        elements
    }

    /// Adds a checked element. `origin` maps offsets in `value` to input
    /// positions for value errors; a duplicate is reported at `ai_position`.
    pub(crate) fn insert(
        &mut self,
        ai: Ai,
        value: &str,
        ai_position: Option<usize>,
        origin: impl Fn(usize) -> usize,
    ) -> Result<(), Gs1Error> {
        validate(ai, value).map_err(|error| error.map_position(origin))?;
        let duplicate = || {
            let error = Gs1Error::new(Rule::DuplicateAi).with_ai(ai);
            Err(match ai_position {
                Some(position) => error.with_position(position),
                None => error,
            })
        };
        // validate() has checked the value, so the typed constructors pass.
        match ai {
            Ai::Sscc => set_once(&mut self.sscc, Sscc::new(value)?, duplicate),
            Ai::Gtin => set_once(&mut self.gtin, Gtin::new(value)?, duplicate),
            Ai::Lot => set_once(&mut self.lot, Lot::new(value)?, duplicate),
            Ai::Expiry => set_once(&mut self.expiry, Expiry::new(value)?, duplicate),
            Ai::Serial => set_once(&mut self.serial, Serial::new(value)?, duplicate),
            _ => self.insert_other(ai, value, duplicate),
        }
    }

    fn insert_other(
        &mut self,
        ai: Ai,
        value: &str,
        duplicate: impl FnOnce() -> Result<(), Gs1Error>,
    ) -> Result<(), Gs1Error> {
        match self.others.iter().find(|other| other.ai == ai) {
            Some(other) if other.value == value => Ok(()),
            Some(_) => duplicate(),
            None => {
                let value = value.to_owned();
                self.others.push(OtherElement { ai, value });
                Ok(())
            }
        }
    }

    /// The GS1 association rules every parsed code must meet: a primary
    /// key (01 or 00), and the AIs that qualify a trade item only with 01.
    pub(crate) fn check_associations(&self) -> Result<(), Gs1Error> {
        if self.gtin.is_none() && self.sscc.is_none() {
            return Err(Gs1Error::new(Rule::MissingPrimaryKey));
        }
        if self.gtin.is_some() {
            return Ok(());
        }
        let needs_gtin = |ai: &Ai| !matches!(ai, Ai::Sscc | Ai::CryptoKey | Ai::CryptoCode);
        match self
            .elements()
            .into_iter()
            .map(|(ai, _)| ai)
            .find(needs_gtin)
        {
            Some(ai) => Err(Gs1Error::new(Rule::RequiresAi { required: Ai::Gtin }).with_ai(ai)),
            None => Ok(()),
        }
    }
}

fn set_once<T: PartialEq>(
    slot: &mut Option<T>,
    value: T,
    duplicate: impl FnOnce() -> Result<(), Gs1Error>,
) -> Result<(), Gs1Error> {
    match slot {
        Some(existing) if *existing == value => Ok(()),
        Some(_) => duplicate(),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Gs1Data {
        Gs1Data::new()
            .with_element(Ai::CryptoKey, "ee07")
            .and_then(|d| d.with_element(Ai::Serial, "XYZ"))
            .and_then(|d| d.with_element(Ai::ProductionDate, "240100"))
            .and_then(|d| d.with_element(Ai::Lot, "ABC123"))
            .and_then(|d| d.with_element(Ai::Expiry, "251231"))
            .and_then(|d| d.with_element(Ai::Gtin, "09520123456788"))
            .unwrap()
    }

    #[test]
    fn canonical_order() {
        let codes: Vec<&str> = sample()
            .elements()
            .iter()
            .map(|(ai, _)| ai.code())
            .collect();
        assert_eq!(codes, ["01", "17", "11", "10", "21", "91"]);
    }

    #[test]
    fn duplicates() {
        let data = sample();
        assert!(data.clone().with_element(Ai::Serial, "XYZ").is_ok());
        assert!(data.clone().with_element(Ai::CryptoKey, "ee07").is_ok());
        let check = |ai: Ai, value: &str| {
            let error = data.clone().with_element(ai, value).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("AI ({ai}): appears twice with different values")
            );
        };
        check(Ai::Serial, "XYZ1");
        check(Ai::CryptoKey, "ee08");
        check(Ai::Expiry, "251230");
        check(Ai::Gtin, "00000096385074");
    }

    #[test]
    fn associations() {
        let check = |data: Gs1Data, expected: Result<(), &str>| {
            let got = data.check_associations().map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned));
        };
        let sscc = Sscc::new("106141412345678908").unwrap();
        check(sample(), Ok(()));
        check(Gs1Data::new().with_sscc(sscc.clone()), Ok(()));
        check(
            Gs1Data::new().with_element(Ai::CryptoKey, "ee07").unwrap(),
            Err("no GTIN (01) or SSCC (00)"),
        );
        check(
            Gs1Data::new()
                .with_sscc(sscc)
                .with_lot(Lot::new("L1").unwrap()),
            Err("AI (10): requires AI (01)"),
        );
    }

    #[test]
    fn serializes_present_fields_only() {
        let data = Gs1Data::new()
            .with_gtin(Gtin::new("09520123456788").unwrap())
            .with_expiry(Expiry::new("251200").unwrap());
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(json, r#"{"gtin":"09520123456788","expiry":"251200"}"#);
    }
}
