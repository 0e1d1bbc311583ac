//! A small S3 client for off-site backups: put a file, get one, list a
//! prefix, delete, signed with SigV4 (`sigv4`). Path-style addressing for an
//! S3-compatible endpoint (MinIO, Ceph, moto), virtual-hosted for AWS. Single
//! PUTs only: an object over 5 GiB is refused with that said (multipart is
//! not built). Requests are retried on 5xx and transport errors: every call
//! here is idempotent.
pub mod sigv4;
mod xml;

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use reqwest::{Method, StatusCode, Url};
use tokio::io::AsyncWriteExt;

pub use sigv4::Credentials;

/// S3's limit for one PUT.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
const ATTEMPTS: u32 = 3;

/// Where a bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    /// `https://host[:port]`; `http://` only for a loopback endpoint.
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub credentials: Credentials,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    config: BucketConfig,
    http: reqwest::Client,
}

/// What a request carries.
enum Payload<'a> {
    Empty,
    File {
        path: &'a Path,
        sha256: &'a str,
        size: u64,
    },
}

impl Bucket {
    pub fn new(config: BucketConfig) -> Result<Bucket> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("building the S3 HTTP client")?;
        Ok(Bucket { config, http })
    }

    /// `s3://bucket/key`, for messages.
    pub fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.config.bucket)
    }

    /// The URL, the `host` header and the canonical path of `key` ("" for the bucket).
    fn address(&self, key: &str) -> Result<(Url, String, String)> {
        let endpoint = &self.config.endpoint;
        let mut host = endpoint
            .host_str()
            .context("an S3 endpoint has a host")?
            .to_owned();
        if !self.config.path_style {
            host = format!("{}.{host}", self.config.bucket);
        }
        if let Some(port) = endpoint.port() {
            host = format!("{host}:{port}");
        }
        let encoded = sigv4::uri_encode(key, true);
        let path = match (self.config.path_style, key.is_empty()) {
            (true, true) => format!("/{}", self.config.bucket),
            (true, false) => format!("/{}/{encoded}", self.config.bucket),
            (false, _) => format!("/{encoded}"),
        };
        let url = Url::parse(&format!("{}://{host}{path}", endpoint.scheme()))
            .with_context(|| format!("building the URL of {}", self.describe(key)))?;
        Ok((url, host, path))
    }

    /// Signs and sends one request, retrying 5xx answers and transport
    /// errors; any other answer is the caller's to judge.
    async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(String, String)],
        payload: &Payload<'_>,
    ) -> Result<reqwest::Response> {
        let what = format!("S3 {method} {}", self.describe(key));
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 2))).await;
            }
            match self.send_once(method.clone(), key, query, payload).await {
                Ok(response) if !response.status().is_server_error() => return Ok(response),
                Ok(response) => last_error = Some(answer_error(response, &what).await),
                Err(e) => last_error = Some(e.context(what.clone())),
            }
        }
        let error = last_error.expect("at least one attempt");
        Err(error.context(format!("{what}: gave up after {ATTEMPTS} attempts")))
    }

    async fn send_once(
        &self,
        method: Method,
        key: &str,
        query: &[(String, String)],
        payload: &Payload<'_>,
    ) -> Result<reqwest::Response> {
        let (mut url, host, path) = self.address(key)?;
        let query_string = sigv4::canonical_query(query);
        if !query_string.is_empty() {
            url.set_query(Some(&query_string));
        }
        let now = chrono::Utc::now();
        let payload_sha256 = match payload {
            Payload::Empty => sigv4::EMPTY_SHA256,
            Payload::File { sha256, .. } => sha256,
        };
        let mut headers = vec![
            ("host".to_owned(), host),
            ("x-amz-content-sha256".to_owned(), payload_sha256.to_owned()),
            ("x-amz-date".to_owned(), sigv4::amz_date(now)),
        ];
        if let Some(token) = &self.config.credentials.session_token {
            headers.push(("x-amz-security-token".to_owned(), token.clone()));
        }
        let authorization = sigv4::authorization(
            &self.config.credentials,
            now,
            &self.config.region,
            "s3",
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                payload_sha256,
            },
        );
        let mut request = self.http.request(method, url);
        // reqwest writes `host` from the URL itself, the same value as signed.
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(name, value);
        }
        request = request.header("authorization", authorization);
        if let Payload::File { path, size, .. } = payload {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let stream = tokio_util::io::ReaderStream::new(file);
            request = request
                .header("content-length", *size)
                .body(reqwest::Body::wrap_stream(stream));
        }
        request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "{} did not answer: {e:#} (is backup.s3.endpoint right and reachable?)",
                self.config.endpoint
            )
        })
    }

    /// Uploads a file whose sha256 the caller knows (S3 checks it on arrival).
    pub async fn put_file(&self, key: &str, path: &Path, sha256: &str, size: u64) -> Result<()> {
        if size > MAX_SINGLE_PUT {
            bail!(
                "{} is {size} bytes: over the 5 GiB of one S3 PUT, and multipart upload is not built; keep such backups in backup.dir only",
                path.display()
            );
        }
        let payload = Payload::File { path, sha256, size };
        let response = self.send(Method::PUT, key, &[], &payload).await?;
        expect_success(response, &format!("S3 PUT {}", self.describe(key))).await
    }

    /// The object's answer, `None` when there is no such object; any other
    /// refusal is an error.
    async fn get(&self, key: &str, what: &str) -> Result<Option<reqwest::Response>> {
        let response = self.send(Method::GET, key, &[], &Payload::Empty).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(response)),
            _ => Err(answer_error(response, what).await),
        }
    }

    /// Writes the object to `path`; `None` when there is no such object.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<Option<u64>> {
        let what = format!("S3 GET {}", self.describe(key));
        let Some(mut response) = self.get(key, &what).await? else {
            return Ok(None);
        };
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.with_context(|| what.clone())? {
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            written += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(written))
    }

    /// A small object (a manifest) in memory; `None` when there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("S3 GET {}", self.describe(key));
        let Some(response) = self.get(key, &what).await? else {
            return Ok(None);
        };
        Ok(Some(response.bytes().await.with_context(|| what)?.to_vec()))
    }

    /// Every key under `prefix`, following continuation tokens.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let what = format!("S3 list {}", self.describe(prefix));
        let mut keys = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".to_owned(), token.clone()));
            }
            let response = self.send(Method::GET, "", &query, &Payload::Empty).await?;
            if !response.status().is_success() {
                return Err(answer_error(response, &what).await);
            }
            let body = response.text().await.with_context(|| what.clone())?;
            keys.extend(xml::values(&body, "Key"));
            let truncated = xml::values(&body, "IsTruncated")
                .first()
                .map(String::as_str)
                == Some("true");
            token = xml::values(&body, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes `key`; deleting what is not there succeeds, as in S3.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let response = self.send(Method::DELETE, key, &[], &Payload::Empty).await?;
        expect_success(response, &format!("S3 DELETE {}", self.describe(key))).await
    }
}

