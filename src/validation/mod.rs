//! Validation of External Step payloads.
//!
//! This module owns the External Step's field contract: the [`FieldType`]s an expected field can
//! have, the [`ExpectedField`] configuration shape, and [`validate`], which checks a submitted
//! JSON payload against the configured fields. It reports every problem at once in the guide's
//! 400 `details` shape ([`PayloadErrors`]) or returns the accepted, normalised values ready to be
//! stored. It performs no I/O and holds no state.

use std::io;

use chrono::{DateTime, FixedOffset, NaiveDate, Timelike};
use iso_currency::Currency;
use isocountry::CountryCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Most characters of a received value quoted in a type error before it is cut with `...`.
const RECEIVED_MAX_CHARS: usize = 100;

/// Bytes of a received value's JSON encoding rendered before rendering stops. Large enough to
/// always hold more than [`RECEIVED_MAX_CHARS`] characters (at most 4 bytes each), small enough
/// that huge or deeply nested values cost next to nothing to quote.
const RECEIVED_MAX_BYTES: usize = 512;

/// Kosovo: a user-assigned ISO 3166-1 code, accepted because the EU and SWIFT use it.
const KOSOVO: &str = "XK";

/// Special ISO 4217 codes that denote no real currency and are therefore refused.
const REFUSED_SPECIAL_CURRENCIES: [Currency; 2] = [Currency::XTS, Currency::XXX];

/// Nanosecond values at or above this mark a leap second in chrono's representation.
const LEAP_SECOND_NANOS: u32 = 1_000_000_000;

/// The value type an expected field accepts, as named in the step configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FieldType {
    /// A non-empty string; surrounding whitespace is trimmed.
    #[serde(rename = "string")]
    String,
    /// Any JSON number.
    #[serde(rename = "number")]
    Number,
    /// An ISO 8601 calendar date (`YYYY-MM-DD`) or RFC 3339 date-time with an offset.
    #[serde(rename = "date")]
    Date,
    /// An ISO 3166-1 alpha-2 country code (or `XK`), case-insensitive, stored uppercase.
    #[serde(rename = "country")]
    Country,
    /// A JSON boolean.
    #[serde(rename = "boolean")]
    Boolean,
    /// An array of non-empty strings; each item is trimmed.
    #[serde(rename = "stringList")]
    StringList,
    /// An array of country codes, each following the [`FieldType::Country`] rule.
    #[serde(rename = "countryList")]
    CountryList,
    /// An array of current ISO 4217 currency codes, case-insensitive, stored uppercase.
    #[serde(rename = "currencyList", alias = "currency")]
    CurrencyList,
    /// A JSON object (arrays are not accepted).
    #[serde(rename = "object")]
    Object,
}

/// One field the External Step expects, mapping a top-level payload key to a Spektr data field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedField {
    /// The Spektr field key that receives the value; also the payload key it is read from.
    /// Non-empty after trimming, at most 255 bytes.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub spektr_data_field: String,
    /// The value type the field accepts.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether the payload must carry a non-null (and, for lists, non-empty) value.
    pub required: bool,
}

/// Everything wrong with one payload, in the guide's 400 `details` shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayloadErrors {
    /// Keys of required fields that are absent, null, or an empty list, in configuration order.
    pub missing_required_fields: Vec<String>,
    /// One human-readable message per present field whose value has the wrong type or format.
    pub type_errors: Vec<String>,
}

/// Checks `payload` against `fields`; on success returns the accepted, normalised values
/// keyed by spektrDataField (only fields present with a non-null value), ready to store.
///
/// Every problem is reported at once: missing required fields and type errors are each listed
/// in the order of `fields`. Payload keys that no field expects are ignored.
///
/// # Errors
///
/// Returns [`PayloadErrors`] when the payload is not a JSON object, when a required field is
/// missing, null or an empty list, or when any present value does not match its field's type.
pub fn validate(
    payload: &Value,
    fields: &[ExpectedField],
) -> Result<Map<String, Value>, PayloadErrors> {
    let Some(object) = payload.as_object() else {
        return Err(PayloadErrors {
            missing_required_fields: Vec::new(),
            type_errors: vec![format!(
                "Payload expected a JSON object. Received: {}",
                render_received(payload)
            )],
        });
    };

    let mut accepted = Map::new();
    let mut errors = PayloadErrors::default();
    for field in fields {
        let key = &field.spektr_data_field;
        match check_field(object.get(key), field) {
            FieldOutcome::Skipped => {}
            FieldOutcome::Missing => errors.missing_required_fields.push(key.clone()),
            FieldOutcome::Accepted(value) => {
                accepted.insert(key.clone(), value);
            }
            FieldOutcome::Invalid(received) => {
                errors.type_errors.push(type_error(field, received));
            }
        }
    }

    if errors.missing_required_fields.is_empty() && errors.type_errors.is_empty() {
        Ok(accepted)
    } else {
        Err(errors)
    }
}

