//! Builds mails the way Amazon SES stores them in S3: RFC 5322, CRLF line ends, SES receipt
//! headers, multipart/mixed with a short text part and one base64 attachment.

use dmarc_tsv_core::model::utc_datetime;

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// RFC 2045 caps encoded lines at 76 characters.
const BASE64_LINE: usize = 76;

/// Standard base64 with `=` padding, broken into CRLF-terminated lines of 76 characters.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let encoded_len = data.len().div_ceil(3) * 4;
    let mut out = Vec::with_capacity(encoded_len + 2 * encoded_len.div_ceil(BASE64_LINE));
    let mut line = 0;
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = [
            BASE64_ALPHABET[(n >> 18) as usize & 63],
            BASE64_ALPHABET[(n >> 12) as usize & 63],
            if chunk.len() > 1 {
                BASE64_ALPHABET[(n >> 6) as usize & 63]
            } else {
                b'='
            },
            if chunk.len() > 2 {
                BASE64_ALPHABET[n as usize & 63]
            } else {
                b'='
            },
        ];
        for symbol in symbols {
            out.push(symbol);
            line += 1;
            if line == BASE64_LINE {
                out.extend_from_slice(b"\r\n");
                line = 0;
            }
        }
    }
    if line > 0 {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 5322 date, UTC: `Mon, 02 Nov 2026 10:00:00 +0000`.
pub fn rfc5322_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // utc_datetime gives `YYYY-MM-DD HH:MM:SS`; 1970-01-01 was a Thursday.
    let stamp = utc_datetime(secs);
    let weekday = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    let month = stamp[5..7]
        .parse::<usize>()
        .map_or("Jan", |m| MONTHS[(m - 1) % 12]);
    format!(
        "{weekday}, {} {month} {} {} +0000",
        &stamp[8..10],
        &stamp[0..4],
        &stamp[11..19]
    )
}

/// Everything that varies between generated mails.
#[derive(Debug, Clone)]
pub struct MailSpec<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub date: i64,
    /// Unique per mail; also used for the MIME boundary and SES's SMTP id.
    pub message_id: &'a str,
    pub content_type: &'a str,
    pub filename: &'a str,
    pub attachment: &'a [u8],
}

/// The complete raw mail, as SES would write it to `incoming/`.
pub fn build_mail(spec: &MailSpec<'_>) -> Vec<u8> {
    let boundary = format!("----=_Part_{}", spec.message_id);
    let date = rfc5322_date(spec.date);
    let sender_domain = spec.from.rsplit('@').next().unwrap_or("example.net");
    let headers = [
        format!("Return-Path: <{}>", spec.from),
        format!(
            "Received: from mail.{sender_domain} (mail.{sender_domain} [198.51.100.25])\r\n \
             by inbound-smtp.eu-west-1.amazonaws.com with SMTP id {}\r\n \
             for {}; {date}",
            spec.message_id, spec.to
        ),
        "X-SES-Spam-Verdict: PASS".to_string(),
        "X-SES-Virus-Verdict: PASS".to_string(),
        format!(
            "Authentication-Results: amazonses.com;\r\n spf=pass smtp.mailfrom={};\r\n \
             dkim=pass header.i=@{sender_domain};\r\n dmarc=pass header.from={sender_domain};",
            spec.from
        ),
        format!("From: {}", spec.from),
        format!("To: {}", spec.to),
        format!("Subject: {}", spec.subject),
        format!("Date: {date}"),
        format!("Message-ID: <{}@{sender_domain}>", spec.message_id),
        "MIME-Version: 1.0".to_string(),
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\""),
    ];
    let mut mail = Vec::with_capacity(spec.attachment.len() * 4 / 3 + 2048);
    for header in headers {
        mail.extend_from_slice(header.as_bytes());
        mail.extend_from_slice(b"\r\n");
    }
    mail.extend_from_slice(b"\r\n");
    let text_part = format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         This is an aggregate report. {}\r\n\r\n",
        spec.subject
    );
    mail.extend_from_slice(text_part.as_bytes());
    let attachment_headers = format!(
        "--{boundary}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; filename=\"{}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
        spec.content_type, spec.filename, spec.filename
    );
    mail.extend_from_slice(attachment_headers.as_bytes());
    mail.extend_from_slice(&base64_lines(spec.attachment));
    mail.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    mail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg==\r\n"),
            (b"fo", "Zm8=\r\n"),
            (b"foo", "Zm9v\r\n"),
            (b"foob", "Zm9vYg==\r\n"),
            (b"fooba", "Zm9vYmE=\r\n"),
            (b"foobar", "Zm9vYmFy\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(String::from_utf8(base64_lines(input)).unwrap(), want);
        }
    }

    #[test]
    fn base64_lines_are_76_characters() {
        let out = String::from_utf8(base64_lines(&[0xA5; 200])).unwrap();
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines[1].len(), 76);
        assert_eq!(lines[2].len(), 76);
        assert_eq!(lines[3].len(), 268 - 3 * 76);
        assert_eq!(lines[4], "");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_793_577_600),
            "Mon, 02 Nov 2026 00:00:00 +0000"
        );
    }
}
