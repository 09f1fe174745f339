//! What a queue message body says, read leniently: real bodies vary (AWS, moto, SNS fan-out,
//! EventBridge), so this reads JSON values, never a strict schema, and never fails.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A mail to ingest: bucket (or input folder) and decoded key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailRef {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// How to treat one message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Mails to ingest (at least one).
    Mails(Vec<MailRef>),
    /// A notification that announces no mail (`s3:TestEvent`, SNS/SES setup, object removed):
    /// delete the message.
    Ignore(String),
    /// Not something we understand: keep the message for redelivery / the DLQ, log a warning.
    Foreign(String),
}

/// SNS wrapping is unwrapped at most this many times (a loop of wrappers is foreign).
const MAX_UNWRAP: u32 = 3;

pub fn parse_body(body: &str) -> Body {
    let body = body.trim_start_matches('\u{feff}');
    // The usual body, an S3 notification, is read straight into its fields; anything else (or
    // an S3 notification of an unexpected shape) goes the general way, which gives the same
    // answer for the usual body (tested), only slower.
    if let Ok(notification) = serde_json::from_str::<s3_typed::Notification<'_>>(body) {
        return s3_mails(notification.records.iter().map(s3_typed::Record::fields));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(v) => classify(&v, 0),
        Err(e) => Body::Foreign(format!("not JSON: {e}")),
    }
}

/// An S3 event notification, typed: only the fields [`s3_mails`] reads.
mod s3_typed {
    use std::borrow::Cow;

    use serde::Deserialize;

    use super::RecordFields;

    #[derive(Deserialize)]
    pub struct Notification<'a> {
        #[serde(rename = "Records", borrow)]
        pub records: Vec<Record<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Record<'a> {
        #[serde(rename = "eventName", borrow, default)]
        event_name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        s3: Option<Entity<'a>>,
    }

    #[derive(Deserialize)]
    struct Entity<'a> {
        #[serde(borrow, default)]
        bucket: Option<Bucket<'a>>,
        #[serde(borrow, default)]
        object: Option<Object<'a>>,
    }

    #[derive(Deserialize)]
    struct Bucket<'a> {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow, default)]
        key: Option<Cow<'a, str>>,
        #[serde(rename = "eTag", borrow, default)]
        e_tag: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        etag: Option<Cow<'a, str>>,
        #[serde(default)]
        size: Option<u64>,
    }

    impl Record<'_> {
        pub fn fields(&self) -> RecordFields<'_> {
            let s3 = self.s3.as_ref();
            let object = s3.and_then(|s3| s3.object.as_ref());
            RecordFields {
                name: self.event_name.as_deref().unwrap_or_default(),
                bucket: s3
                    .and_then(|s3| s3.bucket.as_ref())
                    .and_then(|b| b.name.as_deref()),
                key: object.and_then(|o| o.key.as_deref()),
                etag: object.and_then(|o| o.e_tag.as_deref().or(o.etag.as_deref())),
                size: object.and_then(|o| o.size),
            }
        }
    }
}

fn classify(v: &Value, depth: u32) -> Body {
    let Some(obj) = v.as_object() else {
        return Body::Foreign("JSON that is not an object".into());
    };
    if let Some(records) = obj.get("Records").and_then(Value::as_array) {
        return s3_records(records);
    }
    if obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Body::Ignore("s3:TestEvent".into());
    }
    if let Some(t) = obj.get("Type").and_then(Value::as_str) {
        return sns(obj, t, depth);
    }
    if let Some(t) = obj.get("notificationType").and_then(Value::as_str) {
        return ses_notification(v, t);
    }
    if obj.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(v);
    }
    Body::Foreign("JSON without Records, Event, Type or notificationType".into())
}

fn sns(obj: &serde_json::Map<String, Value>, kind: &str, depth: u32) -> Body {
    match kind {
        "Notification" => {
            let Some(message) = obj.get("Message").and_then(Value::as_str) else {
                return Body::Foreign("SNS notification without Message".into());
            };
            if depth >= MAX_UNWRAP {
                return Body::Foreign("SNS wrapping nested too deep".into());
            }
            match serde_json::from_str::<Value>(message) {
                Ok(inner) => classify(&inner, depth + 1),
                Err(e) => Body::Foreign(format!("SNS Message is not JSON: {e}")),
            }
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            Body::Ignore(format!("SNS {kind}"))
        }
        other => Body::Foreign(format!("SNS message of type {other:?}")),
    }
}

