//! Unfinished multipart uploads under the repository's prefix. A process
//! killed while it uploads a pack in parts leaves the parts on the server,
//! which keeps (and bills) them until the upload is aborted, yet lists no
//! object. opendal can neither list such uploads nor abort one it did not
//! start, so this module sends the two S3 requests itself
//! (ListMultipartUploads, AbortMultipartUpload), signed with the same
//! credentials as every other call.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{Method, Request, StatusCode};
use opendal::{Buffer, ErrorKind, HttpTransporter};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqsign_aws_v4::{
    Credential, DefaultCredentialProvider, RequestSigner, StaticCredentialProvider,
};
use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer};
use reqsign_file_read_tokio::TokioFileRead;
use serde::Deserialize;

use super::S3Credentials;
use super::patience::{RETRY_MAX, RETRY_MIN};

/// Attempts at one request before a temporary failure is given up on.
const ATTEMPTS: u32 = 4;

/// Where credentials come from, in the SDKs' order: keys given for this
/// repository first, then the environment, the shared config files (under
/// `profile`), and the instance's role. Both opendal and [`Uploads`] sign
/// with a chain made here, so they always use the same keys.
pub(super) fn credential_chain(
    profile: Option<&str>,
    keys: Option<&S3Credentials>,
) -> ProvideCredentialChain<Credential> {
    let mut default = DefaultCredentialProvider::builder();
    if let Some(p) = profile.filter(|p| !p.is_empty()) {
        default = default.with_profile(p);
    }
    let chain = ProvideCredentialChain::new().push(default.build());
    match keys {
        Some(k) => {
            let mut given = StaticCredentialProvider::new(&k.access_key_id, &k.secret_access_key);
            if let Some(t) = &k.session_token {
                given = given.with_session_token(t);
            }
            chain.push_front(given)
        }
        None => chain,
    }
}

/// Path segments and query values are sent percent-encoded once, as the
/// signer expects: everything but AWS's unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Sends the requests opendal has no call for.
pub(super) struct Uploads {
    signer: Signer<Credential>,
    transport: HttpTransporter,
    /// The bucket's URL, without a trailing slash.
    bucket_url: String,
    /// The repository's prefix in the bucket with a trailing slash, or empty.
    root: String,
}

/// An upload the server holds parts of, and no object yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unfinished {
    /// The object's key below the repository's prefix.
    pub key: String,
    /// The server's name for the upload.
    pub upload_id: String,
    /// How long ago it started, by the server's clock; `None` when the
    /// server did not say.
    pub age: Option<Duration>,
}

impl Uploads {
    /// For the repository at `prefix` in `bucket` on `endpoint`.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        prefix: &str,
        region: &str,
        virtual_host: bool,
        credentials: ProvideCredentialChain<Credential>,
    ) -> Uploads {
        let ctx = Context::new()
            .with_file_read(TokioFileRead)
            .with_http_send(HttpTransporter::default())
            .with_env(OsEnv);
        // The prefix as opendal normalises its root.
        let root: String = prefix
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| format!("{c}/"))
            .collect();
        Uploads {
            signer: Signer::new(ctx, credentials, RequestSigner::new("s3", region)),
            transport: HttpTransporter::default(),
            bucket_url: bucket_url(endpoint, bucket, region, virtual_host),
            root,
        }
    }

    /// Every unfinished upload under the repository's prefix.
    pub async fn list(&self) -> opendal::Result<Vec<Unfinished>> {
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads&prefix={}", encode(&self.root));
            if let Some((key, id)) = &markers {
                query += &format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(key),
                    encode(id)
                );
            }
            let resp = self
                .send(Method::GET, &format!("{}/?{query}", self.bucket_url))
                .await?;
            // Ages are counted on the server's clock, which also wrote the
            // start times: a client's clock set wrong cannot make a live
            // upload look old. Without it, no age is known.
            let now = resp
                .headers()
                .get(http::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.with_timezone(&Utc));
            let body = resp.into_body().to_bytes();
            let page: ListResult = quick_xml::de::from_reader(&body[..]).map_err(|e| {
                opendal::Error::new(
                    ErrorKind::Unexpected,
                    "the list of unfinished uploads could not be read",
                )
                .set_source(e)
            })?;
            for u in page.uploads {
                let Some(key) = u.key.strip_prefix(&self.root) else {
                    continue;
                };
                let age = u
                    .initiated
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .zip(now)
                    .and_then(|(t, now)| now.signed_duration_since(t).to_std().ok());
                found.push(Unfinished {
                    key: key.to_string(),
                    upload_id: u.upload_id,
                    age,
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(id)) if markers.as_ref() != Some(&(k.clone(), id.clone())) => {
                    markers = Some((k, id))
                }
                _ => return Ok(found),
            }
        }
    }

    /// Aborts one upload: the server drops its parts. An upload the server
    /// no longer knows (aborted or completed meanwhile) is `NotFound`.
    pub async fn abort(&self, u: &Unfinished) -> opendal::Result<()> {
        let path = format!("{}{}", self.root, u.key)
            .split('/')
            .map(encode)
            .collect::<Vec<_>>()
            .join("/");
        let url = format!(
            "{}/{path}?uploadId={}",
            self.bucket_url,
            encode(&u.upload_id)
        );
        self.send(Method::DELETE, &url).await.map(|_| ())
    }

    /// [`Self::send_once`], tried again after a backoff on a temporary
    /// failure (these requests bypass opendal's retries).
    async fn send(&self, method: Method, url: &str) -> opendal::Result<http::Response<Buffer>> {
        let mut wait = RETRY_MIN;
        let mut attempts = 1;
        loop {
            match self.send_once(method.clone(), url).await {
                Err(e) if e.is_temporary() && attempts < ATTEMPTS => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 4).min(RETRY_MAX);
                    attempts += 1;
                }
                r => return r,
            }
        }
    }

    /// Signs and sends a request without a body. An answer other than
    /// success is an error; only S3's NoSuchUpload is `NotFound`, so that a
    /// missing bucket or a request gone astray is never taken for an
    /// upload already gone.
    async fn send_once(
        &self,
        method: Method,
        url: &str,
    ) -> opendal::Result<http::Response<Buffer>> {
        let unexpected = |what: &str, e: &dyn std::fmt::Display| {
            opendal::Error::new(ErrorKind::Unexpected, format!("{what}: {e}"))
        };
        let req = Request::builder()
            .method(method)
            .uri(url)
            .body(Buffer::new())
            .map_err(|e| unexpected("building a request", &e))?;
        let (mut parts, body) = req.into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| unexpected("signing a request", &e))?;
        // The transport sets the host itself (as opendal does).
        parts.headers.remove(http::header::HOST);
        let resp = self
            .transport
            .send(Request::from_parts(parts, body))
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = String::from_utf8_lossy(&resp.into_body().to_vec()).into_owned();
        let parsed = quick_xml::de::from_str::<ErrorXml>(&body).ok();
        let kind = match status {
            _ if parsed.as_ref().is_some_and(|e| e.code == "NoSuchUpload") => ErrorKind::NotFound,
            StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
            StatusCode::NOT_IMPLEMENTED => ErrorKind::Unsupported,
            _ => ErrorKind::Unexpected,
        };
        let said = parsed.map_or(body, |e| format!("{}: {}", e.code, e.message));
        let e = opendal::Error::new(kind, format!("{status}: {said}"));
        Err(
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                e.set_temporary()
            } else {
                e
            },
        )
    }
}

