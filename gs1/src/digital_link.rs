//! GS1 Digital Link URIs: `https://{domain}/01/{gtin}/10/{lot}/21/{serial}?17={YYMMDD}`,
//! the SSCC form `/00/{sscc}`, and the legacy VRS form
//! `/gtin/{gtin}/lot/{lot}/ser/{serial}?exp={YYMMDD}`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::ai::Ai;
use crate::data::Gs1Data;
use crate::element_string::check_input;
use crate::error::{Gs1Error, Rule, shown};
use crate::mapped::Mapped;

/// The domain of canonical GS1 Digital Links (GS1's own resolver).
pub const DIGITAL_LINK_DOMAIN_DEFAULT: &str = "id.gs1.org";

/// Everything but `A–Z a–z 0–9 - . _ ~` is percent-encoded.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The longest domain accepted by the formatters (the DNS limit).
const DOMAIN_LENGTH_MAX: usize = 253;

/// Which path grammar a link used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkForm {
    Current,
    Legacy,
}

/// A primary key and the key qualifiers allowed after it, in their order.
/// A qualifier without an AI is recognised but unsupported.
#[derive(Debug)]
struct PathGrammar {
    form: LinkForm,
    primary: (&'static str, Ai),
    qualifiers: &'static [(&'static str, Option<Ai>)],
    order: &'static str,
}

const GRAMMARS: [PathGrammar; 3] = [
    PathGrammar {
        form: LinkForm::Current,
        primary: ("01", Ai::Gtin),
        qualifiers: &[
            ("22", None),
            ("10", Some(Ai::Lot)),
            ("21", Some(Ai::Serial)),
        ],
        order: "22, 10, 21",
    },
    PathGrammar {
        form: LinkForm::Current,
        primary: ("00", Ai::Sscc),
        qualifiers: &[],
        order: "none after 00",
    },
    PathGrammar {
        form: LinkForm::Legacy,
        primary: ("gtin", Ai::Gtin),
        qualifiers: &[("lot", Some(Ai::Lot)), ("ser", Some(Ai::Serial))],
        order: "lot, ser",
    },
];

/// Parses a Digital Link URI, current or legacy form: `http://` or
/// `https://` with any domain, or just the path. The path must start with
/// the primary key (`/01/` with 14 digits, `/00/`, or legacy `/gtin/`);
/// qualifiers follow in their order (22 is refused as unsupported); other
/// AIs, and the legacy `exp`, come from the query, where unknown non-numeric
/// parameters (`linkType`, `context`, `reqGLN`, `corrUUID`, …) are ignored.
/// Path segments and query values are percent-decoded; error positions are
/// byte offsets into `uri`.
pub fn parse_digital_link(uri: &str) -> Result<Gs1Data, Gs1Error> {
    parse_digital_link_form(uri).map(|(data, _)| data)
}

pub(crate) fn parse_digital_link_form(uri: &str) -> Result<(Gs1Data, LinkForm), Gs1Error> {
    check_input(uri.as_bytes())?;
    let path_start = path_start(uri)?;
    let path_end = uri[path_start..]
        .find(['?', '#'])
        .map_or(uri.len(), |offset| path_start + offset);
    let segments = split_path(uri, path_start, path_end)?;
    let mut data = Gs1Data::new();
    let form = parse_path(&segments, path_start, &mut data)?;
    if uri[path_end..].starts_with('?') {
        let query_end = uri.find('#').unwrap_or(uri.len());
        parse_query(uri, path_end + 1, query_end, &mut data)?;
    }
    data.check_associations()?;
    Ok((data, form))
}