/// SES notifications: setup messages are ignored; a `Received` notification whose action stored
/// the mail in S3 names it (keys here are not URL-encoded).
fn ses_notification(v: &Value, kind: &str) -> Body {
    if kind != "Received" {
        return Body::Ignore(format!("SES notification {kind}"));
    }
    let action = &v["receipt"]["action"];
    match (action["bucketName"].as_str(), action["objectKey"].as_str()) {
        (Some(bucket), Some(key)) if !bucket.is_empty() && !key.is_empty() => {
            Body::Mails(vec![MailRef {
                bucket: bucket.into(),
                key: key.into(),
                etag: None,
                size: None,
            }])
        }
        _ => Body::Foreign("SES Received notification without an S3 action".into()),
    }
}

/// EventBridge `Object Created` events: keys are not URL-encoded.
fn eventbridge(v: &Value) -> Body {
    let detail_type = v["detail-type"].as_str().unwrap_or_default();
    if detail_type != "Object Created" {
        return Body::Ignore(format!("EventBridge S3 event {detail_type:?}"));
    }
    let d = &v["detail"];
    match (d["bucket"]["name"].as_str(), d["object"]["key"].as_str()) {
        (Some(bucket), Some(key)) => Body::Mails(vec![MailRef {
            bucket: bucket.into(),
            key: key.into(),
            etag: d["object"]["etag"].as_str().map(Into::into),
            size: d["object"]["size"].as_u64(),
        }]),
        _ => Body::Foreign("EventBridge S3 event without bucket or key".into()),
    }
}

/// What an S3 event record says about its object.
struct RecordFields<'a> {
    name: &'a str,
    bucket: Option<&'a str>,
    key: Option<&'a str>,
    etag: Option<&'a str>,
    size: Option<u64>,
}

fn s3_records(records: &[Value]) -> Body {
    s3_mails(records.iter().map(|r| {
        let object = &r["s3"]["object"];
        RecordFields {
            name: r["eventName"].as_str().unwrap_or_default(),
            bucket: r["s3"]["bucket"]["name"].as_str(),
            key: object["key"].as_str(),
            etag: object["eTag"].as_str().or(object["etag"].as_str()),
            size: object["size"].as_u64(),
        }
    }))
}

fn s3_mails<'a>(records: impl Iterator<Item = RecordFields<'a>>) -> Body {
    let mut mails = Vec::new();
    let mut ignored = Vec::new();
    for RecordFields {
        name,
        bucket,
        key,
        etag,
        size,
    } in records
    {
        if name.starts_with("ObjectRemoved") || name.starts_with("s3:ObjectRemoved") {
            ignored.push(name.to_string());
            continue;
        }
        let (Some(bucket), Some(key)) = (bucket, key) else {
            return Body::Foreign("S3 event record without bucket or key".into());
        };
        let key = decode_key(key);
        if bucket.is_empty() || key.is_empty() {
            return Body::Foreign("S3 event record with an empty bucket or key".into());
        }
        mails.push(MailRef {
            bucket: bucket.into(),
            key,
            etag: etag.map(Into::into),
            size,
        });
    }
    if !mails.is_empty() {
        Body::Mails(mails)
    } else if !ignored.is_empty() {
        Body::Ignore(format!("S3 events {}", ignored.join(", ")))
    } else {
        Body::Ignore("S3 event without records".into())
    }
}