/// The bucket's URL, made as opendal makes it, so that these requests go
/// where its own do: a bucket name already in the host is taken out,
/// default ports dropped, AWS's global endpoint made regional, and the
/// bucket put in the host or the path.
fn bucket_url(endpoint: &str, bucket: &str, region: &str, virtual_host: bool) -> String {
    let mut url = endpoint.replace(&format!("//{bucket}."), "//");
    if let Ok(u) = url::Url::parse(&url) {
        url = u.to_string().trim_end_matches('/').to_string();
    }
    if url == "https://s3.amazonaws.com" {
        url = format!("https://s3.{region}.amazonaws.com");
    }
    if virtual_host {
        url.replacen("//", &format!("//{bucket}."), 1)
    } else {
        format!("{url}/{bucket}")
    }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// `ListMultipartUploadsResult`, the fields used.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadXml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorXml {
    code: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_list_of_unfinished_uploads() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>repo/data/ab/abcd</NextKeyMarker><NextUploadIdMarker>2</NextUploadIdMarker>
  <Prefix>repo/</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>repo/data/ab/abcd</Key><UploadId>1</UploadId>
    <Initiator><ID>x</ID></Initiator><StorageClass>STANDARD</StorageClass>
    <Initiated>2026-12-01T20:00:00.000Z</Initiated></Upload>
  <Upload><Key>repo/index/ef</Key><UploadId>2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let r: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.next_upload_id_marker.as_deref(), Some("2"));
        assert_eq!(r.uploads.len(), 2);
        assert_eq!(r.uploads[0].key, "repo/data/ab/abcd");
        assert_eq!(
            r.uploads[0].initiated.as_deref(),
            Some("2026-12-01T20:00:00.000Z")
        );
        assert_eq!(r.uploads[1].initiated, None);
        let empty: ListResult =
            quick_xml::de::from_str("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>")
                .unwrap();
        assert!(empty.uploads.is_empty() && !empty.is_truncated);
    }

    #[test]
    fn addresses_the_bucket_as_opendal_does() {
        for (endpoint, virtual_host, url) in [
            ("http://127.0.0.1:3900/", false, "http://127.0.0.1:3900/b"),
            (
                "https://minio.example:443",
                false,
                "https://minio.example/b",
            ),
            (
                "https://s3.amazonaws.com",
                true,
                "https://b.s3.eu-west-3.amazonaws.com",
            ),
            (
                "https://b.s3.amazonaws.com",
                false,
                "https://s3.eu-west-3.amazonaws.com/b",
            ),
            (
                "https://s3.eu-west-3.amazonaws.com",
                true,
                "https://b.s3.eu-west-3.amazonaws.com",
            ),
        ] {
            assert_eq!(
                bucket_url(endpoint, "b", "eu-west-3", virtual_host),
                url,
                "{endpoint}"
            );
        }
        let u = Uploads::new(
            "http://h",
            "b",
            "",
            "r",
            false,
            credential_chain(None, None),
        );
        assert_eq!(u.root, "");
        let u = Uploads::new(
            "http://h",
            "b",
            "x//y",
            "r",
            false,
            credential_chain(None, None),
        );
        assert_eq!(u.root, "x/y/");
    }

    #[test]
    fn server_dates_parse() {
        assert!(DateTime::parse_from_rfc2822("Tue, 01 Dec 2026 21:16:42 GMT").is_ok());
    }
}