async fn expect_success(response: reqwest::Response, what: &str) -> Result<()> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(answer_error(response, what).await)
    }
}

/// An S3 error answer as one line: status, S3's code and message, and what to
/// check. The answer never holds the secret, so quoting it is safe.
async fn answer_error(response: reqwest::Response, what: &str) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let code = xml::values(&body, "Code")
        .into_iter()
        .next()
        .unwrap_or_default();
    let message = xml::values(&body, "Message")
        .into_iter()
        .next()
        .unwrap_or_default();
    anyhow::anyhow!(
        "{what}: {status} {code}{}{}",
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        },
        hint(&code, status)
    )
}

fn hint(code: &str, status: StatusCode) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => " (backup.s3.secret_access_key does not belong to backup.s3.access_key_id, or backup.s3.region is not the bucket's)",
        "InvalidAccessKeyId" => " (backup.s3.access_key_id is not known to this endpoint)",
        "NoSuchBucket" => " (create the bucket first, or fix backup.s3.bucket)",
        "AccessDenied" => " (the key's policy needs s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on the bucket and prefix)",
        "AuthorizationHeaderMalformed" | "PermanentRedirect" => " (backup.s3.region is not the bucket's region)",
        "RequestTimeTooSkewed" => " (this machine's clock is off: S3 accepts 15 minutes)",
        _ if status.is_server_error() => " (the endpoint failed; try again)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(endpoint: &str, path_style: bool) -> Bucket {
        Bucket::new(BucketConfig {
            endpoint: Url::parse(endpoint).unwrap(),
            region: "eu-west-1".into(),
            bucket: "acme-backups".into(),
            path_style,
            credentials: Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "secret".into(),
                session_token: None,
            },
        })
        .unwrap()
    }

    #[test]
    fn path_style_for_an_endpoint_virtual_hosted_for_aws() {
        let cases = [
            (
                "http://127.0.0.1:9000",
                true,
                "xtask/prod/2026 a.json",
                "127.0.0.1:9000",
                "/acme-backups/xtask/prod/2026%20a.json",
            ),
            (
                "http://127.0.0.1:9000",
                true,
                "",
                "127.0.0.1:9000",
                "/acme-backups",
            ),
            (
                "https://s3.eu-west-1.amazonaws.com",
                false,
                "prod/x.dump",
                "acme-backups.s3.eu-west-1.amazonaws.com",
                "/prod/x.dump",
            ),
        ];
        for (endpoint, path_style, key, want_host, want_path) in cases {
            let (url, host, path) = bucket(endpoint, path_style).address(key).unwrap();
            assert_eq!((host.as_str(), path.as_str()), (want_host, want_path));
            let scheme = endpoint.split(':').next().unwrap();
            assert_eq!(url.as_str(), format!("{scheme}://{want_host}{want_path}"));
        }
    }

    #[test]
    fn a_signature_error_names_the_fields_to_check() {
        assert!(hint("SignatureDoesNotMatch", StatusCode::FORBIDDEN)
            .contains("backup.s3.secret_access_key"));
        assert!(hint("NoSuchBucket", StatusCode::NOT_FOUND).contains("backup.s3.bucket"));
    }
}