/// What checking one expected field against the payload concluded.
enum FieldOutcome<'a> {
    /// Optional and absent or null: nothing to store, nothing to report.
    Skipped,
    /// Required but absent, null, or an empty list.
    Missing,
    /// Present and valid; holds the normalised value to store.
    Accepted(Value),
    /// Present but of the wrong type or format; holds the received value.
    Invalid(&'a Value),
}

/// Decides the outcome for one field given its (possibly absent) payload value.
fn check_field<'a>(value: Option<&'a Value>, field: &ExpectedField) -> FieldOutcome<'a> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return if field.required {
            FieldOutcome::Missing
        } else {
            FieldOutcome::Skipped
        };
    };
    if field.required && is_empty_list(field.field_type, value) {
        return FieldOutcome::Missing;
    }
    match normalise(field.field_type, value) {
        Some(normalised) => FieldOutcome::Accepted(normalised),
        None => FieldOutcome::Invalid(value),
    }
}

/// Whether `value` is an empty array given to a list-typed field.
fn is_empty_list(field_type: FieldType, value: &Value) -> bool {
    let is_list_type = matches!(
        field_type,
        FieldType::StringList | FieldType::CountryList | FieldType::CurrencyList
    );
    is_list_type && value.as_array().is_some_and(Vec::is_empty)
}

/// Returns the value to store when `value` is valid for `field_type`, or `None` when it is not.
fn normalise(field_type: FieldType, value: &Value) -> Option<Value> {
    match field_type {
        FieldType::String => value
            .as_str()
            .and_then(non_empty_trimmed)
            .map(Value::String),
        FieldType::Number => value.is_number().then(|| value.clone()),
        FieldType::Date => value.as_str().and_then(date_text).map(Value::String),
        FieldType::Country => value.as_str().and_then(country_code).map(Value::String),
        FieldType::Boolean => value.is_boolean().then(|| value.clone()),
        FieldType::StringList => normalise_list(value, non_empty_trimmed),
        FieldType::CountryList => normalise_list(value, country_code),
        FieldType::CurrencyList => normalise_list(value, currency_code),
        FieldType::Object => value.is_object().then(|| value.clone()),
    }
}

/// Normalises an array whose every item must be a string accepted by `item`.
fn normalise_list(value: &Value, item: fn(&str) -> Option<String>) -> Option<Value> {
    value
        .as_array()?
        .iter()
        .map(|entry| entry.as_str().and_then(item).map(Value::String))
        .collect::<Option<Vec<Value>>>()
        .map(Value::Array)
}

/// The trimmed text when it is not empty.
fn non_empty_trimmed(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The trimmed text when it is a calendar date or a date-time with an offset.
fn date_text(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (is_calendar_date(trimmed) || is_date_time(trimmed)).then(|| trimmed.to_owned())
}

/// Whether `text` is exactly `YYYY-MM-DD` and names a real day of the proleptic Gregorian
/// calendar.
fn is_calendar_date(text: &str) -> bool {
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = text.as_bytes() else {
        return false;
    };
    let (Some(year), Some(month), Some(day)) = (
        decimal(&[y0, y1, y2, y3]),
        decimal(&[m0, m1]),
        decimal(&[d0, d1]),
    ) else {
        return false;
    };
    i32::try_from(year)
        .ok()
        .and_then(|year| NaiveDate::from_ymd_opt(year, month, day))
        .is_some()
}

/// The value of a run of ASCII digits, or `None` when any byte is not a digit.
fn decimal(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0_u32, |acc, &byte| {
        byte.is_ascii_digit()
            .then(|| acc * 10 + u32::from(byte - b'0'))
    })
}

/// Whether `text` is an RFC 3339 date-time (which is also ISO 8601): date, `T`, time with
/// seconds and optional fraction, then `Z` or a `±HH:MM` offset. Impossible dates and times are
/// refused; a leap second is accepted only where one can occur, at 23:59:60 UTC.
fn is_date_time(text: &str) -> bool {
    // chrono also accepts a space between date and time, which ISO 8601 does not.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return false;
    }
    DateTime::parse_from_rfc3339(text).is_ok_and(|moment| is_possible_second(&moment))
}

/// Whether a parsed date-time is not a leap second, or is one at the end of a UTC day.
fn is_possible_second(moment: &DateTime<FixedOffset>) -> bool {
    if moment.nanosecond() < LEAP_SECOND_NANOS {
        return true;
    }
    let utc = moment.naive_utc();
    utc.hour() == 23 && utc.minute() == 59
}

/// The uppercase ISO 3166-1 alpha-2 code (or `XK`) that `raw` names, ignoring case and
/// surrounding whitespace.
fn country_code(raw: &str) -> Option<String> {
    let code = ascii_letters_uppercased(raw.trim(), 2)?;
    (code == KOSOVO || CountryCode::for_alpha2(&code).is_ok()).then_some(code)
}

