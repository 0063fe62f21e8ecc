//! The parts of an AWS Signature Version 4 request the decision reads:
//! the `Authorization` header's credential scope and signed headers, and
//! the query parameters that make a URL presigned (AWS General Reference,
//! "Signature Version 4 signing process"; Amazon S3 API Reference,
//! "Authenticating Requests: Using the Authorization Header" and "Using
//! Query Parameters").

/// The algorithm SigV4 names itself by, in `Authorization` and `X-Amz-Algorithm`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The query parameters of a presigned URL (any one makes it one). Names
/// are matched without regard to case, as servers vary.
const PRESIGNED_PARAMS: [&str; 3] = ["x-amz-signature", "x-amz-credential", "x-amz-algorithm"];

/// A SigV4 `Authorization` value:
/// `AWS4-HMAC-SHA256 Credential=AKID/20261130/eu-west-1/s3/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigV4Authorization<'a> {
    /// The access key id the request is signed with.
    pub access_key_id: &'a str,
    /// The scope's date, `YYYYMMDD`.
    pub date: &'a str,
    /// The scope's region.
    pub region: &'a str,
    /// The scope's service.
    pub service: &'a str,
    /// The signed header names, lowercase, in the order given.
    pub signed_headers: Vec<&'a str>,
}

impl<'a> SigV4Authorization<'a> {
    /// Parses `value`; None when it is not a SigV4 `Authorization` value
    /// with exactly one each of `Credential`, `SignedHeaders` and
    /// `Signature`, and a five-part credential ending in `aws4_request`.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let rest = value.strip_prefix(ALGORITHM)?;
        if !rest.starts_with(' ') {
            return None;
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, v) = part.trim().split_once('=')?;
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(v).is_some() {
                return None;
            }
        }
        let (credential, signed, _) = (credential?, signed?, signature?);
        let mut scope = credential.split('/');
        let parts = [scope.next()?, scope.next()?, scope.next()?, scope.next()?, scope.next()?];
        if scope.next().is_some() || parts[4] != "aws4_request" {
            return None;
        }
        let signed_headers: Vec<&str> = signed.split(';').collect();
        if signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase())) {
            return None;
        }
        Some(SigV4Authorization {
            access_key_id: parts[0],
            date: parts[1],
            region: parts[2],
            service: parts[3],
            signed_headers,
        })
    }
}

/// Whether request target `target` (path and query) is a presigned URL:
/// its query names `X-Amz-Signature`, `X-Amz-Credential` or
/// `X-Amz-Algorithm` (written plainly or percent-encoded).
pub fn is_presigned(target: &str) -> bool {
    let url = target.split('#').next().unwrap_or(target);
    let Some((_, query)) = url.split_once('?') else { return false };
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or(pair);
        let name: Vec<u8> = percent_encoding::percent_decode(name.as_bytes()).collect();
        PRESIGNED_PARAMS.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(&name))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{SigV4Authorization, is_presigned};

    #[test]
    fn an_authorization_value_gives_its_scope_and_signed_headers() {
        let v = b"AWS4-HMAC-SHA256 Credential=AIRLOCK_AWS/20261130/eu-west-1/s3/aws4_request, \
                  SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abc";
        let a = SigV4Authorization::parse(v).unwrap();
        assert_eq!((a.access_key_id, a.date, a.region, a.service), ("AIRLOCK_AWS", "20261130", "eu-west-1", "s3"));
        assert_eq!(a.signed_headers, ["host", "x-amz-content-sha256", "x-amz-date"]);
        // Without the spaces after the commas, as some SDKs write it.
        let tight = b"AWS4-HMAC-SHA256 Credential=K/20261130/us-east-1/sts/aws4_request,SignedHeaders=host,Signature=0";
        assert_eq!(SigV4Authorization::parse(tight).unwrap().service, "sts");
        for bad in [
            &b"Bearer AIRLOCK_AWS"[..],
            b"AWS4-HMAC-SHA256Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/other, SignedHeaders=host, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/x/aws4_request, SignedHeaders=host, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, Credential=J/d/r/s/aws4_request, \
              SignedHeaders=host, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=Host, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host;;x, Signature=0",
            b"AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature=0, Extra=1",
        ] {
            assert_eq!(SigV4Authorization::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_presigned_query_is_recognised_however_it_is_spelled() {
        assert!(is_presigned("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F1"));
        assert!(is_presigned("/b/k?x=1&x-amz-signature=00"));
        assert!(is_presigned("/b/k?X%2DAmz%2DCredential=K"));
        assert!(!is_presigned("/b/k?prefix=X-Amz-Signature"));
        assert!(!is_presigned("/b/X-Amz-Signature"));
        assert!(!is_presigned("/b/k#?X-Amz-Signature=1"));
    }
}
