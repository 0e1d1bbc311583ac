//! AWS Signature Version 4, the pure part: canonical request, string to
//! sign, signing key, signature. No clock and no I/O here, so it is checked
//! against the worked examples AWS publishes (the tests below); the client
//! (`super::Bucket`) adds the time and sends.
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The sha256 of an empty payload (GET, DELETE, list).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key. `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials (STS): sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"…")
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// What is signed of one request. `path` is the canonical (already
/// URI-encoded) path; `query` and `headers` are raw: encoded, lower-cased
/// and sorted here. `headers` must include `host`.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

/// RFC 3986 encoding as SigV4 wants it: everything but `A-Za-z0-9-._~`,
/// and `/` too unless it separates an object key's segments.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `a=1&b=2`, encoded and sorted by name then value: also the query string
/// sent, so what is signed is exactly what goes on the wire.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request and its signed-headers list.
pub fn canonical_request(request: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let text = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        request.payload_sha256
    );
    (text, signed)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `20130524/us-east-1/s3/aws4_request`
pub fn scope(time: DateTime<Utc>, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", time.format("%Y%m%d"))
}

pub fn amz_date(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The hex signature of a canonical request.
pub fn signature(
    secret: &str,
    time: DateTime<Utc>,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        amz_date(time),
        scope(time, region, service),
        sha256_hex(canonical_request.as_bytes())
    );
    let date = hmac(
        format!("AWS4{secret}").as_bytes(),
        &time.format("%Y%m%d").to_string(),
    );
    let key = hmac(&hmac(&hmac(&date, region), service), "aws4_request");
    hex(&hmac(&key, &string_to_sign))
}

/// The `Authorization` header value for a request whose headers already
/// carry `x-amz-date` (and, for S3, `x-amz-content-sha256`).
pub fn authorization(
    credentials: &Credentials,
    time: DateTime<Utc>,
    region: &str,
    service: &str,
    request: &Request,
) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let signature = signature(
        &credentials.secret_access_key,
        time,
        region,
        service,
        &canonical,
    );
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={signed_headers},Signature={signature}",
        credentials.access_key_id,
        scope(time, region, service)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// AWS's "Example: GET Object" (Amazon S3 API reference, signing with the
    /// Authorization header): the published signature, byte for byte.
    #[test]
    fn the_s3_get_object_example_gives_the_published_signature() {
        let credentials = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let headers = pairs(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let request = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, _) = canonical_request(&request);
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            authorization(&credentials, at("2013-05-24T00:00:00Z"), "us-east-1", "s3", &request),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The SigV4 test suite's `get-vanilla-query-order-key-case`: query
    /// parameters are sorted before signing, whatever order they came in.
    #[test]
    fn query_parameters_are_signed_in_sorted_order() {
        let headers = pairs(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let query = pairs(&[("Param2", "value2"), ("Param1", "value1")]);
        let request = Request {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(signed, "host;x-amz-date");
        assert!(
            canonical.contains("\nParam1=value1&Param2=value2\n"),
            "{canonical}"
        );
        assert_eq!(
            signature(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                at("2015-08-30T12:36:00Z"),
                "us-east-1",
                "service",
                &canonical
            ),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        assert_eq!(uri_encode("a b/c+d~e.json", true), "a%20b/c%2Bd~e.json");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(
            canonical_query(&pairs(&[("prefix", "x/y"), ("list-type", "2")])),
            "list-type=2&prefix=x%2Fy"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("token-secret"));
        assert!(shown.contains("AKID"));
    }
}