/// The uppercase ISO 4217 code that `raw` names, ignoring case and surrounding whitespace, when
/// it is a current code: superseded codes and the no-currency codes `XTS` and `XXX` are refused.
fn currency_code(raw: &str) -> Option<String> {
    let code = ascii_letters_uppercased(raw.trim(), 3)?;
    let currency = Currency::from_code(&code)?;
    is_accepted_currency(currency).then_some(code)
}

/// Whether a known currency may be submitted: not superseded and not a no-currency code.
/// `VES` is the exception: iso_currency marks it replaced by `VED`, but ISO 4217 still lists
/// both as Venezuela's currencies, so integrations legitimately send it.
fn is_accepted_currency(currency: Currency) -> bool {
    let superseded = currency.is_superseded().is_some() && currency != Currency::VES;
    !superseded && !REFUSED_SPECIAL_CURRENCIES.contains(&currency)
}

/// `text` uppercased when it is exactly `len` ASCII letters. Restricting to ASCII keeps
/// look-alikes such as the dotless `ı` (which uppercases to `I`) from forming a code.
fn ascii_letters_uppercased(text: &str, len: usize) -> Option<String> {
    let is_code = text.len() == len && text.bytes().all(|byte| byte.is_ascii_alphabetic());
    is_code.then(|| text.to_ascii_uppercase())
}

/// The type error message for a field whose value did not match its type.
fn type_error(field: &ExpectedField, received: &Value) -> String {
    format!(
        "Field '{}' expected {}. Received: {}",
        field.spektr_data_field,
        expectation(field.field_type),
        render_received(received)
    )
}

/// How a type error describes what a field type expects.
fn expectation(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "a non-empty string",
        FieldType::Number => "a number",
        FieldType::Date => "an ISO 8601 date (YYYY-MM-DD) or date-time",
        FieldType::Country => "a valid ISO Alpha-2 country code",
        FieldType::Boolean => "a boolean",
        FieldType::StringList => "an array of non-empty strings",
        FieldType::CountryList => "an array of valid ISO Alpha-2 country codes",
        FieldType::CurrencyList => "an array of valid ISO 4217 currency codes",
        FieldType::Object => "a JSON object",
    }
}

/// The compact JSON encoding of `value`, cut to [`RECEIVED_MAX_CHARS`] characters followed by
/// `...` when longer. Only the first [`RECEIVED_MAX_BYTES`] bytes are ever encoded.
fn render_received(value: &Value) -> String {
    let mut sink = BoundedSink::default();
    let complete = serde_json::to_writer(&mut sink, value).is_ok();
    let text = sink.valid_text();
    let cut = text
        .char_indices()
        .nth(RECEIVED_MAX_CHARS)
        .map(|(index, _)| index);
    match (cut, complete) {
        (Some(index), _) => format!("{}...", text.get(..index).unwrap_or(text)),
        (None, true) => text.to_owned(),
        (None, false) => format!("{text}..."),
    }
}

/// A writer that keeps the first [`RECEIVED_MAX_BYTES`] bytes and then fails, which stops
/// serialisation early.
#[derive(Default)]
struct BoundedSink {
    bytes: Vec<u8>,
}

impl BoundedSink {
    /// The longest prefix of the kept bytes that is valid UTF-8.
    fn valid_text(&self) -> &str {
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => text,
            Err(error) => self
                .bytes
                .get(..error.valid_up_to())
                .and_then(|valid| std::str::from_utf8(valid).ok())
                .unwrap_or_default(),
        }
    }
}

