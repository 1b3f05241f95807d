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
        let endpoint = endpoint.trim_end_matches('/');
        let bucket_url = if virtual_host {
            match endpoint.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
                None => format!("https://{bucket}.{endpoint}"),
            }
        } else {
            format!("{endpoint}/{}", utf8_percent_encode(bucket, ENCODE))
        };
        Uploads {
            signer: Signer::new(ctx, credentials, RequestSigner::new("s3", region)),
            transport: HttpTransporter::default(),
            bucket_url,
            root: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
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
                .send(Method::GET, format!("{}/?{query}", self.bucket_url))
                .await?;
            // Ages are counted on the server's clock, which also wrote the
            // start times: a client's clock set wrong cannot make a live
            // upload look old.
            let now = resp
                .headers()
                .get(http::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
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
                    .and_then(|t| now.signed_duration_since(t).to_std().ok());
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

    /// Aborts one upload: the server drops its parts.
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
        self.send(Method::DELETE, url).await.map(|_| ())
    }

    /// Signs and sends a request without a body; an answer other than
    /// success becomes an error of the kind opendal would give it.
    async fn send(&self, method: Method, url: String) -> opendal::Result<http::Response<Buffer>> {
        let unexpected = |what: &str, e: &dyn std::fmt::Display| {
            opendal::Error::new(ErrorKind::Unexpected, format!("{what}: {e}"))
        };
        let req = Request::builder()
            .method(method)
            .uri(&url)
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
        let code = quick_xml::de::from_str::<ErrorXml>(&body)
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or(body);
        let kind = match status {
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
            StatusCode::NOT_IMPLEMENTED => ErrorKind::Unsupported,
            _ => ErrorKind::Unexpected,
        };
        let e = opendal::Error::new(kind, format!("{status}: {code}"));
        Err(
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                e.set_temporary()
            } else {
                e
            },
        )
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
    fn addresses_the_bucket_by_path_or_by_name() {
        let chain = || credential_chain(None, None);
        let u = Uploads::new(
            "http://127.0.0.1:3900/",
            "b",
            "",
            "us-east-1",
            false,
            chain(),
        );
        assert_eq!(u.bucket_url, "http://127.0.0.1:3900/b");
        assert_eq!(u.root, "");
        let u = Uploads::new(
            "https://s3.amazonaws.com",
            "b",
            "x/y",
            "us-east-1",
            true,
            chain(),
        );
        assert_eq!(u.bucket_url, "https://b.s3.amazonaws.com");
        assert_eq!(u.root, "x/y/");
    }

    #[test]
    fn server_dates_parse() {
        assert!(DateTime::parse_from_rfc2822("Tue, 01 Dec 2026 21:16:42 GMT").is_ok());
    }
}
