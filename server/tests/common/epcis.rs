//! The official EPCIS 2.0 JSON schema (a copy of ../shared/data, so tests need
//! no network) as a validator, and an exported document read and checked
//! against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// The EPCIS 2.0 schema (draft 7, formats checked).
pub fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/EPCIS-JSON-Schema.json"),
        )
        .expect("read the EPCIS schema"),
    )
    .expect("the EPCIS schema is JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the EPCIS schema compiles")
}

/// Reads an EPCIS document and fails the test, listing every schema error,
/// unless it validates.
pub fn read_valid(validator: &jsonschema::Validator, path: &Path) -> serde_json::Value {
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "schema errors: {errors:#?}\n{document:#}"
    );
    document
}
