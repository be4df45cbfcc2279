//! Property tests of every gs1 codec: round trips from valid data, and no
//! panic on any input.
//!
//! Replaying a failure: proptest prints the minimal failing input and
//! saves the failing case's seed in
//! `gs1/tests/proptest-regressions/properties.txt` (commit that file), and
//! every later run tries the saved cases first. To fix the seed of a whole
//! run, set `PROPTEST_RNG_SEED=<u64>`; `PROPTEST_CASES=<n>` changes the
//! number of cases (default 256 per property, which keeps the suite fast).

#![allow(clippy::unwrap_used)]

use gs1::{
    Ai, CalendarDate, CompanyPrefixLength, DIGITAL_LINK_DOMAIN_DEFAULT, Expiry, Gs1Data, Gtin,
    InputForm, Lot, Serial, Sscc, check_digit, format_bracketed, format_digital_link,
    format_element_string, format_epc_uri, format_legacy_digital_link, parse_any, parse_bracketed,
    parse_digital_link, parse_element_string, parse_epc_uri,
};
use proptest::prelude::*;

const CSET82: &str = "[!\"%&'()*+,\\-./0-9:;<=>?A-Z_a-z]";

fn cset82(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{CSET82}{{1,{max}}}")).unwrap()
}

fn with_check_digit(data_digits: &str) -> String {
    format!("{data_digits}{}", check_digit(data_digits))
}

fn gtin() -> impl Strategy<Value = Gtin> {
    "[0-9]{13}".prop_map(|digits| Gtin::new(&with_check_digit(&digits)).unwrap())
}

fn sscc() -> impl Strategy<Value = Sscc> {
    "[0-9]{17}".prop_map(|digits| Sscc::new(&with_check_digit(&digits)).unwrap())
}

fn serial() -> impl Strategy<Value = Serial> {
    cset82(20).prop_map(|text| Serial::new(&text).unwrap())
}

fn lot() -> impl Strategy<Value = Lot> {
    cset82(20).prop_map(|text| Lot::new(&text).unwrap())
}

fn calendar_date() -> impl Strategy<Value = CalendarDate> {
    // 1900-01-01 ..= 2199-12-31
    (-25_567i64..=84_371).prop_map(|days| CalendarDate::from_days_since_epoch(days).unwrap())
}

/// Any valid expiry, a quarter of them with day 00.
fn expiry() -> impl Strategy<Value = Expiry> {
    (calendar_date(), any::<u8>()).prop_map(|(date, pick)| {
        let exact = Expiry::from_date(date);
        if pick % 4 == 0 {
            Expiry::new(&format!("{}00", &exact.to_string()[..4])).unwrap()
        } else {
            exact
        }
    })
}

/// Other AIs in the order the parsers give them back: the fixed-length
/// production date first, then variable-length ones.
fn others() -> impl Strategy<Value = Vec<(Ai, String)>> {
    let production =
        proptest::option::of(expiry().prop_map(|e| (Ai::ProductionDate, e.to_string())));
    let variable = proptest::sample::subsequence(
        vec![
            Ai::CryptoKey,
            Ai::CryptoCode,
            Ai::NhrnGermany,
            Ai::NhrnPortugal,
        ],
        0..=2,
    );
    (production, variable, cset82(30), cset82(20)).prop_map(|(production, ais, long, short)| {
        let value = |ai: Ai| match ai {
            Ai::CryptoKey | Ai::CryptoCode => long.clone(),
            _ => short.clone(),
        };
        production
            .into_iter()
            .chain(ais.into_iter().map(|ai| (ai, value(ai))))
            .collect()
    })
}

fn add_others(data: Gs1Data, others: &[(Ai, String)]) -> Gs1Data {
    others.iter().fold(data, |data, (ai, value)| {
        data.with_element(*ai, value).unwrap()
    })
}

/// A pack: GTIN with optional lot, expiry, serial and other AIs.
fn pack() -> impl Strategy<Value = Gs1Data> {
    (
        gtin(),
        proptest::option::of(lot()),
        proptest::option::of(expiry()),
        proptest::option::of(serial()),
        others(),
    )
        .prop_map(|(gtin, lot, expiry, serial, others)| {
            let mut data = Gs1Data::new().with_gtin(gtin);
            if let Some(lot) = lot {
                data = data.with_lot(lot);
            }
            if let Some(expiry) = expiry {
                data = data.with_expiry(expiry);
            }
            if let Some(serial) = serial {
                data = data.with_serial(serial);
            }
            add_others(data, &others)
        })
}

/// A logistic unit: SSCC, optionally with company-internal AIs.
fn case() -> impl Strategy<Value = Gs1Data> {
    (sscc(), proptest::option::of(cset82(90))).prop_map(|(sscc, internal)| {
        let data = Gs1Data::new().with_sscc(sscc);
        match internal {
            Some(value) => data.with_element(Ai::CryptoKey, &value).unwrap(),
            None => data,
        }
    })
}

fn code() -> impl Strategy<Value = Gs1Data> {
    prop_oneof![4 => pack(), 1 => case()]
}

fn prefix_length() -> impl Strategy<Value = CompanyPrefixLength> {
    (6usize..=12).prop_map(|length| CompanyPrefixLength::new(length).unwrap())
}