/// Formats the canonical Digital Link on `domain` (e.g.
/// [`DIGITAL_LINK_DOMAIN_DEFAULT`]): `/01/{gtin}[/10/{lot}][/21/{serial}]`
/// or `/00/{sscc}`, then the other AIs as query parameters in
/// [`Gs1Data::elements`] order.
pub fn format_digital_link(data: &Gs1Data, domain: &str) -> Result<String, Gs1Error> {
    check_domain(domain)?;
    data.check_associations()?;
    let mut path = String::new();
    let in_path: &[Ai] = match (data.gtin(), data.sscc()) {
        (Some(_), Some(_)) => {
            let reason = "a Digital Link has one primary key, this data has a GTIN and an SSCC";
            return Err(Gs1Error::new(Rule::NotRepresentable { reason }));
        }
        (None, _) => &[Ai::Sscc],
        (Some(_), None) => &[Ai::Gtin, Ai::Lot, Ai::Serial],
    };
    let mut query = Vec::new();
    for (ai, value) in data.elements() {
        let encoded = utf8_percent_encode(&value, ENCODED);
        if in_path.contains(&ai) {
            path.push_str(&format!("/{ai}/{encoded}"));
        } else {
            query.push(format!("{ai}={encoded}"));
        }
    }
    Ok(join_link(domain, &path, &query))
}

/// Formats the legacy VRS form `/gtin/{gtin}[/lot/{lot}][/ser/{serial}][?exp={YYMMDD}]`
/// on `domain`. Only data made of those four elements fits it.
pub fn format_legacy_digital_link(data: &Gs1Data, domain: &str) -> Result<String, Gs1Error> {
    check_domain(domain)?;
    data.check_associations()?;
    if data.gtin().is_none() || data.sscc().is_some() || !data.others().is_empty() {
        let reason = "the legacy Digital Link carries only GTIN, lot, serial and expiry";
        return Err(Gs1Error::new(Rule::NotRepresentable { reason }));
    }
    let mut path = String::new();
    let mut query = Vec::new();
    for (ai, value) in data.elements() {
        let encoded = utf8_percent_encode(&value, ENCODED);
        match ai {
            Ai::Gtin => path.push_str(&format!("/gtin/{encoded}")),
            Ai::Lot => path.push_str(&format!("/lot/{encoded}")),
            Ai::Serial => path.push_str(&format!("/ser/{encoded}")),
            _ => query.push(format!("exp={encoded}")),
        }
    }
    Ok(join_link(domain, &path, &query))
}

fn join_link(domain: &str, path: &str, query: &[String]) -> String {
    if query.is_empty() {
        format!("https://{domain}{path}")
    } else {
        format!("https://{domain}{path}?{}", query.join("&"))
    }
}

fn check_domain(domain: &str) -> Result<(), Gs1Error> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte);
    if domain.is_empty() || domain.len() > DOMAIN_LENGTH_MAX || !domain.bytes().all(allowed) {
        return Err(Gs1Error::new(Rule::BadDomain));
    }
    Ok(())
}

