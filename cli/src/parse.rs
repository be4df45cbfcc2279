//! `serialctl parse`: decode one code in any encoding (scanner output,
//! bracketed form, Digital Link, EPC URI) and print every field and every
//! canonical encoding. Offline: it never talks to the server.

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gs1::{
    CalendarDate, CompanyPrefixLength, DIGITAL_LINK_DOMAIN_DEFAULT, Gs1Data, InputForm,
    fits_sgtin96, format_bracketed, format_digital_link, format_element_string, format_epc_uri,
    format_legacy_digital_link, parse_any,
};
use serde::Serialize;

/// Standard input is read up to this many bytes; longer input is refused
/// by the parser's own limit with its real length up to here.
const STDIN_BYTES_MAX: u64 = 1 << 20;

/// Arguments of `serialctl parse`.
#[derive(clap::Args, Debug)]
pub(crate) struct ParseArgs {
    /// The code: raw scanner output (GS as a real 0x1D byte or written
    /// <GS>, \x1d or {GS}), the bracketed form, a Digital Link URI (current
    /// or legacy) or an EPC URI. "-" reads raw bytes from standard input,
    /// dropping exactly one trailing LF or CRLF. Error positions in
    /// messages are 0-based byte offsets into this input.
    #[arg(value_name = "INPUT")]
    input: OsString,
    /// Length of the GS1 company prefix (6 to 12 digits), needed for the
    /// EPC URI; it is master data and cannot be derived from the GTIN.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(6..=12))]
    company_prefix_length: Option<u8>,
    /// Print exactly one JSON object on standard output instead of lines.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand: 0 when the input decodes, 1 (with one `error:`
/// line on standard error) when it does not.
pub(crate) fn run(args: &ParseArgs) -> ExitCode {
    match report(args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_lines());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(args: &ParseArgs) -> anyhow::Result<Report> {
    let input = read_input(&args.input)?;
    // A gs1 error already says what is wrong and where; no context added,
    // so the message stays one line naming the rule.
    let (data, form) = parse_any(&input)?;
    let prefix_length = prefix_length(args.company_prefix_length, form)?;
    Ok(Report::new(&data, form, prefix_length, today_utc()?))
}

/// The input bytes: the argument as given, or standard input without its
/// line terminator.
fn read_input(input: &OsString) -> anyhow::Result<Vec<u8>> {
    if input != "-" {
        return Ok(input.as_encoded_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(STDIN_BYTES_MAX)
        .read_to_end(&mut bytes)
        .context("read standard input")?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    Ok(bytes)
}

/// The company prefix length from the flag or from an EPC URI input; the
/// two must agree when both are there.
fn prefix_length(flag: Option<u8>, form: InputForm) -> anyhow::Result<Option<CompanyPrefixLength>> {
    let from_flag = flag
        .map(|length| CompanyPrefixLength::new(usize::from(length)))
        .transpose()?;
    match (from_flag, form) {
        (Some(given), InputForm::EpcUri(found)) if given != found => anyhow::bail!(
            "--company-prefix-length {given} contradicts the EPC URI, whose company prefix has {found} digits"
        ),
        (Some(given), _) => Ok(Some(given)),
        (None, InputForm::EpcUri(found)) => Ok(Some(found)),
        (None, _) => Ok(None),
    }
}

/// Today's date in UTC, the reference for resolving two-digit years.
fn today_utc() -> anyhow::Result<CalendarDate> {
    const SECONDS_PER_DAY: u64 = 86_400;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read the system clock (it is before 1970)")?;
    let days =
        i64::try_from(since_epoch.as_secs() / SECONDS_PER_DAY).context("read the system clock")?;
    Ok(CalendarDate::from_days_since_epoch(days)?)
}

/// Everything printed, in printing order.
#[derive(Debug, Serialize)]
struct Report {
    input_form: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gtin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sscc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_fits_sgtin96: Option<bool>,
    /// YYMMDD as encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
    /// ISO date after resolving the century and day 00.
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_date: Option<String>,
    others: Vec<OtherField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company_prefix_length: Option<usize>,
    encodings: Encodings,
}

#[derive(Debug, Serialize)]
struct OtherField {
    ai: String,
    title: &'static str,
    value: String,
}

/// The canonical encodings; the element string holds a real GS (0x1D).
#[derive(Debug, Serialize)]
struct Encodings {
    element_string: String,
    bracketed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digital_link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    legacy_digital_link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epc_uri: Option<String>,
    /// The data has an EPC URI, but the prefix length was not given.
    #[serde(skip)]
    epc_uri_needs_prefix_length: bool,
}

impl Report {
    fn new(
        data: &Gs1Data,
        form: InputForm,
        prefix_length: Option<CompanyPrefixLength>,
        today: CalendarDate,
    ) -> Self {
        let others = data
            .others()
            .iter()
            .map(|other| OtherField {
                ai: other.ai().code().to_owned(),
                title: other.ai().title(),
                value: other.value().to_owned(),
            })
            .collect();
        Self {
            input_form: form.name(),
            gtin: data.gtin().map(ToString::to_string),
            sscc: data.sscc().map(ToString::to_string),
            lot: data.lot().map(ToString::to_string),
            serial: data.serial().map(ToString::to_string),
            serial_fits_sgtin96: data.serial().map(fits_sgtin96),
            expiry: data.expiry().map(|expiry| expiry.to_string()),
            expiry_date: data
                .expiry()
                .map(|expiry| expiry.effective_date(today).to_string()),
            others,
            company_prefix_length: prefix_length.map(CompanyPrefixLength::get),
            encodings: Encodings::new(data, prefix_length),
        }
    }

    fn to_json(&self) -> String {
        // A struct of strings, bools and numbers always serializes; the
        // fallback keeps the promise of one JSON object all the same.
        serde_json::to_string(self)
            .unwrap_or_else(|error| serde_json::json!({ "error": error.to_string() }).to_string())
    }

    /// Aligned `name: value` lines.
    fn to_lines(&self) -> String {
        let lines = self.lines();
        let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
        lines
            .iter()
            .map(|(name, value)| format!("{:<width$} {value}\n", format!("{name}:")))
            .collect()
    }

    fn lines(&self) -> Vec<(String, String)> {
        let fits = self
            .serial_fits_sgtin96
            .map(|fits| if fits { "yes" } else { "no (needs SGTIN-198)" }.to_owned());
        let prefix_length = self.company_prefix_length.map(|n| n.to_string());
        let fields = [
            ("input form", Some(self.input_form.to_owned())),
            ("GTIN", self.gtin.clone()),
            ("SSCC", self.sscc.clone()),
            ("lot", self.lot.clone()),
            ("serial", self.serial.clone()),
            ("expiry", self.expiry.clone()),
            ("expiry date", self.expiry_date.clone()),
            ("fits SGTIN-96", fits),
        ];
        let mut lines: Vec<(String, String)> = fields
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect();
        for other in &self.others {
            let name = format!("({}) {}", other.ai, other.title);
            lines.push((name, other.value.clone()));
        }
        if let Some(prefix_length) = prefix_length {
            lines.push(("company prefix length".to_owned(), prefix_length));
        }
        lines.extend(self.encodings.lines());
        lines
    }
}

impl Encodings {
    fn new(data: &Gs1Data, prefix_length: Option<CompanyPrefixLength>) -> Self {
        Self {
            element_string: format_element_string(data),
            bracketed: format_bracketed(data),
            digital_link: format_digital_link(data, DIGITAL_LINK_DOMAIN_DEFAULT).ok(),
            legacy_digital_link: format_legacy_digital_link(data, DIGITAL_LINK_DOMAIN_DEFAULT).ok(),
            epc_uri: prefix_length.and_then(|length| format_epc_uri(data, length).ok()),
            epc_uri_needs_prefix_length: prefix_length.is_none() && has_epc_uri(data),
        }
    }

    fn lines(&self) -> Vec<(String, String)> {
        let readable = self.element_string.replace('\u{1d}', "<GS>");
        let mut lines = vec![
            ("element string".to_owned(), readable),
            ("bracketed".to_owned(), self.bracketed.clone()),
        ];
        let optional = [
            ("Digital Link", &self.digital_link),
            ("legacy Digital Link", &self.legacy_digital_link),
            ("EPC URI", &self.epc_uri),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                lines.push((name.to_owned(), value.clone()));
            }
        }
        if self.epc_uri_needs_prefix_length {
            let hint = "(give --company-prefix-length to see it)".to_owned();
            lines.push(("EPC URI".to_owned(), hint));
        }
        lines
    }
}

/// Whether the data names one object an EPC URI can identify (any valid
/// prefix length shows that).
fn has_epc_uri(data: &Gs1Data) -> bool {
    CompanyPrefixLength::new(CompanyPrefixLength::MIN)
        .is_ok_and(|length| format_epc_uri(data, length).is_ok())
}