/// Fragments that steer random inputs into the parsers' deeper paths.
fn fragments() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("]d2".to_owned()),
        Just("\u{1d}".to_owned()),
        Just("<GS>".to_owned()),
        Just("\\x1d".to_owned()),
        Just("01".to_owned()),
        Just("09520123456788".to_owned()),
        Just("00".to_owned()),
        Just("106141412345678908".to_owned()),
        Just("10".to_owned()),
        Just("17".to_owned()),
        Just("21".to_owned()),
        Just("251200".to_owned()),
        Just("710".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\\(".to_owned()),
        Just("(01)".to_owned()),
        Just("(21)".to_owned()),
        Just("https://id.gs1.org".to_owned()),
        Just("/".to_owned()),
        Just("/01/".to_owned()),
        Just("/gtin/".to_owned()),
        Just("/lot/".to_owned()),
        Just("/22/".to_owned()),
        Just("?".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just("exp=".to_owned()),
        Just("%".to_owned()),
        Just("%2F".to_owned()),
        Just("%C3".to_owned()),
        Just("urn:epc:id:sgtin:".to_owned()),
        Just("urn:epc:id:sscc:".to_owned()),
        Just("0614141".to_owned()),
        Just(".".to_owned()),
        Just("\r\n".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("é".to_owned()),
        "[0-9]{1,20}",
        cset82(25),
    ];
    proptest::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

fn parse_everything(text: &str) {
    let _ = parse_any(text.as_bytes());
    let _ = parse_element_string(text.as_bytes());
    let _ = parse_bracketed(text);
    let _ = parse_digital_link(text);
    let _ = parse_epc_uri(text);
}

proptest! {
    #[test]
    fn element_string_round_trip(data in code()) {
        let encoded = format_element_string(&data);
        prop_assert_eq!(parse_element_string(encoded.as_bytes()), Ok(data.clone()));
        prop_assert_eq!(parse_any(encoded.as_bytes()), Ok((data.clone(), InputForm::ElementString)));
        let readable = encoded.replace('\u{1d}', "<GS>");
        prop_assert_eq!(parse_any(readable.as_bytes()), Ok((data, InputForm::ElementString)));
    }

    #[test]
    fn bracketed_round_trip(data in code()) {
        let encoded = format_bracketed(&data);
        prop_assert_eq!(parse_bracketed(&encoded), Ok(data.clone()));
        prop_assert_eq!(parse_any(encoded.as_bytes()), Ok((data, InputForm::Bracketed)));
    }

    #[test]
    fn digital_link_round_trip(data in code()) {
        let encoded = format_digital_link(&data, DIGITAL_LINK_DOMAIN_DEFAULT).unwrap();
        prop_assert_eq!(parse_digital_link(&encoded), Ok(data.clone()));
        prop_assert_eq!(parse_any(encoded.as_bytes()), Ok((data, InputForm::DigitalLink)));
    }

    #[test]
    fn legacy_digital_link_round_trip(pack in pack()) {
        // The legacy form carries only GTIN, lot, serial and expiry.
        let mut data = Gs1Data::new().with_gtin(pack.gtin().unwrap().clone());
        if let Some(lot) = pack.lot() {
            data = data.with_lot(lot.clone());
        }
        if let Some(serial) = pack.serial() {
            data = data.with_serial(serial.clone());
        }
        if let Some(expiry) = pack.expiry() {
            data = data.with_expiry(expiry);
        }
        let encoded = format_legacy_digital_link(&data, "vrs.example").unwrap();
        prop_assert_eq!(parse_any(encoded.as_bytes()), Ok((data, InputForm::LegacyDigitalLink)));
    }

    #[test]
    fn epc_uri_round_trip(gtin in gtin(), serial in serial(), sscc in sscc(), length in prefix_length()) {
        for data in [Gs1Data::new().with_gtin(gtin).with_serial(serial), Gs1Data::new().with_sscc(sscc)] {
            let encoded = format_epc_uri(&data, length).unwrap();
            prop_assert_eq!(parse_epc_uri(&encoded), Ok((data.clone(), length)));
            prop_assert_eq!(parse_any(encoded.as_bytes()), Ok((data, InputForm::EpcUri(length))));
        }
    }

    #[test]
    fn expiry_resolves_within_the_window(date in calendar_date(), years_back in 0u16..=49, years_ahead in 0u16..=50) {
        // The reference lies between 50 years before and 49 years after
        // the date, so the date is within the reference's window.
        for year in [date.year() + years_back, date.year() - years_ahead] {
            let reference = CalendarDate::new(year, 6, 30).unwrap();
            let expiry = Expiry::from_date(date);
            prop_assert_eq!(expiry.effective_date(reference), date);
        }
    }

    #[test]
    fn gtin_check_digit_is_enforced(digits in "[0-9]{13}", wrong in 1u8..=9) {
        let good = with_check_digit(&digits);
        prop_assert!(Gtin::new(&good).is_ok());
        let bad_digit = (check_digit(&digits) + wrong) % 10;
        let bad = format!("{digits}{bad_digit}");
        prop_assert!(Gtin::new(&bad).is_err());
    }

    #[test]
    fn no_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_any(&bytes);
        let _ = parse_element_string(&bytes);
    }

    #[test]
    fn no_panic_on_any_string(text in any::<String>()) {
        parse_everything(&text);
    }

    #[test]
    fn no_panic_on_plausible_fragments(text in fragments()) {
        parse_everything(&text);
    }
}
