//! Decoded input that remembers where each byte came from, so that errors
//! found after unescaping still point into the caller's input.

use crate::error::{Gs1Error, Rule};

/// Bytes produced from an input, each with the input offset it came from.
#[derive(Debug, Default)]
pub(crate) struct Mapped {
    bytes: Vec<u8>,
    origins: Vec<usize>,
    end: usize,
}

impl Mapped {
    /// An empty buffer whose end maps to `end` in the input.
    pub(crate) fn new(end: usize) -> Self {
        Self {
            end,
            ..Self::default()
        }
    }

    /// Appends `byte`, which came from input offset `origin`.
    pub(crate) fn push(&mut self, byte: u8, origin: usize) {
        self.bytes.push(byte);
        self.origins.push(origin);
    }

    /// Marks where the end of the decoded bytes lies in the input.
    pub(crate) fn set_end(&mut self, end: usize) {
        self.end = end;
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The input offset of decoded offset `position` (the end maps to the
    /// end of the decoded part of the input).
    pub(crate) fn origin(&self, position: usize) -> usize {
        self.origins.get(position).copied().unwrap_or(self.end)
    }

    /// Rewrites an error's position from decoded to input offsets.
    pub(crate) fn map_error(&self, error: Gs1Error) -> Gs1Error {
        error.map_position(|position| self.origin(position))
    }

    /// The decoded bytes as UTF-8 text.
    pub(crate) fn text(&self) -> Result<&str, Gs1Error> {
        std::str::from_utf8(&self.bytes)
            .map_err(|error| Gs1Error::at(Rule::NotUtf8, self.origin(error.valid_up_to())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_positions() {
        let mut mapped = Mapped::new(0);
        mapped.push(b'a', 10);
        mapped.push(b'b', 11);
        mapped.push(b'/', 12); // e.g. from "%2F" at 12..15
        mapped.set_end(15);
        assert_eq!(mapped.bytes(), b"ab/");
        let check =
            |position: usize, expected: usize| assert_eq!(mapped.origin(position), expected);
        check(0, 10);
        check(2, 12);
        check(3, 15);
        assert_eq!(mapped.text().unwrap(), "ab/");
    }

    #[test]
    fn reports_bad_utf8_where_it_came_from() {
        let mut mapped = Mapped::new(9);
        mapped.push(b'a', 0);
        mapped.push(0xC3, 1);
        assert_eq!(
            mapped.text().unwrap_err().to_string(),
            "at position 1: invalid UTF-8"
        );
    }
}
