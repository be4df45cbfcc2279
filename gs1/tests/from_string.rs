//! The owning constructors accept and refuse exactly what the borrowing ones do.

use gs1::{Gtin, Lot, Serial};

#[test]
fn from_string_agrees_with_new() {
    for text in [
        "09520123456788",
        "9520123456788",
        "95201234",
        "09520123456789",
        "0952012345678X",
        "",
        "123456789012345",
    ] {
        assert_eq!(
            Gtin::from_string(text.to_owned()).map_err(|e| e.to_string()),
            Gtin::new(text).map_err(|e| e.to_string()),
            "GTIN {text:?}"
        );
    }
    for text in ["ABC123", "a-b/c", "", "A#", "123456789012345678901", "XYZ"] {
        assert_eq!(
            Serial::from_string(text.to_owned()).map_err(|e| e.to_string()),
            Serial::new(text).map_err(|e| e.to_string()),
            "serial {text:?}"
        );
        assert_eq!(
            Lot::from_string(text.to_owned()).map_err(|e| e.to_string()),
            Lot::new(text).map_err(|e| e.to_string()),
            "lot {text:?}"
        );
    }
}