/// S3 event keys are form-URL-encoded: `+` is a space, `%XX` a byte; the bytes are UTF-8
/// (invalid sequences are replaced rather than failing).
pub fn decode_key(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex_pair(bytes[i + 1], bytes[i + 2]).is_some() => {
                out.extend(hex_pair(bytes[i + 1], bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(a: u8, b: u8) -> Option<u8> {
    let h = |c: u8| (c as char).to_digit(16);
    Some((h(a)? * 16 + h(b)?) as u8)
}

/// The inverse of [`decode_key`], for synthetic events (local mode).
pub fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

/// A synthetic S3 `ObjectCreated` event for one object, as S3 would send it.
pub fn synthetic_s3_event(bucket: &str, key: &str, size: Option<u64>) -> String {
    // Written out directly (one per input file in local mode); strings escaped by serde_json.
    let text = |s: &str| Value::from(s).to_string();
    let size = size.map(|n| format!(",\"size\":{n}")).unwrap_or_default();
    format!(
        "{{\"Records\":[{{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\",\
         \"eventName\":\"ObjectCreated:Put\",\"s3\":{{\"bucket\":{{\"name\":{}}},\
         \"object\":{{\"key\":{}{size}}}}}}}]}}",
        text(bucket),
        text(&encode_key(key)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mails(body: &str) -> Vec<MailRef> {
        match parse_body(body) {
            Body::Mails(m) => m,
            other => panic!("expected mails, got {other:?}"),
        }
    }

    fn record(bucket: &str, key: &str) -> String {
        format!(
            r#"{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":42,"eTag":"abc"}}}}}}"#
        )
    }

    #[test]
    fn s3_test_event_is_ignored() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"b","RequestId":"x","HostId":"y"}"#;
        assert!(matches!(parse_body(body), Body::Ignore(r) if r == "s3:TestEvent"));
    }

    #[test]
    fn keys_are_form_url_decoded() {
        let body = format!(
            r#"{{"Records":[{}]}}"#,
            record("b", "incoming/a+b%2Fc%20d%C3%A9+%2B.eml")
        );
        let m = mails(&body);
        assert_eq!(m[0].key, "incoming/a b/c dé +.eml");
        assert_eq!(m[0].bucket, "b");
        assert_eq!(m[0].size, Some(42));
        assert_eq!(m[0].etag.as_deref(), Some("abc"));
        assert_eq!(decode_key("100%"), "100%");
        assert_eq!(decode_key("%zz%4"), "%zz%4");
        assert_eq!(decode_key("%FF"), "\u{fffd}");
        let k = "incoming/x y+z/é%";
        assert_eq!(decode_key(&encode_key(k)), k);
    }

    #[test]
    fn several_records_in_one_body() {
        let body = format!(
            r#"{{"Records":[{},{}]}}"#,
            record("b1", "incoming/one"),
            record("b2", "incoming/two")
        );
        let m = mails(&body);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[1].bucket.as_str(), m[1].key.as_str()),
            ("b2", "incoming/two")
        );
    }

    #[test]
    fn ses_and_sns_setup_notifications_are_ignored() {
        let ses = r#"{"notificationType":"AmazonSnsSubscriptionSucceeded","message":"You have successfully subscribed your Amazon SNS topic"}"#;
        assert!(matches!(parse_body(ses), Body::Ignore(_)));
        let sns = r#"{"Type":"SubscriptionConfirmation","Message":"You have chosen to subscribe","SubscribeURL":"https://x"}"#;
        assert!(matches!(parse_body(sns), Body::Ignore(_)));
        let removed = r#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#;
        assert!(matches!(parse_body(removed), Body::Ignore(_)));
    }

    #[test]
    fn sns_wrapped_s3_events_and_ses_received_are_unwrapped() {
        let inner = format!(r#"{{"Records":[{}]}}"#, record("b", "incoming/k%2B1"));
        let wrapped = serde_json::json!({"Type":"Notification","Message": inner}).to_string();
        assert_eq!(mails(&wrapped)[0].key, "incoming/k+1");
        let ses = serde_json::json!({"Type":"Notification","Message": serde_json::json!({
            "notificationType":"Received",
            "receipt":{"action":{"type":"S3","bucketName":"mailbucket","objectKey":"incoming/raw id"}}
        }).to_string()})
        .to_string();
        let m = mails(&ses);
        assert_eq!(
            (m[0].bucket.as_str(), m[0].key.as_str()),
            ("mailbucket", "incoming/raw id")
        );
        let mut deep = inner.clone();
        for _ in 0..5 {
            deep = serde_json::json!({"Type":"Notification","Message": deep}).to_string();
        }
        assert!(matches!(parse_body(&deep), Body::Foreign(_)));
    }

    #[test]
    fn eventbridge_object_created_is_read_without_decoding() {
        let body = r#"{"source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"},"object":{"key":"incoming/a+b","size":5}}}"#;
        assert_eq!(mails(body)[0].key, "incoming/a+b");
    }

    #[test]
    fn foreign_and_garbage_bodies_are_foreign() {
        for body in [
            "",
            "hello",
            "{not json",
            "[1,2]",
            "42",
            r#"{"foo":"bar"}"#,
            r#"{"Records":[{"s3":{}}]}"#,
            r#"{"Type":"Notification","Message":"not json"}"#,
            r#"{"Type":"Weird"}"#,
        ] {
            assert!(matches!(parse_body(body), Body::Foreign(_)), "{body:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_classified_without_panicking(body in ".{0,300}") {
            let _ = parse_body(&body);
        }

        #[test]
        fn any_key_survives_encoding(key in "\\PC{1,80}") {
            proptest::prop_assert_eq!(decode_key(&encode_key(&key)), key.clone());
            let body = synthetic_s3_event("b", &key, None);
            proptest::prop_assert_eq!(mails(&body)[0].key.clone(), key);
        }
    }

    #[test]
    fn synthetic_events_round_trip() {
        let body = synthetic_s3_event("/in dir", "sub dir/ré+port.xml", Some(7));
        let m = mails(&body);
        assert_eq!(m[0].bucket, "/in dir");
        assert_eq!(m[0].key, "sub dir/ré+port.xml");
        assert_eq!(m[0].size, Some(7));
    }

    /// The typed reading of S3 notifications must say exactly what the general one says.
    #[test]
    fn typed_s3_reading_agrees_with_the_general_one() {
        let bodies = [
            format!(r#"{{"Records":[{}]}}"#, record("b", "incoming/a+b%2Fc.eml")),
            format!(r#"{{"Records":[{},{}]}}"#, record("b", "x"), record("b", "y")),
            r#"{"Records":[]}"#.to_string(),
            r#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#.to_string(),
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"}}}]}"#.to_string(),
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":""},"object":{"key":"k"}}}]}"#.to_string(),
            r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"k","etag":"lower","size":null}}}]}"#.to_string(),
            r#"{"Records":[{"eventName":null,"s3":{"bucket":{"name":"b"},"object":{"key":"k","eTag":null,"etag":"e"}}}],"Event":"s3:TestEvent"}"#.to_string(),
            r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"k","size":1.5}}}]}"#.to_string(),
            r#"{"Records":[7]}"#.to_string(),
            r#"{"Records":{"s3":1}}"#.to_string(),
            synthetic_s3_event("in \"q\" dir", "sub/ré port.xml", Some(3)),
        ];
        for body in &bodies {
            let general = match serde_json::from_str::<Value>(body) {
                Ok(v) => classify(&v, 0),
                Err(e) => Body::Foreign(format!("not JSON: {e}")),
            };
            assert_eq!(parse_body(body), general, "{body}");
        }
        // The ones the typed reading takes, it reads whole.
        assert_eq!(mails(&bodies[1]).len(), 2);
        assert_eq!(mails(&bodies[6])[0].etag.as_deref(), Some("lower"));
        assert_eq!(mails(&bodies[7])[0].etag.as_deref(), Some("e"));
    }

    #[test]
    fn synthetic_event_is_the_s3_shape() {
        let body = synthetic_s3_event("in \"q\" dir", "a/b c+d.eml", Some(42));
        let value: Value = serde_json::from_str(&body).expect("valid JSON");
        let expected = serde_json::json!({
            "Records": [{
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": { "bucket": { "name": "in \"q\" dir" },
                        "object": { "key": "a%2Fb+c%2Bd.eml", "size": 42 } }
            }]
        });
        assert_eq!(value, expected);
        let without_size: Value =
            serde_json::from_str(&synthetic_s3_event("b", "k", None)).expect("valid JSON");
        assert!(
            without_size["Records"][0]["s3"]["object"]
                .get("size")
                .is_none()
        );
    }
}
