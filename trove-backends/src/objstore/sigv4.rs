//! AWS Signature Version 4 for header-based request authentication (what S3 and s3api check).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::uri_encode;

type HmacSha256 = Hmac<Sha256>;

/// `x-amz-content-sha256` for a body that is not hashed into the signature.
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Who signs, and for which scope.
pub(crate) struct Signer<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// What is signed. `canonical_uri` is the path exactly as sent (already URI-encoded); `query` holds decoded
/// names and values; `headers` are (lower-case name, value) pairs and must include `host`,
/// `x-amz-content-sha256` and `x-amz-date`.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub canonical_uri: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub payload_hash: &'a str,
    /// `YYYYMMDD'T'HHMMSS'Z'`, the value of `x-amz-date`.
    pub amz_date: &'a str,
}

/// The canonical query string: names and values URI-encoded (`/` too), sorted. Also what is sent.
pub(crate) fn canonical_query(query: &[(String, String)]) -> String {
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

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

impl Signer<'_> {
    /// The `Authorization` header value for `req`.
    pub(crate) fn authorization(&self, req: &Request<'_>) -> String {
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method,
            req.canonical_uri,
            canonical_query(req.query),
            canonical_headers,
            signed_headers,
            req.payload_hash
        );
        let date = &req.amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            req.amz_date,
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
            self.access_key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example keys and requests of AWS's published "Signature Version 4 for Amazon S3" examples
    // (header-based authentication: GET Object, PUT Object, GET Bucket lifecycle, GET Bucket (list objects)).
    const SIGNER: Signer<'static> = Signer {
        access_key: "AKIAIOSFODNN7EXAMPLE",
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        service: "s3",
    };
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const DATE: &str = "20130524T000000Z";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn aws_example_get_object() {
        let auth = SIGNER.authorization(&Request {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &h(&[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", DATE),
            ]),
            payload_hash: EMPTY,
            amz_date: DATE,
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_example_put_object() {
        let body = "Welcome to Amazon S3.";
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let auth = SIGNER.authorization(&Request {
            method: "PUT",
            canonical_uri: &format!("/{}", uri_encode("test$file.text", true)),
            query: &[],
            headers: &h(&[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", DATE),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &hash),
            ]),
            payload_hash: &hash,
            amz_date: DATE,
        });
        assert!(
            auth.ends_with(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,\
                 Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{auth}"
        );
    }

    #[test]
    fn aws_example_get_bucket_lifecycle_and_list_objects() {
        let headers = h(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", DATE),
        ]);
        let sign = |query: &[(String, String)]| {
            SIGNER.authorization(&Request {
                method: "GET",
                canonical_uri: "/",
                query,
                headers: &headers,
                payload_hash: EMPTY,
                amz_date: DATE,
            })
        };
        let lifecycle = sign(&[("lifecycle".to_string(), String::new())]);
        assert!(
            lifecycle.ends_with(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
            ),
            "{lifecycle}"
        );
        // Given out of order: the canonical query sorts.
        let list = sign(&[
            ("prefix".to_string(), "J".to_string()),
            ("max-keys".to_string(), "2".to_string()),
        ]);
        assert!(
            list.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{list}"
        );
    }

    #[test]
    fn canonical_query_encodes_and_sorts() {
        let q = [
            ("uploadId".to_string(), "a/b+c".to_string()),
            ("partNumber".to_string(), "2".to_string()),
        ];
        assert_eq!(canonical_query(&q), "partNumber=2&uploadId=a%2Fb%2Bc");
    }
}
