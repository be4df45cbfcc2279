//! GS1 identifiers (filled in below).