/// Where the path starts: after `http(s)://{domain}`, or at 0 for a bare path.
fn path_start(uri: &str) -> Result<usize, Gs1Error> {
    let bad_uri = |reason, position| Err(Gs1Error::at(Rule::BadUri { reason }, position));
    let Some(authority_start) = scheme_length(uri.as_bytes()) else {
        if uri.starts_with('/') {
            return Ok(0);
        }
        return bad_uri("expected http://, https:// or a path starting with '/'", 0);
    };
    let authority_length = uri[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(uri.len() - authority_start);
    let path_start = authority_start + authority_length;
    if authority_length == 0 {
        return bad_uri("missing domain", authority_start);
    }
    if !uri[path_start..].starts_with('/') {
        return bad_uri("missing path after the domain", path_start);
    }
    Ok(path_start)
}

/// The length of a leading `http://` or `https://` (any case).
pub(crate) fn scheme_length(bytes: &[u8]) -> Option<usize> {
    ["https://", "http://"]
        .into_iter()
        .find(|scheme| starts_with_ignore_case(bytes, scheme.as_bytes()))
        .map(str::len)
}

pub(crate) fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A percent-decoded path segment and where it starts in the URI.
#[derive(Debug)]
struct Segment {
    start: usize,
    decoded: Mapped,
}

impl Segment {
    fn text(&self) -> Result<&str, Gs1Error> {
        self.decoded.text()
    }
}

/// Splits `/a/b/c` into decoded segments. One trailing `/` is tolerated;
/// other empty segments are errors.
fn split_path(uri: &str, start: usize, end: usize) -> Result<Vec<Segment>, Gs1Error> {
    let path = uri[start..end]
        .strip_suffix('/')
        .unwrap_or(&uri[start..end]);
    let mut segments = Vec::new();
    let mut segment_start = start + 1;
    for raw in path.get(1..).unwrap_or_default().split('/') {
        if raw.is_empty() && path.len() > 1 {
            let reason = "empty path segment";
            return Err(Gs1Error::at(Rule::BadUri { reason }, segment_start));
        }
        if !raw.is_empty() {
            let decoded = percent_decode(uri.as_bytes(), segment_start, segment_start + raw.len())?;
            segments.push(Segment {
                start: segment_start,
                decoded,
            });
        }
        segment_start += raw.len() + 1;
    }
    Ok(segments)
}

/// Decodes `%XX` escapes in `bytes[start..end]`; `+` stays `+`.
fn percent_decode(bytes: &[u8], start: usize, end: usize) -> Result<Mapped, Gs1Error> {
    let mut decoded = Mapped::new(end);
    let mut index = start;
    while index < end {
        if bytes[index] == b'%' {
            let Some(byte) = hex_pair(bytes.get(index + 1..(index + 3).min(end))) else {
                let reason = "'%' must be followed by two hex digits";
                return Err(Gs1Error::at(Rule::BadEscape { reason }, index));
            };
            decoded.push(byte, index);
            index += 3;
        } else {
            decoded.push(bytes[index], index);
            index += 1;
        }
    }
    Ok(decoded)
}

/// The byte written as two hex digits (either case).
pub(crate) fn hex_pair(digits: Option<&[u8]>) -> Option<u8> {
    let [high, low] = digits? else {
        return None;
    };
    let value = |digit: &u8| char::from(*digit).to_digit(16);
    // Two hex digits make at most 0xFF.
    Some((value(high)? * 16 + value(low)?) as u8)
}

fn parse_path(
    segments: &[Segment],
    path_start: usize,
    data: &mut Gs1Data,
) -> Result<LinkForm, Gs1Error> {
    let Some(first) = segments.first() else {
        let reason = "the path must start with /01/, /00/ or /gtin/";
        return Err(Gs1Error::at(Rule::BadUri { reason }, path_start));
    };
    let key = first.text()?;
    let Some(grammar) = GRAMMARS.iter().find(|grammar| grammar.primary.0 == key) else {
        let segment = shown(key);
        let reason = "the path must start with /01/, /00/ or /gtin/";
        return Err(Gs1Error::at(
            Rule::UnexpectedPathSegment { segment, reason },
            first.start,
        ));
    };
    let mut pairs = segments.chunks(2);
    if let Some(pair) = pairs.next() {
        insert_pair(pair, grammar.primary.1, data)?;
    }
    let mut next_rank = 0;
    for pair in pairs {
        let key = pair[0].text()?;
        let rank = qualifier_rank(grammar, key, &pair[0])?;
        let (qualifier, ai) = grammar.qualifiers[rank];
        if rank < next_rank {
            let qualifier = qualifier.to_owned();
            let rule = Rule::QualifierOrder {
                qualifier,
                order: grammar.order,
            };
            return Err(Gs1Error::at(rule, pair[0].start));
        }
        let Some(ai) = ai else {
            let rule = Rule::UnsupportedAi {
                code: qualifier.to_owned(),
            };
            return Err(Gs1Error::at(rule, pair[0].start));
        };
        insert_pair(pair, ai, data)?;
        next_rank = rank + 1;
    }
    Ok(grammar.form)
}

/// Where `key` stands among the grammar's qualifiers, or why it cannot be one.
fn qualifier_rank(grammar: &PathGrammar, key: &str, segment: &Segment) -> Result<usize, Gs1Error> {
    if let Some(rank) = grammar.qualifiers.iter().position(|(name, _)| *name == key) {
        return Ok(rank);
    }
    let data_attribute = Ai::from_code(key)
        .is_some_and(|ai| !matches!(ai, Ai::Sscc | Ai::Gtin | Ai::Lot | Ai::Serial));
    let reason = if data_attribute {
        "this AI is not a key qualifier here; put it in the query"
    } else {
        "not a key qualifier of this primary key"
    };
    let segment_shown = shown(key);
    let rule = Rule::UnexpectedPathSegment {
        segment: segment_shown,
        reason,
    };
    Err(Gs1Error::at(rule, segment.start))
}

/// Inserts a (key, value) pair of segments; a key without a value is an
/// empty value.
fn insert_pair(pair: &[Segment], ai: Ai, data: &mut Gs1Data) -> Result<(), Gs1Error> {
    let key = &pair[0];
    let Some(value) = pair.get(1) else {
        let end = key.decoded.origin(key.decoded.bytes().len());
        return Err(Gs1Error::at(Rule::EmptyValue, end).with_ai(ai));
    };
    let origin = |offset| value.decoded.origin(offset);
    data.insert(ai, value.text()?, Some(key.start), origin)
}

/// Reads AIs (and the legacy `exp`) from the query `uri[start..end]`;
/// other parameters are ignored, as the standard says.
fn parse_query(uri: &str, start: usize, end: usize, data: &mut Gs1Data) -> Result<(), Gs1Error> {
    let mut param_start = start;
    for param in uri[start..end].split('&') {
        let key_end = param_start + param.find('=').unwrap_or(param.len());
        let key = percent_decode(uri.as_bytes(), param_start, key_end)?;
        if let Some(ai) = query_ai(key.text()?, param_start)? {
            let value_start = (key_end + 1).min(param_start + param.len());
            let value = percent_decode(uri.as_bytes(), value_start, param_start + param.len())?;
            let origin = |offset| value.origin(offset);
            data.insert(ai, value.text()?, Some(param_start), origin)?;
        }
        param_start += param.len() + 1;
    }
    Ok(())
}

/// The AI a query key names: digits are an AI (which must be known and
/// allowed in the query), `exp` is the legacy expiry, anything else is
/// ignored.
fn query_ai(key: &str, position: usize) -> Result<Option<Ai>, Gs1Error> {
    if key == "exp" {
        return Ok(Some(Ai::Expiry));
    }
    if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_digit()) {
        return Ok(None);
    }
    let Some(ai) = Ai::from_code(key) else {
        let prefix = key.chars().take(4).collect();
        return Err(Gs1Error::at(Rule::UnknownAi { prefix }, position));
    };
    if matches!(ai, Ai::Sscc | Ai::Gtin | Ai::Lot | Ai::Serial) {
        return Err(Gs1Error::at(Rule::AiNotAllowedInQuery, position).with_ai(ai));
    }
    Ok(Some(ai))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and compares the bracketed rendering and the form,
    /// or the error message.
    fn check(input: &str, expected: Result<(&str, LinkForm), &str>) {
        let got = parse_digital_link_form(input)
            .map(|(data, form)| (crate::format_bracketed(&data), form))
            .map_err(|error| error.to_string());
        let expected = expected
            .map(|(text, form)| (text.to_owned(), form))
            .map_err(str::to_owned);
        assert_eq!(got, expected, "input {input:?}");
    }

    const CURRENT: LinkForm = LinkForm::Current;
    const LEGACY: LinkForm = LinkForm::Legacy;

    #[test]
    fn accepted() {
        let full = "(01)09520123456788(17)251231(10)ABC123(21)XYZ";
        check(
            "https://id.gs1.org/01/09520123456788/10/ABC123/21/XYZ?17=251231",
            Ok((full, CURRENT)),
        );
        check(
            "HTTP://example.com:8080/01/09520123456788/10/ABC123/21/XYZ?17=251231",
            Ok((full, CURRENT)),
        );
        check(
            "/01/09520123456788/10/ABC123/21/XYZ?17=251231",
            Ok((full, CURRENT)),
        );
        check(
            "https://vrs.example/01/09520123456788/10/ABC123/21/XYZ?linkType=verificationService&context=dscsaSaleableReturn&reqGLN=0614141000005&corrUUID=1e0a&17=251231",
            Ok((full, CURRENT)),
        );
        check(
            "/01/09520123456788/21/XYZ",
            Ok(("(01)09520123456788(21)XYZ", CURRENT)),
        );
        check("/01/09520123456788/", Ok(("(01)09520123456788", CURRENT)));
        check(
            "/01/09520123456788#fragment",
            Ok(("(01)09520123456788", CURRENT)),
        );
        check(
            "/01/09520123456788/21/A%2FB%25%3F+?exp=251200",
            Ok(("(01)09520123456788(17)251200(21)A/B%?+", CURRENT)),
        );
        check(
            "/01/09520123456788?11=240100&91=ee07&17=251231&17=251231",
            Ok(("(01)09520123456788(17)251231(11)240100(91)ee07", CURRENT)),
        );
        check(
            "/00/106141412345678908",
            Ok(("(00)106141412345678908", CURRENT)),
        );
        check(
            "https://vrs.example/gtin/09520123456788/lot/ABC123/ser/XYZ?exp=251231",
            Ok((full, LEGACY)),
        );
        check(
            "/gtin/09520123456788/ser/XYZ?17=251231",
            Ok(("(01)09520123456788(17)251231(21)XYZ", LEGACY)),
        );
    }

    #[test]
    fn errors() {
        check("", Err("at position 0: no data"));
        check(
            "ftp://x/01/09520123456788",
            Err("at position 0: bad URI: expected http://, https:// or a path starting with '/'"),
        );
        check(
            "https:///01/09520123456788",
            Err("at position 8: bad URI: missing domain"),
        );
        check(
            "https://id.gs1.org",
            Err("at position 18: bad URI: missing path after the domain"),
        );
        check(
            "https://id.gs1.org?17=251231",
            Err("at position 18: bad URI: missing path after the domain"),
        );
        check(
            "https://id.gs1.org/",
            Err("at position 18: bad URI: the path must start with /01/, /00/ or /gtin/"),
        );
        check(
            "/foo/01/09520123456788",
            Err(
                "at position 1: unexpected path segment \"foo\": the path must start with /01/, /00/ or /gtin/",
            ),
        );
        check(
            "/414/9520123456788",
            Err(
                "at position 1: unexpected path segment \"414\": the path must start with /01/, /00/ or /gtin/",
            ),
        );
        check(
            "/01/9520123456788",
            Err("AI (01) at position 4: wrong length: expected 14 digits, found 13"),
        );
        check(
            "/01/09520123456789",
            Err("AI (01) at position 17: bad check digit: expected 8, found 9"),
        );
        check(
            "/01/09520123456788/21/XYZ/10/ABC",
            Err(
                "at position 26: qualifier 10 out of order: the order is 22, 10, 21, each at most once",
            ),
        );
        check(
            "/01/09520123456788/21/XYZ/21/XYZ",
            Err(
                "at position 26: qualifier 21 out of order: the order is 22, 10, 21, each at most once",
            ),
        );
        check(
            "/gtin/09520123456788/ser/XYZ/lot/ABC",
            Err(
                "at position 29: qualifier lot out of order: the order is lot, ser, each at most once",
            ),
        );
        check(
            "/01/09520123456788/22/ABC/10/ABC",
            Err("at position 19: AI (22) is not supported"),
        );
        check(
            "/01/09520123456788/17/251231",
            Err(
                "at position 19: unexpected path segment \"17\": this AI is not a key qualifier here; put it in the query",
            ),
        );
        check(
            "/01/09520123456788/lot/ABC",
            Err(
                "at position 19: unexpected path segment \"lot\": not a key qualifier of this primary key",
            ),
        );
        check(
            "/00/106141412345678908/21/X",
            Err(
                "at position 23: unexpected path segment \"21\": not a key qualifier of this primary key",
            ),
        );
        check(
            "/01/09520123456788/21",
            Err("AI (21) at position 21: empty value"),
        );
        check(
            "/01/09520123456788//21/X",
            Err("at position 19: bad URI: empty path segment"),
        );
        check(
            "/01/09520123456788/21/A%2",
            Err("at position 23: bad percent escape: '%' must be followed by two hex digits"),
        );
        check(
            "/01/09520123456788/21/A%zz",
            Err("at position 23: bad percent escape: '%' must be followed by two hex digits"),
        );
        check(
            "/01/09520123456788/21/A%20B",
            Err("AI (21) at position 23: space is not in CSET 82"),
        );
        check(
            "/01/09520123456788/21/A%C3%A9",
            Err("AI (21) at position 23: non-ASCII character U+00E9 is not in CSET 82"),
        );
        check(
            "/01/09520123456788/21/A%FF",
            Err("at position 23: invalid UTF-8"),
        );
        check(
            "/01/09520123456788?21=XYZ",
            Err("AI (21) at position 19: must be in the path, not in the query"),
        );
        check(
            "/01/09520123456788?3103=000189",
            Err("at position 19: unknown AI starting with 3103"),
        );
        check(
            "/01/09520123456788?17=251232",
            Err("AI (17) at position 22: invalid date 251232: no such day in that month"),
        );
        check(
            "/01/09520123456788?17=251231&exp=251230",
            Err("AI (17) at position 29: appears twice with different values"),
        );
        check(
            "/01/09520123456788?17",
            Err("AI (17) at position 21: empty value"),
        );
        check(
            "/01/09520123456788\r\n",
            Err("at position 18: trailing CR/LF line terminator"),
        );
    }

    #[test]
    fn formats() {
        let data = crate::parse_bracketed("(01)09520123456788(17)251231(10)AB/C(21)X+y%").unwrap();
        assert_eq!(
            format_digital_link(&data, DIGITAL_LINK_DOMAIN_DEFAULT).unwrap(),
            "https://id.gs1.org/01/09520123456788/10/AB%2FC/21/X%2By%25?17=251231"
        );
        assert_eq!(
            format_legacy_digital_link(&data, "vrs.example").unwrap(),
            "https://vrs.example/gtin/09520123456788/lot/AB%2FC/ser/X%2By%25?exp=251231"
        );
        let sscc = crate::parse_bracketed("(00)106141412345678908(91)ee07").unwrap();
        assert_eq!(
            format_digital_link(&sscc, "example.com").unwrap(),
            "https://example.com/00/106141412345678908?91=ee07"
        );
    }

    #[test]
    fn format_errors() {
        let check = |input: &str, domain: &str, legacy: bool, expected: &str| {
            let data = crate::parse_element_string(input.as_bytes()).unwrap();
            let got = if legacy {
                format_legacy_digital_link(&data, domain)
            } else {
                format_digital_link(&data, domain)
            };
            assert_eq!(got.unwrap_err().to_string(), expected, "{input}");
        };
        let both = "]d200106141412345678908010952012345678821X";
        check(
            both,
            "id.gs1.org",
            false,
            "cannot encode: a Digital Link has one primary key, this data has a GTIN and an SSCC",
        );
        check(
            "]d2010952012345678891ee07",
            "x",
            true,
            "cannot encode: the legacy Digital Link carries only GTIN, lot, serial and expiry",
        );
        check(
            "]d20109520123456788",
            "a/b",
            false,
            "bad domain: only letters, digits, '.', '-', ':', '[' and ']' are allowed",
        );
        check(
            "]d20109520123456788",
            "",
            true,
            "bad domain: only letters, digits, '.', '-', ':', '[' and ']' are allowed",
        );
    }
}