impl io::Write for BoundedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = RECEIVED_MAX_BYTES.saturating_sub(self.bytes.len());
        if room == 0 {
            return Err(io::Error::other("received value rendering budget reached"));
        }
        let taken = buf.len().min(room);
        self.bytes
            .extend_from_slice(buf.get(..taken).unwrap_or_default());
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(key: &str, field_type: FieldType, required: bool) -> ExpectedField {
        ExpectedField {
            spektr_data_field: key.to_owned(),
            field_type,
            required,
        }
    }

    /// Validates `{"v": value}` against one field `v` of the given type.
    fn check(field_type: FieldType, required: bool, value: Value) -> Result<Value, PayloadErrors> {
        validate(&json!({ "v": value }), &[field("v", field_type, required)])
            .map(|accepted| accepted.get("v").cloned().unwrap_or(Value::Null))
    }

    fn accepts(field_type: FieldType, value: Value) -> Value {
        match check(field_type, true, value.clone()) {
            Ok(stored) => stored,
            Err(errors) => panic!("{value} refused for {field_type:?}: {errors:?}"),
        }
    }

    fn refuses(field_type: FieldType, value: Value) -> String {
        match check(field_type, true, value.clone()) {
            Ok(stored) => panic!("{value} accepted for {field_type:?} as {stored}"),
            Err(errors) => {
                assert!(errors.missing_required_fields.is_empty(), "{errors:?}");
                assert_eq!(errors.type_errors.len(), 1, "{errors:?}");
                errors.type_errors[0].clone()
            }
        }
    }

    fn missing(field_type: FieldType, value: Value) {
        let errors = check(field_type, true, value).expect_err("should be missing");
        assert_eq!(errors.missing_required_fields, ["v"]);
        assert!(errors.type_errors.is_empty());
    }

    /// Builds `[[[...]]]` nested `depth` times without recursion.
    fn nested_arrays(depth: usize) -> Value {
        let mut value = json!("core");
        for _ in 0..depth {
            value = Value::Array(vec![value]);
        }
        value
    }

    // string

    #[test]
    fn strings_are_accepted_and_trimmed() {
        assert_eq!(
            accepts(FieldType::String, json!("  Acme Ltd \n")),
            json!("Acme Ltd")
        );
        assert_eq!(
            accepts(FieldType::String, json!("\u{3000}Ærø\u{a0}")),
            json!("Ærø")
        );
    }

    #[test]
    fn empty_or_whitespace_strings_are_type_errors_even_when_optional() {
        let message = refuses(FieldType::String, json!(""));
        assert_eq!(
            message,
            "Field 'v' expected a non-empty string. Received: \"\""
        );
        refuses(FieldType::String, json!(" \t\n "));
        let errors = check(FieldType::String, false, json!("   ")).expect_err("blank");
        assert_eq!(
            errors.type_errors,
            ["Field 'v' expected a non-empty string. Received: \"   \""]
        );
    }

    #[test]
    fn non_string_values_are_refused_for_string_fields() {
        for value in [json!(1), json!(true), json!(["a"]), json!({"a": "b"})] {
            refuses(FieldType::String, value);
        }
    }

    // number

    #[test]
    fn numbers_are_returned_as_is() {
        for value in [
            json!(0),
            json!(-17),
            json!(3.25),
            json!(u64::MAX),
            json!(1e300),
        ] {
            assert_eq!(accepts(FieldType::Number, value.clone()), value);
        }
    }

    #[test]
    fn numeric_strings_and_other_types_are_refused_for_number_fields() {
        let message = refuses(FieldType::Number, json!("12"));
        assert_eq!(message, "Field 'v' expected a number. Received: \"12\"");
        refuses(FieldType::Number, json!(true));
        refuses(FieldType::Number, json!([1]));
    }

    // date

    #[test]
    fn calendar_dates_are_accepted_unchanged() {
        assert_eq!(
            accepts(FieldType::Date, json!("2024-01-15")),
            json!("2024-01-15")
        );
        assert_eq!(
            accepts(FieldType::Date, json!("1999-12-31")),
            json!("1999-12-31")
        );
    }

    #[test]
    fn leap_days_are_accepted_only_in_leap_years() {
        accepts(FieldType::Date, json!("2024-02-29"));
        accepts(FieldType::Date, json!("2000-02-29"));
        refuses(FieldType::Date, json!("2023-02-29"));
        refuses(FieldType::Date, json!("1900-02-29"));
    }

    #[test]
    fn impossible_calendar_dates_are_refused() {
        for text in [
            "2024-02-30",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
        ] {
            refuses(FieldType::Date, json!(text));
        }
    }

    #[test]
    fn calendar_dates_must_use_four_two_two_digits() {
        for text in [
            "2024-1-15",
            "24-01-15",
            "12024-01-15",
            "2024/01/15",
            "15-01-2024",
            "+2024-01-15",
        ] {
            refuses(FieldType::Date, json!(text));
        }
        for text in [
            "20240115",
            "2024-01",
            "2024",
            "15/01/2024",
            "２０２４-01-15",
            "",
        ] {
            refuses(FieldType::Date, json!(text));
        }
    }

    #[test]
    fn date_times_with_z_or_offset_are_accepted_unchanged() {
        for text in [
            "2024-01-15T10:00:00Z",
            "2024-01-15T10:00:00.000Z",
            "2024-01-15T10:00:00+02:00",
            "2024-01-15T10:00:00-05:30",
            "2024-01-15T10:00:00.123456789+00:00",
            "2024-01-15t10:00:00z",
            "2024-02-29T23:59:59Z",
        ] {
            assert_eq!(accepts(FieldType::Date, json!(text)), json!(text));
        }
    }

    #[test]
    fn date_times_without_offset_seconds_or_t_separator_are_refused() {
        for text in [
            "2024-01-15T10:00:00",
            "2024-01-15T10:00Z",
            "2024-01-15 10:00:00Z",
            "2024-01-15T10:00:00+0200",
            "2024-01-15T10:00:00+02",
            "2024-01-15T10:00:00 +02:00",
            "2024-01-15T10:00:00.Z",
            "2024-01-15T10:00:00UTC",
        ] {
            refuses(FieldType::Date, json!(text));
        }
    }

    #[test]
    fn impossible_date_times_are_refused() {
        for text in [
            "2024-02-30T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-01-15T24:00:00Z",
            "2024-01-15T10:60:00Z",
            "2024-01-15T10:00:61Z",
            "2024-01-15T10:00:00+24:00",
            "2024-01-15T10:30:60Z",
        ] {
            refuses(FieldType::Date, json!(text));
        }
    }

    #[test]
    fn leap_seconds_are_accepted_only_at_the_end_of_a_utc_day() {
        accepts(FieldType::Date, json!("2016-12-31T23:59:60Z"));
        accepts(FieldType::Date, json!("2017-01-01T00:59:60+01:00"));
        refuses(FieldType::Date, json!("2016-12-31T23:59:60+01:00"));
    }

    #[test]
    fn dates_are_trimmed_before_checking() {
        assert_eq!(
            accepts(FieldType::Date, json!(" 2024-01-15\n")),
            json!("2024-01-15")
        );
        assert_eq!(
            accepts(FieldType::Date, json!("\t2024-01-15T10:00:00Z ")),
            json!("2024-01-15T10:00:00Z")
        );
    }

    #[test]
    fn non_string_dates_are_refused_with_the_date_wording() {
        let message = refuses(FieldType::Date, json!(20240115));
        assert_eq!(
            message,
            "Field 'v' expected an ISO 8601 date (YYYY-MM-DD) or date-time. Received: 20240115"
        );
    }

    // country

    #[test]
    fn uppercase_country_codes_are_accepted() {
        assert_eq!(accepts(FieldType::Country, json!("DK")), json!("DK"));
        assert_eq!(accepts(FieldType::Country, json!("RO")), json!("RO"));
    }

    #[test]
    fn lowercase_country_codes_are_accepted_and_uppercased() {
        assert_eq!(accepts(FieldType::Country, json!("dk")), json!("DK"));
        assert_eq!(accepts(FieldType::Country, json!("gB")), json!("GB"));
        assert_eq!(accepts(FieldType::Country, json!(" se ")), json!("SE"));
    }

    #[test]
    fn kosovo_is_accepted_in_any_case() {
        assert_eq!(accepts(FieldType::Country, json!("XK")), json!("XK"));
        assert_eq!(accepts(FieldType::Country, json!("xk")), json!("XK"));
    }

    #[test]
    fn uk_and_other_non_iso_codes_are_refused() {
        for text in ["UK", "uk", "EU", "XX", "ZZ", "DNK", "D", "", "  "] {
            refuses(FieldType::Country, json!(text));
        }
    }

    #[test]
    fn unicode_look_alikes_do_not_form_country_codes() {
        // The dotless `ı` uppercases to `I`; full-width letters are not ASCII.
        refuses(FieldType::Country, json!("ıt"));
        refuses(FieldType::Country, json!("ＤＫ"));
    }

    #[test]
    fn the_guides_example_message_comes_out_exactly() {
        let fields = [
            field("company_name", FieldType::String, true),
            field("country_of_incorporation", FieldType::Country, true),
        ];
        let errors = validate(&json!({ "country_of_incorporation": "Denmark" }), &fields)
            .expect_err("invalid payload");
        assert_eq!(errors.missing_required_fields, ["company_name"]);
        assert_eq!(
            errors.type_errors,
            [
                "Field 'country_of_incorporation' expected a valid ISO Alpha-2 country code. \
                 Received: \"Denmark\""
            ]
        );
        let details = serde_json::to_value(&errors).expect("serialisable");
        assert_eq!(
            details,
            json!({
                "missingRequiredFields": ["company_name"],
                "typeErrors": [
                    "Field 'country_of_incorporation' expected a valid ISO Alpha-2 country code. Received: \"Denmark\""
                ]
            })
        );
    }

    #[test]
    fn the_guides_example_payload_is_accepted() {
        let fields = [
            field("company_name", FieldType::String, true),
            field("country_of_incorporation", FieldType::Country, true),
        ];
        let payload = json!({
            "company_name": "External Company Ltd",
            "country_of_incorporation": "RO"
        });
        let accepted = validate(&payload, &fields).expect("valid payload");
        assert_eq!(Value::Object(accepted), payload);
    }

    // boolean

    #[test]
    fn booleans_are_accepted() {
        assert_eq!(accepts(FieldType::Boolean, json!(true)), json!(true));
        assert_eq!(accepts(FieldType::Boolean, json!(false)), json!(false));
    }

    #[test]
    fn boolean_look_alikes_are_refused() {
        let message = refuses(FieldType::Boolean, json!("true"));
        assert_eq!(message, "Field 'v' expected a boolean. Received: \"true\"");
        refuses(FieldType::Boolean, json!(1));
        refuses(FieldType::Boolean, json!(0));
    }

    // stringList

    #[test]
    fn string_lists_are_accepted_with_items_trimmed() {
        assert_eq!(
            accepts(FieldType::StringList, json!([" a ", "b", "b"])),
            json!(["a", "b", "b"])
        );
    }

    #[test]
    fn string_lists_with_a_bad_item_get_one_message_quoting_the_whole_value() {
        let message = refuses(FieldType::StringList, json!(["a", " ", 3]));
        assert_eq!(
            message,
            "Field 'v' expected an array of non-empty strings. Received: [\"a\",\" \",3]"
        );
        refuses(FieldType::StringList, json!(["a", null]));
        refuses(FieldType::StringList, json!("a"));
        refuses(FieldType::StringList, json!({"0": "a"}));
    }

    #[test]
    fn required_empty_lists_are_missing() {
        missing(FieldType::StringList, json!([]));
        missing(FieldType::CountryList, json!([]));
        missing(FieldType::CurrencyList, json!([]));
    }

    #[test]
    fn optional_empty_lists_are_accepted_as_empty() {
        for field_type in [
            FieldType::StringList,
            FieldType::CountryList,
            FieldType::CurrencyList,
        ] {
            assert_eq!(check(field_type, false, json!([])), Ok(json!([])));
        }
    }

    // countryList

    #[test]
    fn country_lists_are_accepted_and_uppercased() {
        assert_eq!(
            accepts(FieldType::CountryList, json!(["dk", "SE", " xk "])),
            json!(["DK", "SE", "XK"])
        );
    }

    #[test]
    fn country_lists_with_an_invalid_code_are_refused() {
        let message = refuses(FieldType::CountryList, json!(["DK", "UK"]));
        assert_eq!(
            message,
            "Field 'v' expected an array of valid ISO Alpha-2 country codes. \
             Received: [\"DK\",\"UK\"]"
        );
        refuses(FieldType::CountryList, json!("DK"));
        refuses(FieldType::CountryList, json!([["DK"]]));
    }

    // currencyList

    #[test]
    fn currency_lists_are_accepted_and_uppercased() {
        assert_eq!(
            accepts(FieldType::CurrencyList, json!(["DKK", "sek", " Eur "])),
            json!(["DKK", "SEK", "EUR"])
        );
    }

    #[test]
    fn precious_metals_fund_and_other_current_special_codes_are_accepted() {
        for code in [
            "XAU", "XAG", "XDR", "BOV", "CHE", "CLF", "USN", "VED", "ZWG", "SLE",
        ] {
            assert_eq!(
                accepts(FieldType::CurrencyList, json!([code])),
                json!([code])
            );
        }
    }

    #[test]
    fn withdrawn_currencies_are_refused() {
        for code in ["HRK", "hrk", "BGN", "CUC", "SLL", "ZWL"] {
            refuses(FieldType::CurrencyList, json!(["EUR", code]));
        }
    }

    #[test]
    fn both_venezuelan_codes_are_accepted() {
        assert_eq!(
            accepts(FieldType::CurrencyList, json!(["ves", "VED"])),
            json!(["VES", "VED"])
        );
    }

    #[test]
    fn superseded_codes_known_to_iso_currency_are_exactly_the_documented_list() {
        let letters = b'A'..=b'Z';
        let mut superseded = Vec::new();
        for first in letters.clone() {
            for second in letters.clone() {
                for third in letters.clone() {
                    let code = String::from_utf8(vec![first, second, third]).expect("ascii");
                    if Currency::from_code(&code).is_some_and(|c| c.is_superseded().is_some()) {
                        superseded.push(code);
                    }
                }
            }
        }
        assert_eq!(superseded, ["BGN", "CUC", "HRK", "SLL", "VES", "ZWL"]);
    }

    #[test]
    fn testing_and_no_currency_codes_are_refused() {
        refuses(FieldType::CurrencyList, json!(["XTS"]));
        refuses(FieldType::CurrencyList, json!(["xxx"]));
    }

    #[test]
    fn unknown_or_malformed_currency_codes_are_refused() {
        for code in ["ABC", "EU", "EURO", "", "€", "ANG", "DEM"] {
            refuses(FieldType::CurrencyList, json!([code]));
        }
    }

    #[test]
    fn a_plain_currency_string_is_refused() {
        let message = refuses(FieldType::CurrencyList, json!("EUR"));
        assert_eq!(
            message,
            "Field 'v' expected an array of valid ISO 4217 currency codes. Received: \"EUR\""
        );
    }

    // object

    #[test]
    fn objects_are_returned_as_is() {
        let value = json!({"a": [1, {"b": null}], "c": "  kept  "});
        assert_eq!(accepts(FieldType::Object, value.clone()), value);
        assert_eq!(accepts(FieldType::Object, json!({})), json!({}));
    }

    #[test]
    fn arrays_and_scalars_are_refused_for_object_fields() {
        let message = refuses(FieldType::Object, json!([{"a": 1}]));
        assert_eq!(
            message,
            "Field 'v' expected a JSON object. Received: [{\"a\":1}]"
        );
        refuses(FieldType::Object, json!("{}"));
        refuses(FieldType::Object, json!(1));
    }

    // required, optional, null

    #[test]
    fn absent_or_null_required_fields_are_missing() {
        let fields = [
            field("absent", FieldType::String, true),
            field("null", FieldType::Number, true),
        ];
        let errors = validate(&json!({ "null": null }), &fields).expect_err("missing");
        assert_eq!(errors.missing_required_fields, ["absent", "null"]);
        assert!(errors.type_errors.is_empty());
    }

    #[test]
    fn absent_or_null_optional_fields_are_ignored_and_not_returned() {
        let fields = [
            field("absent", FieldType::String, false),
            field("null", FieldType::CountryList, false),
            field("name", FieldType::String, true),
        ];
        let accepted = validate(&json!({ "null": null, "name": "x" }), &fields).expect("valid");
        assert_eq!(Value::Object(accepted), json!({ "name": "x" }));
    }

    #[test]
    fn optional_fields_are_still_type_checked_when_present() {
        let errors = check(FieldType::Country, false, json!("Denmark")).expect_err("invalid");
        assert_eq!(errors.type_errors.len(), 1);
        assert!(errors.missing_required_fields.is_empty());
    }

    #[test]
    fn required_empty_objects_and_strings_are_not_missing() {
        assert_eq!(check(FieldType::Object, true, json!({})), Ok(json!({})));
        refuses(FieldType::String, json!(""));
    }

    #[test]
    fn unknown_payload_keys_are_ignored_and_not_returned() {
        let fields = [field("name", FieldType::String, true)];
        let accepted = validate(
            &json!({ "name": "x", "extra": [1, 2], "other": null }),
            &fields,
        )
        .expect("ok");
        assert_eq!(Value::Object(accepted), json!({ "name": "x" }));
    }

    #[test]
    fn no_expected_fields_accepts_any_object_and_returns_nothing() {
        assert_eq!(validate(&json!({ "a": 1 }), &[]), Ok(Map::new()));
    }

    #[test]
    fn all_problems_are_reported_at_once_in_field_order() {
        let fields = [
            field("d", FieldType::Date, true),
            field("a", FieldType::String, true),
            field("c", FieldType::Country, false),
            field("l", FieldType::CurrencyList, true),
            field("b", FieldType::Boolean, true),
            field("n", FieldType::Number, true),
            field("ok", FieldType::String, true),
        ];
        let payload = json!({
            "d": "2024-02-30",
            "c": "UK",
            "l": [],
            "b": "yes",
            "n": null,
            "ok": "fine",
        });
        let errors = validate(&payload, &fields).expect_err("invalid");
        assert_eq!(errors.missing_required_fields, ["a", "l", "n"]);
        assert_eq!(
            errors.type_errors,
            [
                "Field 'd' expected an ISO 8601 date (YYYY-MM-DD) or date-time. \
                 Received: \"2024-02-30\"",
                "Field 'c' expected a valid ISO Alpha-2 country code. Received: \"UK\"",
                "Field 'b' expected a boolean. Received: \"yes\"",
            ]
        );
    }

    #[test]
    fn accepted_values_of_every_type_are_returned_normalised() {
        let fields = [
            field("s", FieldType::String, true),
            field("n", FieldType::Number, true),
            field("d", FieldType::Date, true),
            field("c", FieldType::Country, true),
            field("b", FieldType::Boolean, true),
            field("sl", FieldType::StringList, true),
            field("cl", FieldType::CountryList, true),
            field("ml", FieldType::CurrencyList, true),
            field("o", FieldType::Object, true),
        ];
        let payload = json!({
            "s": " name ", "n": 1.5, "d": "2024-01-15T10:00:00.000Z", "c": "dk", "b": false,
            "sl": [" x "], "cl": ["se"], "ml": ["eur"], "o": {"k": "v"},
        });
        let accepted = validate(&payload, &fields).expect("valid");
        assert_eq!(
            Value::Object(accepted),
            json!({
                "s": "name", "n": 1.5, "d": "2024-01-15T10:00:00.000Z", "c": "DK", "b": false,
                "sl": ["x"], "cl": ["SE"], "ml": ["EUR"], "o": {"k": "v"},
            })
        );
    }

    // non-object payloads

    #[test]
    fn non_object_payloads_get_a_single_payload_error() {
        let fields = [field("name", FieldType::String, true)];
        for (payload, received) in [
            (json!([1, 2]), "[1,2]"),
            (json!("text"), "\"text\""),
            (json!(null), "null"),
            (json!(42), "42"),
            (json!(true), "true"),
        ] {
            let errors = validate(&payload, &fields).expect_err("not an object");
            assert_eq!(
                errors,
                PayloadErrors {
                    missing_required_fields: Vec::new(),
                    type_errors: vec![format!(
                        "Payload expected a JSON object. Received: {received}"
                    )],
                }
            );
        }
    }

    // rendering of received values

    #[test]
    fn received_values_up_to_100_characters_are_quoted_whole() {
        let text = "a".repeat(98);
        let message = refuses(FieldType::Number, json!(text));
        assert_eq!(
            message,
            format!("Field 'v' expected a number. Received: \"{text}\"")
        );
    }

    #[test]
    fn received_values_over_100_characters_are_cut_with_an_ellipsis() {
        let message = refuses(FieldType::Number, json!("a".repeat(99)));
        let expected = format!(
            "Field 'v' expected a number. Received: \"{}...",
            "a".repeat(99)
        );
        assert_eq!(message, expected);
    }

    #[test]
    fn truncation_respects_multibyte_characters() {
        let message = refuses(FieldType::Number, json!("🦀".repeat(300)));
        let received = message
            .split_once("Received: ")
            .map(|(_, r)| r)
            .expect("received");
        assert_eq!(received, format!("\"{}...", "🦀".repeat(99)));
        assert_eq!(received.chars().count(), 103);
    }

    #[test]
    fn control_characters_and_quotes_are_json_escaped() {
        let message = refuses(FieldType::Number, json!("a\"b\n\u{0}"));
        assert!(
            message.ends_with(r#"Received: "a\"b\n\u0000""#),
            "{message}"
        );
    }

    #[test]
    fn huge_arrays_are_checked_and_quoted_briefly() {
        let huge = Value::Array(vec![json!("ok"); 1_000_000]);
        let mut long_bad = huge.clone();
        if let Value::Array(items) = &mut long_bad {
            items.push(json!(""));
        }
        let accepted = check(FieldType::StringList, true, huge).expect("valid");
        assert_eq!(accepted.as_array().map(Vec::len), Some(1_000_000));
        let message = refuses(FieldType::StringList, long_bad);
        assert!(message.ends_with("..."));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn deeply_nested_values_do_not_overflow_the_stack() {
        // Built by hand: `json!` would serialise (recursively) the interpolated value.
        let mut object = Map::new();
        object.insert("v".to_owned(), nested_arrays(1_000_000));
        let payload = Value::Object(object);
        let errors = validate(&payload, &[field("v", FieldType::String, true)]).expect_err("bad");
        assert_eq!(
            errors.type_errors,
            [format!(
                "Field 'v' expected a non-empty string. Received: {}...",
                "[".repeat(100)
            )]
        );
        let deep = nested_arrays(1_000_000);
        let errors = validate(&deep, &[]).expect_err("not an object");
        assert_eq!(
            errors.type_errors,
            [format!(
                "Payload expected a JSON object. Received: {}...",
                "[".repeat(100)
            )]
        );
        // Dropping values this deep recurses inside serde_json itself, so leak them instead.
        std::mem::forget(payload);
        std::mem::forget(deep);
    }

    #[test]
    fn parsed_deep_objects_are_accepted_as_objects() {
        let text = format!(
            "{}{}",
            "{\"a\":".repeat(120),
            "1".to_owned() + &"}".repeat(120)
        );
        let value: Value = serde_json::from_str(&text).expect("within parser limit");
        assert_eq!(accepts(FieldType::Object, value.clone()), value);
    }

    #[test]
    fn odd_unicode_keys_and_values_are_handled() {
        let key = "naïve 🦀 \u{202e}key";
        let fields = [field(key, FieldType::Country, true)];
        let errors = validate(&json!({ key: "\u{200b}DK" }), &fields).expect_err("invalid");
        assert_eq!(
            errors.type_errors,
            [format!(
                "Field '{key}' expected a valid ISO Alpha-2 country code. Received: \"\u{200b}DK\""
            )]
        );
    }

    // configuration shape

    #[test]
    fn expected_fields_deserialise_from_the_guides_shape() {
        let parsed: Vec<ExpectedField> = serde_json::from_value(json!([
            { "spektrDataField": "company_name", "type": "string", "required": true },
            { "spektrDataField": "ccy", "type": "currency", "required": false },
            { "spektrDataField": "countries", "type": "countryList", "required": true },
        ]))
        .expect("valid configuration");
        assert_eq!(
            parsed,
            [
                field("company_name", FieldType::String, true),
                field("ccy", FieldType::CurrencyList, false),
                field("countries", FieldType::CountryList, true),
            ]
        );
    }

    #[test]
    fn expected_fields_with_unknown_properties_or_types_are_rejected() {
        let extra = json!({ "spektrDataField": "a", "type": "string", "required": true, "x": 1 });
        assert!(serde_json::from_value::<ExpectedField>(extra).is_err());
        let unknown = json!({ "spektrDataField": "a", "type": "integer", "required": true });
        assert!(serde_json::from_value::<ExpectedField>(unknown).is_err());
    }

    #[test]
    fn field_types_serialise_with_their_canonical_names() {
        let names = serde_json::to_value([
            FieldType::String,
            FieldType::Number,
            FieldType::Date,
            FieldType::Country,
            FieldType::Boolean,
            FieldType::StringList,
            FieldType::CountryList,
            FieldType::CurrencyList,
            FieldType::Object,
        ])
        .expect("serialisable");
        assert_eq!(
            names,
            json!([
                "string",
                "number",
                "date",
                "country",
                "boolean",
                "stringList",
                "countryList",
                "currencyList",
                "object"
            ])
        );
    }
}
